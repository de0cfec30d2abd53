# The study as a DAG. Rules call the `haet` CLI and hold no logic of their own.
#   snakemake --cores all                                      # the embedded default study
#   snakemake --cores all --configfile workflow/config/paper.yaml
import json
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# Anchored on the Snakefile, so `snakemake -d OTHER_DIR` finds it too; --configfile replaces it.
configfile: Path(workflow.basedir) / "workflow/config/default.yaml"


STUDY = config["study"]
RUNS = list(range(config["subsets"]["runs"]))
SUBSET_CONFIG = json.dumps({"data": config["data"], "subsets": config["subsets"]}, sort_keys=True)


include: "workflow/rules/subsets.smk"


rule all:
    input:
        expand("results/{study}/subsets/run{run}.json", study=STUDY, run=RUNS),
