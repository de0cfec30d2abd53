rule hpo:
    input:
        manifests=HPO_MANIFESTS,
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
    output:
        best=f"{OUT}/hpo/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        history=f"{OUT}/hpo/history.csv",
        summary=f"{OUT}/hpo/summary.json",
        **search_files(f"{OUT}/hpo"),
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["hpo"]),
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
        config=as_json(
            config["hpo"]["train"] | {"search": config["hpo"]["search"] | {"lr_scaling": config["hpo"]["lr_scaling"]}}
        ),
        manifests=lambda wildcards, input: repeated("--manifest", input.manifests),
        out_dir=output_folder,
    threads: training_threads(*STAGE_LAYERS["hpo"]) * search_trainings("hpo")
    resources:
        gpu=search_gpus("hpo", STAGE_LAYERS["hpo"]),
    log:
        f"{OUT}/logs/hpo/search.log",
    benchmark:
        f"{OUT}/benchmarks/hpo/search.tsv"
    shell:
        "{params.haet} search hpo --quiet --threads {params.torch_threads} --config {input.nas:q} "
        "--config {params.augment:q} --config {params.config:q} --augment {params.carry:q} {params.manifests} "
        "--out-dir {params.out_dir:q} --new-log-if-changed > {log:q} 2>&1"


rule hpo_run:
    input:
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        f"{OUT}/hpo/runs/run{{run}}.json",
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["hpo"]),
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
    threads: training_threads(*STAGE_LAYERS["hpo"])
    resources:
        gpu=gpus_per_training(*STAGE_LAYERS["hpo"]),
    log:
        f"{OUT}/logs/hpo/run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/hpo/run{{run}}.tsv"
    shell:
        "{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {input.nas:q} --config {params.augment:q} --config {input.tuned:q} --augment {params.carry:q} "
        "--out {output:q} > {log:q} 2>&1"
