rule augment_run:
    input:
        best=f"{OUT}/nas/{{model}}/best.yaml",
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        AUGMENT_RUN,
    params:
        haet=HAET,
        config=as_json(config["augment"]["train"]),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/augment/{{model}}-{{recipe}}-run{{run}}.log",
    shell:
        "{params.haet} train --quiet --manifest {input.manifest:q} --config {input.best:q} --config {params.config:q} "
        "--augment {wildcards.recipe:q} --out {output:q} > {log:q} 2>&1"


checkpoint rank_augment:
    input:
        records_of(carry_groups),
    output:
        f"{OUT}/augment/ranking.json",
    params:
        haet=HAET,
        groups=lambda wildcards: group_args(carry_groups()),
    log:
        f"{OUT}/logs/augment/rank.log",
    shell:
        "{params.haet} report rank {params.groups} --out {output:q} > {log:q} 2>&1"


rule table2a:
    input:
        records=records_of(table2a_groups),
        searches=lambda wildcards: [f"{OUT}/nas/{model}/summary.json" for model in nas_models()],
    output:
        multiext(f"{OUT}/tables/table2a", ".json", ".csv", ".md"),
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        groups=lambda wildcards: group_args(table2a_groups()),
        searches=lambda wildcards, input: repeated("--search-summary", input.searches),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/table2a.log",
    shell:
        "{params.haet} report table table2a {params.groups} {params.searches} "
        "--out-prefix {params.prefix:q} {params.mixed_images} > {log:q} 2>&1"


rule table2:
    input:
        records_of(table2_groups),
    output:
        multiext(f"{OUT}/tables/table2", ".json", ".csv", ".md"),
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        groups=lambda wildcards: group_args(table2_groups()),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/table2.log",
    shell:
        "{params.haet} report table table2 {params.groups} --out-prefix {params.prefix:q} {params.mixed_images} > {log:q} 2>&1"
