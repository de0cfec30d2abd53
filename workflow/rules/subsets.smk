rule subset:
    output:
        "results/{study}/subsets/run{run}.json",
    params:
        config=SUBSET_CONFIG,
    log:
        "results/{study}/logs/subset-run{run}.log",
    shell:
        "haet data subset --config-json {params.config:q} --run {wildcards.run} --out {output} > {log} 2>&1"
