rule final_run:
    input:
        nas=lambda wildcards: f"{OUT}/nas/{hpo_model()}/best.yaml",
        tuned=f"{OUT}/hpo/tuned.yaml",
        manifest=f"{OUT}/final/subsets/run{{run}}.json",
    output:
        f"{OUT}/final/runs/run{{run}}.json",
    params:
        haet=HAET,
        carry=CARRY,
        augment=as_json(config["augment"]["train"]),
        final=as_json(config["final"]["train"]),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/final/run{{run}}.log",
    shell:
        "{params.haet} train --quiet --manifest {input.manifest:q} --config {input.nas:q} --config {params.augment:q} "
        "--config {input.tuned:q} --config {params.final:q} --augment {params.carry:q} --out {output:q} > {log:q} 2>&1"


rule table4:
    input:
        records_of(table4_groups),
    output:
        multiext(f"{OUT}/tables/table4", ".json", ".csv", ".md"),
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        groups=lambda wildcards: group_args(table4_groups()),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/table4.log",
    shell:
        "{params.haet} report table table4 {params.groups} --out-prefix {params.prefix:q} {params.mixed_images} > {log:q} 2>&1"
