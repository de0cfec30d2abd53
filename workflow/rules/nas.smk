rule nas:
    input:
        manifests=NAS_MANIFESTS,
        baseline=lambda wildcards: runs_of(SCREENING_RUN, RUNS, model=wildcards.model),
    output:
        best=f"{OUT}/nas/{{model}}/best.yaml",
        tuned=f"{OUT}/nas/{{model}}/tuned.yaml",
        history=f"{OUT}/nas/{{model}}/history.csv",
        summary=f"{OUT}/nas/{{model}}/summary.json",
        **search_files(f"{OUT}/nas/{{model}}"),
    params:
        haet=HAET,
        torch_threads=torch_threads(*STAGE_LAYERS["screening"]),
        config=lambda wildcards: as_json(config["screening"]["train"] | {"search": nas_search(wildcards.model)}),
        manifests=lambda wildcards, input: repeated("--manifest", input.manifests),
        out_dir=output_folder,
    threads: lambda wildcards: training_threads(*STAGE_LAYERS["screening"]) * search_trainings("nas", wildcards.model)
    resources:
        gpu=lambda wildcards: search_gpus("nas", STAGE_LAYERS["screening"], wildcards.model),
    log:
        f"{OUT}/logs/nas/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/nas/{{model}}.tsv"
    shell:
        "{params.haet} search nas --quiet --threads {params.torch_threads} --config {params.config:q} "
        "--model {wildcards.model:q} {params.manifests} "
        "--out-dir {params.out_dir:q} --new-log-if-changed --baseline-records {input.baseline:q} > {log:q} 2>&1"
