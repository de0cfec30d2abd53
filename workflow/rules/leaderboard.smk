# The challenge's leaderboard: every entry of leaderboard.submissions trained leaderboard.runs times on the final
# evaluation's protocol (its data and subsets unless the section gives its own), each run in processes of its own
# under a hard deadline (haet challenge run), scored by the harness on test images the entry never saw. The
# leaderboard table and figure (report.smk's table and figure rules) rank the entries. Without the section in the
# config no rule here is asked for (the `entry` wildcard then matches nothing).


rule leaderboard_subset:
    output:
        f"{OUT}/leaderboard/subsets/run{{run}}.json",
    params:
        haet=HAET,
        config=lambda wildcards: as_json(leaderboard_subset_config()),
    log:
        f"{OUT}/logs/leaderboard/subset-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/leaderboard/subset-run{{run}}.tsv"
    shell:
        "{params.haet} data subset --config {params.config:q} --run {wildcards.run:q} --out {output:q} > {log:q} 2>&1"


# One run of one entry, here (`haet`, not the image's): natively it puts the submission's processes in a sandbox
# (bubblewrap's namespaces and a cgroup), with engine docker in containers of the image, so that they see their
# training data alone. A crash, a timeout, no model, a limit met or a wrong predict is the run's outcome, in its
# record: the study goes on. A submission whose train or predict is missing stops this rule with one line.
rule leaderboard_run:
    input:
        manifest=f"{OUT}/leaderboard/subsets/run{{run}}.json",
    output:
        LEADERBOARD_RUN,
    params:
        run_args=lambda wildcards: leaderboard_run_args(),
        submission=lambda wildcards: LEADERBOARD["submissions"][wildcards.entry],
        budget_s=lambda wildcards: LEADERBOARD["budget_s"],
        grace_s=lambda wildcards: LEADERBOARD.get("grace_s", 5),
        device=lambda wildcards: LEADERBOARD.get("device", "auto"),
        threads=LEADERBOARD_THREADS,
    threads: LEADERBOARD_THREADS
    resources:
        gpu=lambda wildcards: leaderboard_gpus(),
    log:
        f"{OUT}/logs/leaderboard/{{entry}}-run{{run}}.log",
    benchmark:
        f"{OUT}/benchmarks/leaderboard/{{entry}}-run{{run}}.tsv"
    shell:
        "haet challenge run {params.run_args} --submission {params.submission:q} --name {wildcards.entry:q} "
        "--manifest {input.manifest:q} --out {output:q} --budget-s {params.budget_s} --grace-s {params.grace_s} "
        "--device {params.device:q} --threads {params.threads} > {log:q} 2>&1"
