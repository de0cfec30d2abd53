# What people read: the five tables, the figures and runs.csv, all drawn from run records and search logs.
# `snakemake --report results/<study>/report.html` (make report) gathers the report() outputs into one page.


rule table:
    input:
        unpack(inputs_of(TABLE_GROUPS, TABLE_SEARCHES, "table")),
    output:
        json=f"{OUT}/tables/{{table}}.json",
        csv=report(
            f"{OUT}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{table}"},
        ),
        md=f"{OUT}/tables/{{table}}.md",
    params:
        haet=HAET,
        mixed_images=MIXED_IMAGES,
        sources=report_args(TABLE_GROUPS, "table"),
        prefix=table_prefix,
    log:
        f"{OUT}/logs/tables/{{table}}.log",
    benchmark:
        f"{OUT}/benchmarks/tables/{{table}}.tsv"
    shell:
        "{params.haet} report table {wildcards.table} {params.sources} --out-prefix {params.prefix:q} "
        "{params.mixed_images} > {log:q} 2>&1"


rule figure:
    input:
        unpack(inputs_of(FIGURE_GROUPS, FIGURE_SEARCHES, "figure")),
    output:
        report(
            f"{OUT}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
    params:
        haet=HAET,
        sources=report_args(FIGURE_GROUPS, "figure"),
    log:
        f"{OUT}/logs/figures/{{figure}}.log",
    benchmark:
        f"{OUT}/benchmarks/figures/{{figure}}.tsv"
    shell:
        "{params.haet} report figure {wildcards.figure} {params.sources} --out {output:q} > {log:q} 2>&1"


rule runs_table:
    input:
        records=lambda wildcards: [path for paths in runs_groups().values() for path in paths],
        searches=lambda wildcards: nas_summaries() + hpo_summaries(),
        search_logs=lambda wildcards: search_logs(nas_summaries() + hpo_summaries()),
    output:
        report(f"{OUT}/runs.csv", caption="../report/runs.rst", category="Runs", labels={"file": "runs.csv"}),
    params:
        haet=HAET,
        groups=lambda wildcards, input: group_args(runs_groups(), input.records),
        searches=lambda wildcards, input: repeated("--search-summary", input.searches),
    log:
        f"{OUT}/logs/runs.log",
    benchmark:
        f"{OUT}/benchmarks/runs.tsv"
    shell:
        "{params.haet} report runs {params.groups} {params.searches} --out {output:q} > {log:q} 2>&1"
