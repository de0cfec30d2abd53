rule final_run:
    input:
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        manifest=f"{OUT}/final/subsets/run{{run}}.json",
    output:
        f"{OUT}/final/runs/run{{run}}.json",
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["final"]),
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
        final=as_json(config["final"]["train"]),
    threads: training_threads(*STAGE_LAYERS["final"])
    resources:
        gpu=gpus_per_training(*STAGE_LAYERS["final"]),
    log:
        f"{OUT}/logs/final/run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/final/run{{run}}.tsv"
    shell:
        "{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {input.nas:q} --config {params.augment:q} --config {input.tuned:q} --config {params.final:q} "
        "--augment {params.carry:q} --out {output:q} > {log:q} 2>&1"
