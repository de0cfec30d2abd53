rule subset:
    output:
        f"{OUT}/subsets/run{{run}}.json",
    params:
        haet=HAET,
        config=as_json({"data": config["data"], "subsets": config["subsets"]}),
    log:
        f"{OUT}/logs/subsets/run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/subsets/run{{run}}.tsv"
    shell:
        "{params.haet} data subset --config {params.config:q} --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1"


rule final_subset:
    output:
        f"{OUT}/final/subsets/run{{run}}.json",
    params:
        haet=HAET,
        config=as_json({"data": config["final"]["data"], "subsets": config["final"]["subsets"]}),
    log:
        f"{OUT}/logs/final/subset-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/final/subset-run{{run}}.tsv"
    shell:
        "{params.haet} data subset --config {params.config:q} --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1"
