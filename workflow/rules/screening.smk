rule screen:
    input:
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        SCREENING_RUN,
    params:
        haet=HAET,
        config=as_json(config["screening"]["train"]),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/screening/{{model}}-run{{run}}.log",
    shell:
        "{params.haet} train --quiet --manifest {input.manifest:q} --config {params.config:q} --model {wildcards.model:q} "
        "--out {output:q} > {log:q} 2>&1"


checkpoint rank_screening:
    input:
        [path for paths in SCREENING_GROUPS.values() for path in paths],
    output:
        f"{OUT}/screening/ranking.json",
    params:
        haet=HAET,
        groups=group_args(SCREENING_GROUPS),
    log:
        f"{OUT}/logs/screening/rank.log",
    shell:
        "{params.haet} report rank {params.groups} --out {output:q} > {log:q} 2>&1"


rule table1:
    input:
        [path for paths in SCREENING_GROUPS.values() for path in paths],
    output:
        multiext(f"{OUT}/tables/table1", ".json", ".csv", ".md"),
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        groups=group_args(SCREENING_GROUPS),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/table1.log",
    shell:
        "{params.haet} report table table1 {params.groups} --out-prefix {params.prefix:q} {params.mixed_images} > {log:q} 2>&1"
