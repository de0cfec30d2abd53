# The fidelity study: the paper's final submission (and Table 2's NAS models) on the paper's subsets, in named
# arms that each change one protocol detail from a reference arm, `fidelity.runs` runs each on the same subsets.
# The fidelity table and its forest plot (the table and figure rules of report.smk) put the paper's number
# beside each arm. Only the study's `fidelity` target:
#   snakemake --cores all --configfile workflow/config/paper.yaml workflow/config/fidelity.yaml -- fidelity


rule fidelity:
    input:
        f"{OUT}/tables/fidelity.md",
        f"{OUT}/figures/fidelity.png",
        # its run records as targets of their own, so that one deleted is made again (see rule all)
        [path for paths in fidelity_groups().values() for path in paths],


rule fidelity_subset:
    output:
        f"{OUT}/fidelity/subsets/{{source}}/run{{run}}.json",
    params:
        haet=HAET,
        config=lambda wildcards: as_json(fidelity_subset_config(wildcards.source)),
    log:
        f"{OUT}/logs/fidelity/subset-{{source}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/fidelity/subset-{{source}}-run{{run}}.tsv"
    shell:
        "{params.haet} data subset --config {params.config:q} --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1"


# A training that shares its GPU says so in its record (HAET_GPU_SHARED_BY); the `gpu_shared` resource lets
# fidelity.trainings_per_gpu of them run at once (the Snakefile registers it), where unshared ones hold `gpu`.
rule fidelity_run:
    input:
        manifest=fidelity_manifest,
    output:
        FIDELITY_RUN,
    params:
        haet=HAET,
        sharing=lambda wildcards: (
            f"HAET_GPU_SHARED_BY={FIDELITY['trainings_per_gpu']} " if fidelity_shares_gpu(wildcards.arm) else ""
        ),
        torch_threads=lambda wildcards: torch_threads(*fidelity_layers(wildcards.arm)),
        base=as_json(FIDELITY["train"]),
        arm=lambda wildcards: as_json(FIDELITY["arms"][wildcards.arm]["train"]),
    threads: lambda wildcards: training_threads(*fidelity_layers(wildcards.arm))
    resources:
        gpu=lambda wildcards: fidelity_gpus(wildcards.arm),
        gpu_shared=lambda wildcards: int(fidelity_shares_gpu(wildcards.arm)),
    log:
        f"{OUT}/logs/fidelity/{{arm}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/fidelity/{{arm}}-run{{run}}.tsv"
    shell:
        "{params.sharing}{params.haet} train --quiet --threads {params.torch_threads} --manifest {input.manifest:q} "
        "--config {params.base:q} --config {params.arm:q} --out {output:q} > {log:q} 2>&1"
