# The study as a DAG. Rules call the `haet` CLI and hold no logic of their own.
#   snakemake --cores all                                          # the embedded default study
#   snakemake --cores all --configfile workflow/config/paper.yaml  # the paper's protocol
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from haet.config import load_config

min_version("9.0")


# The default study, anchored on the Snakefile so `snakemake -d OTHER_DIR` finds it too. A --configfile replaces
# it (Snakemake would otherwise deep-merge the two: the paper's `model: {}` would keep the default's width 0.25);
# --config KEY=VALUE still overrides single keys of whichever study is loaded.
if not workflow.config_settings.configfiles:

    configfile: Path(workflow.basedir) / "workflow/config/default.yaml"


# A key named twice in a config file: Snakemake's YAML keeps the last one silently; refused here, naming the line.
for configfile_path in workflow.config_settings.configfiles:
    load_config(configfile_path)
validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# Where rules run (the `container` section): natively (engine none), in the image through the Docker Engine API
# (docker: every command is prefixed with `haet container run`), in Apptainer when Snakemake runs with
# --sdm apptainer (apptainer: a digest-pinned docker://...@sha256:... or a .sif, whose digest the records name), or
# as pods of the image (kubernetes: profiles/kubernetes, with --container-image the same digest-pinned image).
CONTAINER = {"engine": "none", "image": None, "socket": None, "gpus": "auto", "allow_mixed_images": False} | config.get(
    "container", {}
)
in_apptainer = "apptainer" in {str(method).lower() for method in workflow.deployment_settings.deployment_method}
if in_apptainer != (CONTAINER["engine"] == "apptainer"):
    raise ValueError(
        f"container.engine is {CONTAINER['engine']} but Snakemake runs "
        + ("with" if in_apptainer else "without")
        + " --sdm apptainer: use the two together (container.engine: apptainer with an image), or neither"
    )
if CONTAINER["engine"] == "kubernetes" and "@sha256:" not in CONTAINER["image"]:
    raise ValueError(
        f"container.image {CONTAINER['image']} is not pinned by digest: Kubernetes pulls a tag anew for each pod, "
        "so give REGISTRY/haet@sha256:DIGEST (the digest `docker push` printed)"
    )
if in_apptainer or CONTAINER["engine"] == "kubernetes":  # the run records name the pinned digest from these
    os.environ.update(
        HAET_CONTAINER_IMAGE=CONTAINER["image"], HAET_CONTAINER_IMAGE_DIGEST=CONTAINER["image"].partition("@")[2]
    )


# Before the first job (common.smk): container.engine kubernetes with the Kubernetes executor, and the same image;
# every model the study names is one of haet's (torch is imported here, not while a dry run plans).
onstart:
    check_kubernetes_run(workflow, CONTAINER)
    check_models(config)
    lease_jobs_to_this_snakemake(workflow)


if CONTAINER["engine"] == "kubernetes":  # Apptainer passes the host's environment in; the Kubernetes executor
    # passes only declared variables, to every pod (as a secret)

    envvars:
        "HAET_CONTAINER_IMAGE",
        "HAET_CONTAINER_IMAGE_DIGEST",


# The image the rules are made for. Only --sdm apptainer acts on it; engine docker runs its image through
# `haet container run`, and engine none runs natively (the guard above keeps the two from being mixed).
container: CONTAINER["image"] if in_apptainer else f"docker://{CONTAINER['image'] or 'localhost/haet:0.1.0'}"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    run=r"\d+",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    recipe="|".join(config["augment"]["recipes"]),
    table="table1|table2a|table2|table3|table4|fidelity|leaderboard",
    figure="screening|nas|hpo|curves|fidelity|leaderboard",
    # the leaderboard's entries by name (a folder of leaderboard/ each; `subsets` is the subsets' own)
    entry="|".join(re.escape(name) for name in (config.get("leaderboard") or {}).get("submissions", {})) or "(?!)",


include: "workflow/rules/common.smk"
include: "workflow/rules/subsets.smk"
include: "workflow/rules/screening.smk"
include: "workflow/rules/nas.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/hpo.smk"
include: "workflow/rules/final.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/leaderboard.smk"


if FIDELITY:

    include: "workflow/rules/fidelity.smk"

    localrules:
        fidelity,
        fidelity_subset,

    # fidelity.trainings_per_gpu epoch-budget trainings at once on the GPU (unless --resources sets it)
    if "gpu_shared" not in workflow.global_resources:
        workflow.register_resource("gpu_shared", FIDELITY["trainings_per_gpu"])


# Before the DAG is built (common.smk): the tools a storage provider needs where Snakemake runs.
check_storage_tools(workflow)


# Rankings, tables, figures and subsets are light: on a cluster they run where Snakemake runs, not as jobs.
localrules:
    all,
    subset,
    final_subset,
    rank_screening,
    rank_augment,
    table,
    figure,
    runs_table,
    leaderboard_subset,


# `make reproduce` audits the tables after this (`haet report audit`); the audit stays out of the DAG so that
# rebuilding one table reruns only that table's rule.
rule all:
    input:
        expand(f"{OUT}/tables/{{table}}.md", table=["table1", "table2a", "table2", "table3", "table4"]),
        expand(f"{OUT}/figures/{{figure}}.png", figure=["screening", "nas", "hpo", "curves"]),
        f"{OUT}/runs.csv",
        # every run record a table or runs.csv names, as a target of its own: Snakemake does not remake a deleted
        # intermediate file while what it fed is present, so a deleted record would stay missing (audit failing)
        lambda wildcards: [path for paths in runs_groups().values() for path in paths],
        expand(f"{OUT}/{{kind}}/fidelity.{{suffix}}", zip, kind=["tables", "figures"], suffix=["md", "png"])
        if FIDELITY
        else [],
        expand(f"{OUT}/{{kind}}/leaderboard.{{suffix}}", zip, kind=["tables", "figures"], suffix=["md", "png"])
        if LEADERBOARD
        else [],
        lambda wildcards: [path for paths in leaderboard_groups().values() for path in paths] if LEADERBOARD else [],
