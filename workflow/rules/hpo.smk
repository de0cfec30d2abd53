rule hpo:
    input:
        manifests=HPO_MANIFESTS,
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
    output:
        best=f"{OUT}/hpo/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        history=f"{OUT}/hpo/history.csv",
        summary=f"{OUT}/hpo/summary.json",
    params:
        haet=HAET,
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
        config=as_json(
            config["hpo"]["train"] | {"search": config["hpo"]["search"] | {"lr_scaling": config["hpo"]["lr_scaling"]}}
        ),
        manifests=repeated("--manifest", HPO_MANIFESTS),
        out_dir=output_folder,
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/hpo/search.log",
    shell:
        "{params.haet} search hpo --quiet --config {input.nas:q} --config {params.augment:q} --config {params.config:q} "
        "--augment {params.carry:q} {params.manifests} --out-dir {params.out_dir:q} --new-log-if-changed > {log:q} 2>&1"


rule hpo_run:
    input:
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        manifest=f"{OUT}/subsets/run{{run}}.json",
    output:
        f"{OUT}/hpo/runs/run{{run}}.json",
    params:
        haet=HAET,
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/hpo/run{{run}}.log",
    shell:
        "{params.haet} train --quiet --manifest {input.manifest:q} --config {input.nas:q} --config {params.augment:q} "
        "--config {input.tuned:q} --augment {params.carry:q} --out {output:q} > {log:q} 2>&1"


rule table3:
    input:
        records=records_of(table3_groups),
        search=f"{OUT}/hpo/summary.json",
    output:
        multiext(f"{OUT}/tables/table3", ".json", ".csv", ".md"),
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        groups=lambda wildcards: group_args(table3_groups()),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/table3.log",
    shell:
        "{params.haet} report table table3 {params.groups} --search-summary {input.search:q} "
        "--out-prefix {params.prefix:q} {params.mixed_images} > {log:q} 2>&1"
