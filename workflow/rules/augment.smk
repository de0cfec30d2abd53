rule augment_run:
    input:
        best=f"{OUT}/nas/{{model}}/best.yaml",
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        AUGMENT_RUN,
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["augment"]),
        config=as_json(config["augment"]["train"]),
    threads: training_threads(*STAGE_LAYERS["augment"])
    resources:
        gpu=gpus_per_training(*STAGE_LAYERS["augment"]),
    log:
        f"{OUT}/logs/augment/{{model}}-{{recipe}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/augment/{{model}}-{{recipe}}-run{{run}}.tsv"
    shell:
        "{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {input.best:q} --config {params.config:q} --augment {wildcards.recipe:q} "
        "--out {output:q} > {log:q} 2>&1"


checkpoint rank_augment:
    input:
        records_of(carry_groups),
    output:
        f"{OUT}/augment/ranking.json",
    params:
        haet=HAET,
        groups=lambda wildcards, input: group_args(carry_groups(), input),
    log:
        f"{OUT}/logs/augment/rank.log",
    benchmark:
        f"{OUT}/benchmarks/augment/rank.tsv"
    shell:
        "{params.haet} report rank {params.groups} --out {output:q} > {log:q} 2>&1"
