rule screen:
    input:
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        SCREENING_RUN,
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["screening"]),
        config=as_json(config["screening"]["train"]),
    threads: training_threads(*STAGE_LAYERS["screening"])
    resources:
        gpu=gpus_per_training(*STAGE_LAYERS["screening"]),
    log:
        f"{OUT}/logs/screening/{{model}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/screening/{{model}}-run{{run}}.tsv"
    shell:
        "{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {params.config:q} --model {wildcards.model:q} "
        "--out {output:q} > {log:q} 2>&1"


checkpoint rank_screening:
    input:
        [path for paths in SCREENING_GROUPS.values() for path in paths],
    output:
        f"{OUT}/screening/ranking.json",
    params:
        haet=HAET,
        groups=lambda wildcards, input: group_args(SCREENING_GROUPS, input),
    log:
        f"{OUT}/logs/screening/rank.log",
    benchmark:
        f"{OUT}/benchmarks/screening/rank.tsv"
    shell:
        "{params.haet} report rank {params.groups} --out {output:q} > {log:q} 2>&1"
