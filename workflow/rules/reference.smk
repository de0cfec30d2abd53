# The paper's exact final submission (SENet-18 at width 0.67 with `haet train`'s default recipe), trained
# on the same subsets and under the same budget and runtime as the tuned recipe: the reference rows of Tables 3
# and 4, so the paper's recipe and the harness's own search stand side by side.
rule reference_run:
    input:
        manifest=reference_manifest,
    output:
        f"{OUT}/reference/{{stage}}/run{{run}}.json",
    wildcard_constraints:
        stage="hpo|final",
        run=r"\d+",
    params:
        haet=HAET,
        torch_threads=lambda wildcards: torch_threads(reference_config(wildcards.stage)),
        config=lambda wildcards: as_json(reference_config(wildcards.stage)),
    threads: lambda wildcards: training_threads(reference_config(wildcards.stage))
    resources:
        gpu=lambda wildcards: gpus_per_training(reference_config(wildcards.stage)),
    log:
        f"{OUT}/logs/reference/{{stage}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/reference/{{stage}}-run{{run}}.tsv"
    shell:
        "{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {params.config:q} --out {output:q} > {log:q} 2>&1"
