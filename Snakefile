# The study as a DAG. Rules call the `haet` CLI and hold no logic of their own.
#   snakemake --cores all                                          # the embedded default study
#   snakemake --cores all --configfile workflow/config/paper.yaml  # the paper's protocol
import json
import shlex
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The default study, anchored on the Snakefile so `snakemake -d OTHER_DIR` finds it too. A --configfile replaces
# it (Snakemake would otherwise deep-merge the two: the paper's `model: {}` would keep the default's width 0.25);
# --config KEY=VALUE still overrides single keys of whichever study is loaded.
if not workflow.config_settings.configfiles:

    configfile: Path(workflow.basedir) / "workflow/config/default.yaml"


validate(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")

# The image rules run in with `--sdm apptainer` (ignored otherwise, so the same workflow runs natively).
# Default: containers/haet.sif, built by `make container`; set a digest-pinned docker://...@sha256:... in the
# config so an image change is visible to Snakemake's rerun triggers.
container: config.get("container") or "containers/haet.sif"


include: "workflow/rules/common.smk"
include: "workflow/rules/subsets.smk"
include: "workflow/rules/screening.smk"
include: "workflow/rules/nas.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/hpo.smk"
include: "workflow/rules/final.smk"


# `make reproduce` audits the tables after this (`haet report audit`); the audit stays out of the DAG so that
# rebuilding one table reruns only that table's rule.
rule all:
    input:
        expand(f"{OUT}/tables/{{table}}.md", table=["table1", "table2a", "table2", "table3", "table4"]),
