# Names and small helpers the rule files share; no rules here.
STUDY = config["study"]
OUT = f"results/{STUDY}"
RUNS = list(range(config["subsets"]["runs"]))
FINAL_RUNS = list(range(config["final"]["subsets"]["runs"]))
MODELS = config["screening"]["models"]


def check_kubernetes_run(workflow, container):
    """Before the first job: container.engine kubernetes goes with the Kubernetes executor and no other, and the
    pods run container.image (they run --container-image; the records name container.image)."""
    executor = workflow.executor_plugin.cli_prefix
    if (executor == "kubernetes") != (container["engine"] == "kubernetes"):
        raise ValueError(
            f"container.engine is {container['engine']} but Snakemake runs with --executor {executor}: use "
            "container.engine kubernetes with the Kubernetes profile (--workflow-profile profiles/kubernetes), "
            "or neither"
        )
    pods = workflow.remote_execution_settings.container_image
    if executor == "kubernetes" and pods != container["image"]:
        raise ValueError(
            f"the pods would run --container-image {pods} but container.image is {container['image']}: "
            "give both the same image"
        )


def check_storage_tools(workflow):
    """While Snakemake parses, before it builds the DAG: the fs storage provider (the Kubernetes profile's) copies
    every file in and out with rsync, and without it the first input a rule takes from the storage is a traceback."""
    if workflow.storage_settings.default_storage_provider == "fs" and shutil.which("rsync") is None:
        sys.exit(
            "haet: rsync is not installed, and the fs storage provider (--default-storage-provider fs, as in "
            "profiles/kubernetes) copies every file with it: install it where Snakemake runs "
            "(apt-get install rsync, dnf install rsync or conda install -c conda-forge rsync)"
        )


def check_models(config):
    """Before the first job: every model the study names (screening, NAS settings, fidelity arms) is registered."""
    from haet.models import MODELS

    named = set(config["screening"]["models"]) | set(config["nas"].get("per_model", {}))
    fidelity = config.get("fidelity") or {"train": {}, "arms": {}}
    for settings in fidelity["arms"].values():
        named.add((fidelity["train"].get("model", {}) | settings.get("train", {}).get("model", {})).get("name", ""))
    unknown = sorted(name for name in named if name and name not in MODELS)
    if unknown:
        raise ValueError(f"unknown model {unknown[0]!r} in the study config; haet's models: {', '.join(MODELS)}")


def lease_jobs_to_this_snakemake(workflow):
    """Local jobs (children of this process) get its identity: a training or search dies when it does
    (haet.lease). Not on a cluster, where jobs run on other machines."""
    from haet.lease import LEASE_VARIABLE, process_identity

    if workflow.executor_plugin.cli_prefix == "local":
        os.environ[LEASE_VARIABLE] = process_identity(os.getpid()) or ""


def haet_command(container, data_roots):
    """The prefix every rule's command starts with: `haet`, or `haet container run ... --` for engine docker,
    which runs the same command inside the image (the working folder read-write, the data roots read-only)."""
    if container["engine"] != "docker":
        return "haet"  # none: the venv's haet; apptainer: Snakemake itself wraps the rule (--sdm apptainer)
    words = ["haet", "container", "run", "--image", container["image"], "--gpus", container["gpus"]]
    if container.get("socket"):
        words += ["--socket", container["socket"]]
    for root in data_roots:
        words += ["--data-root", root]
    if container.get("memory"):
        words += ["--memory", container["memory"]]
    if container.get("cpus"):
        words += ["--cpus", str(container["cpus"])]
    return shlex.join(words) + " --"


STUDY_DATA = (config["data"], config["final"]["data"], (config.get("leaderboard") or {}).get("data") or {})
HAET = haet_command(CONTAINER, [data["root"] for data in STUDY_DATA if data.get("root")])
MIXED_IMAGES = "--allow-mixed-images" if CONTAINER["allow_mixed_images"] else ""


# The training config layers each stage's runs stack (later layers win), as the stage's commands pass them.
STAGE_LAYERS = {"screening": [config["screening"]["train"]]}
STAGE_LAYERS["augment"] = STAGE_LAYERS["screening"] + [config["augment"]["train"]]
STAGE_LAYERS["hpo"] = STAGE_LAYERS["augment"] + [config["hpo"]["train"]]
STAGE_LAYERS["final"] = STAGE_LAYERS["hpo"] + [config["final"]["train"]]


def runtime_of(*layers):
    """The runtime section the layered training configs (later layers win) give a training."""
    runtime = {}
    for layer in layers:
        runtime |= layer.get("runtime", {})
    return runtime


def torch_threads(*layers):
    """torch's CPU threads per training: runtime.threads, else 1, so that Snakemake's --cores counts trainings."""
    return runtime_of(*layers).get("threads", 1)


def training_threads(*layers):
    """The cores one training occupies (a rule's `threads:`): torch's threads and the loader's worker processes."""
    runtime = runtime_of(*layers)
    workers = 0 if runtime.get("pipeline") == "resident" else runtime.get("workers", 2)
    return torch_threads(*layers) + workers


# A training holds a `gpu` token: the default profile allows one at a time, so trainings never share an
# accelerator (a search holds one per training it runs at once). On a machine without NVIDIA's driver (no
# nvidia-smi) trainings run on the CPU and ask for none, and `threads:` share the cores out. A study on a cluster
# (container.engine apptainer or kubernetes) asks for GPUs even so: the machine Snakemake plans on is not the one
# its jobs run on.
NO_GPU_HERE = shutil.which("nvidia-smi") is None and config["container"]["engine"] not in ("apptainer", "kubernetes")


def gpus_per_training(*layers):
    """The `gpu` resource of a training with these config layers: 0 on the CPU, else 1."""
    device = runtime_of(*layers).get("device", "auto")
    return 0 if device == "cpu" or (device == "auto" and NO_GPU_HERE) else 1


def search_settings(kind, model=None):
    """A search's settings: hpo.search, or nas.search with the model's nas.per_model over it."""
    return nas_search(model) if kind == "nas" else config["hpo"]["search"]


def search_trainings(kind, model=None):
    """Trainings a search runs at once: a block of points, each on every subset of the search."""
    return search_settings(kind, model).get("block_size", 1) * config[kind]["subsets"]


def search_gpus(kind, layers, model=None):
    """The `gpu` resource of a search: a GPU per training it runs at once, or one they share (share_gpus)."""
    per_training = gpus_per_training(*layers)
    if search_settings(kind, model).get("share_gpus", False):
        return per_training
    return per_training * search_trainings(kind, model)


def as_json(value):
    """A config section as the inline JSON `haet ... --config` takes (Snakemake tracks it as a param)."""
    return json.dumps(value, sort_keys=True)


def ranked(ranking_file, k):
    """The first k model names of a ranking written by `haet report rank` (what checkpoints read)."""
    if getattr(ranking_file, "is_storage", False) and not os.path.exists(ranking_file):
        Path(ranking_file).parent.mkdir(parents=True, exist_ok=True)  # a new Snakemake has no working copy yet
        ranking_file.storage_object.retrieve_object()
    with open(ranking_file) as handle:
        return [row["model"] for row in json.load(handle)["ranked"][:k]]


def group_args(groups, local_paths):
    """`--group LABEL RECORD...` arguments of `haet report` for {label: [run records]}, each record named by the
    path the job sees: local_paths, the rule's input records in the groups' order. (Under a storage provider, as
    on Kubernetes, a job reads local copies of its inputs whose paths are not the workflow's.)"""
    local = list(local_paths)
    if len(local) != sum(len(paths) for paths in groups.values()):
        raise ValueError(f"{len(local)} input records for groups of {sum(map(len, groups.values()))}")
    words, start = [], 0
    for label, paths in groups.items():
        words += ["--group", label, *local[start : start + len(paths)]]
        start += len(paths)
    return shlex.join(words)


def repeated(flag, paths):
    """`FLAG PATH` for each path, shell-quoted: how haet takes lists (--manifest, --search-summary)."""
    return shlex.join(word for path in paths for word in (flag, path))


def table_prefix(wildcards, output):
    """A table rule's output prefix, from its first output (PREFIX.json)."""
    return output[0].removesuffix(".json")


def output_folder(wildcards, output):
    """The folder a search writes into, from its first output."""
    return str(Path(output[0]).parent)


def runs_of(pattern, runs, **names):
    """The run records of one group: pattern formatted with names and each run index."""
    return [pattern.format(run=run, **names) for run in runs]


CARRY = config["augment"]["carry"]  # the augmentation recipe later stages (HPO, final) train with
SCREENING_AUGMENT = config["screening"]["train"].get("recipe", {}).get("augment", "paper")
if SCREENING_AUGMENT not in config["augment"]["recipes"] or CARRY not in config["augment"]["recipes"]:
    raise ValueError(
        f"augment.recipes must include the screening's recipe ({SCREENING_AUGMENT}, for Table 2a) "
        f"and augment.carry ({CARRY})"
    )
for key in ("nas.subsets", "augment.runs", "hpo.subsets", "hpo.runs"):
    section, name = key.split(".")
    if config[section][name] > len(RUNS):
        raise ValueError(f"{key} is {config[section][name]} but subsets.runs draws only {len(RUNS)} subsets")
unscreened = sorted(set(config["nas"].get("per_model", {})) - set(MODELS))
if unscreened:
    raise ValueError(f"nas.per_model names {', '.join(unscreened)}, not among screening.models: a typo?")
AUGMENT_RUNS = RUNS[: config["augment"]["runs"]]
HPO_RUNS = RUNS[: config["hpo"]["runs"]]
SCREENING_RUN = f"{OUT}/screening/{{model}}/run{{run}}.json"
AUGMENT_RUN = f"{OUT}/augment/{{model}}/{{recipe}}/run{{run}}.json"


def nas_models():
    """The top k models of the screening (known once its ranking exists)."""
    return ranked(checkpoints.rank_screening.get().output[0], config["nas"]["top_k"])


def nas_search(model):
    """nas.search with the model's own settings of nas.per_model over it; variables merge by variable name."""
    search, own = dict(config["nas"]["search"]), dict(config["nas"].get("per_model", {}).get(model, {}))
    variables = dict(search.get("variables", {}))
    for name, settings in own.pop("variables", {}).items():
        variables[name] = variables.get(name, {}) | settings
    return search | own | ({"variables": variables} if variables else {})


NAS_MANIFESTS = [f"{OUT}/subsets/run{run}.json" for run in RUNS[: config["nas"]["subsets"]]]


def carry_groups():
    return {m: runs_of(AUGMENT_RUN, AUGMENT_RUNS, model=m, recipe=CARRY) for m in nas_models()}


def table2a_groups():
    groups = {}
    for model in nas_models():
        groups[f"{model}|baseline"] = runs_of(SCREENING_RUN, RUNS, model=model)
        groups[f"{model}|NAS"] = runs_of(AUGMENT_RUN, AUGMENT_RUNS, model=model, recipe=SCREENING_AUGMENT)
    return groups


def table2_groups():
    recipes = config["augment"]["recipes"]
    return {f"{m}|{r}": runs_of(AUGMENT_RUN, AUGMENT_RUNS, model=m, recipe=r) for m in nas_models() for r in recipes}


def records_of(groups_function):
    return lambda wildcards: [path for paths in groups_function().values() for path in paths]


def hpo_model():
    """The NAS model that did best with the carried-forward recipe (known once that ranking exists)."""
    return ranked(checkpoints.rank_augment.get().output[0], 1)[0]


HPO_MANIFESTS = [f"{OUT}/subsets/run{run}.json" for run in RUNS[: config["hpo"]["subsets"]]]


# The reference rows (reference.smk): the paper's final submission, as `haet train`'s defaults.
REFERENCE_LABEL = "SENet18|paper submission"
_reference_runs = config.get("reference", {}).get("runs")  # per table; none given: as many as the tuned rows
REFERENCE_RUNS = {"hpo": HPO_RUNS[:_reference_runs], "final": FINAL_RUNS[:_reference_runs]}


def reference_config(stage):
    """The budget and runtime of the stage's tuned runs; the submission's model (SENet-18 at width 0.67) and
    haet's default recipe (the submission's), with the rate frozen after epoch 260 as the submission's loop did."""
    layers = [config["screening"]["train"], config["augment"]["train"]]
    layers += [config["final"]["train"]] if stage == "final" else []
    merged = {
        "model": {"name": "SENet18", "width": 0.67},
        "recipe": {"freeze_lr_at_epoch": 261},
        "budget": {},
        "runtime": {},
    }
    for layer in layers:
        for section in ("budget", "runtime"):
            merged[section] |= layer.get(section, {})
    return merged


def reference_manifest(wildcards):
    folder = "final/subsets" if wildcards.stage == "final" else "subsets"
    return f"{OUT}/{folder}/run{wildcards.run}.json"


def reference_group(stage):
    """The reference row of Tables 3 and 4: the paper's submission on that stage's subsets (reference.smk)."""
    return {REFERENCE_LABEL: runs_of(f"{OUT}/reference/{stage}/run{{run}}.json", REFERENCE_RUNS[stage])}


def table3_groups():
    model = hpo_model()
    return {
        f"{model}|before HPO": runs_of(AUGMENT_RUN, AUGMENT_RUNS, model=model, recipe=CARRY),
        f"{model}|after HPO": runs_of(f"{OUT}/hpo/runs/run{{run}}.json", HPO_RUNS),
    } | reference_group("hpo")


def table4_groups():
    return {f"{hpo_model()}|final": runs_of(f"{OUT}/final/runs/run{{run}}.json", FINAL_RUNS)} | reference_group("final")


SCREENING_GROUPS = {model: runs_of(SCREENING_RUN, RUNS, model=model) for model in MODELS}


# Tables, figures and runs.csv (report.smk): one definition each, keyed by the {table} or {figure} wildcard.
TABLE_GROUPS = {
    "table1": lambda: SCREENING_GROUPS,
    "table2a": table2a_groups,
    "table2": table2_groups,
    "table3": table3_groups,
    "table4": table4_groups,
}


# Under a storage provider (the Kubernetes profile: jobs share no file system) only what a job declares outlives
# it, so a search there also declares the log and the run records its summary names, and the reports read them.
# Natively they stay undeclared: Snakemake deletes a failed job's outputs, and a retried search resumes from its log.
IN_STORAGE = workflow.storage_settings.default_storage_provider is not None


def search_files(folder):
    """A search's files beyond its four outputs that reports read, by name: declared under a storage provider."""
    if not IN_STORAGE:
        return {}
    return {"evaluations": f"{folder}/evaluations.jsonl", "runs": directory(f"{folder}/runs")}


def search_logs(summaries):
    """The files reports read beside each search summary (its log, its run records) under a storage provider."""
    return [str(path) for summary in summaries for path in search_files(str(Path(summary).parent)).values()]


def nas_summaries():
    return [f"{OUT}/nas/{model}/summary.json" for model in nas_models()]


def hpo_summaries():
    return [f"{OUT}/hpo/summary.json"]


TABLE_SEARCHES = {"table2a": nas_summaries, "table3": hpo_summaries}
FIGURE_GROUPS = {"screening": lambda: SCREENING_GROUPS, "curves": table4_groups}
FIGURE_SEARCHES = {"nas": nas_summaries, "hpo": hpo_summaries}


def runs_groups():
    """Every run record outside the searches, by stage: the rows of runs.csv (the searches add their own)."""
    return {
        "screening": [path for paths in SCREENING_GROUPS.values() for path in paths],
        "augment": [path for paths in table2_groups().values() for path in paths],
        "hpo": runs_of(f"{OUT}/hpo/runs/run{{run}}.json", HPO_RUNS),
        "final": runs_of(f"{OUT}/final/runs/run{{run}}.json", FINAL_RUNS),
    } | {f"reference {stage}": reference_group(stage)[REFERENCE_LABEL] for stage in REFERENCE_RUNS}


def inputs_of(groups_by_name, searches_by_name, wildcard):
    """A table's or figure's input function: its run records, its searches' summaries and their logs."""

    def inputs(wildcards):
        name = getattr(wildcards, wildcard)
        groups = groups_by_name.get(name, dict)()
        summaries = searches_by_name.get(name, list)()
        return {
            "records": [path for paths in groups.values() for path in paths],
            "searches": summaries,
            "search_logs": search_logs(summaries),
        }

    return inputs


def report_args(groups_by_name, wildcard):
    """The `--group ... --search-summary ...` arguments of a `haet report` command for one table or figure."""

    def arguments(wildcards, input):
        groups = groups_by_name.get(getattr(wildcards, wildcard), dict)()
        records, summaries = getattr(input, "records", []), getattr(input, "searches", [])  # unpack drops empty lists
        return f"{group_args(groups, records)} {repeated('--search-summary', summaries)}"

    return arguments


# The fidelity study (fidelity.smk), when the config has its section: every arm's runs on the same subsets.
FIDELITY = config.get("fidelity")
FIDELITY_ARMS = list(FIDELITY["arms"]) if FIDELITY else []


def check_fidelity(fidelity):
    """At parse time: the reference is an arm, every target is one of the paper's numbers (haet.report.paper)."""
    from haet.report.paper import FIDELITY_TARGETS

    if fidelity["reference"] not in fidelity["arms"]:
        arms = ", ".join(fidelity["arms"])
        raise ValueError(f"fidelity.reference {fidelity['reference']!r} is not one of fidelity.arms: {arms}")
    for arm, settings in fidelity["arms"].items():
        if settings["target"] not in FIDELITY_TARGETS:
            raise ValueError(
                f"fidelity.arms.{arm}.target {settings['target']!r} is not one of the paper's numbers: "
                + ", ".join(FIDELITY_TARGETS)
            )


def fidelity_source(arm):
    """Which subsets an arm trains on: the study's (`study`), or its own when it has its own data."""
    return arm if "data" in FIDELITY["arms"][arm] else "study"


def fidelity_subset_config(source):
    data = FIDELITY["arms"][source]["data"] if source != "study" else FIDELITY.get("data", config["data"])
    spec = {key: value for key, value in FIDELITY.get("subsets", config["subsets"]).items() if key != "runs"}
    return {"data": data, "subsets": spec}


def fidelity_manifest(wildcards):
    return f"{OUT}/fidelity/subsets/{fidelity_source(wildcards.arm)}/run{wildcards.run}.json"


def fidelity_layers(arm):
    return [FIDELITY["train"], FIDELITY["arms"][arm]["train"]]


def fidelity_shares_gpu(arm):
    """Epoch-budget trainings (whose accuracy does not depend on the clock) share a GPU, trainings_per_gpu at
    once, on a local run; wall-clock ones, and every job on a cluster, have one each."""
    budget = {}
    for layer in fidelity_layers(arm):
        budget |= layer.get("budget", {})
    local = config["container"]["engine"] not in ("apptainer", "kubernetes")
    wall_clock = budget.get("seconds", 600.0) is not None  # haet train's default budget is 600 s
    shares = FIDELITY["trainings_per_gpu"] > 1 and local and not wall_clock
    return shares and gpus_per_training(*fidelity_layers(arm)) > 0


def fidelity_gpus(arm):
    """The `gpu` resource of an arm's training: none when it holds a share (`gpu_shared`) instead."""
    return 0 if fidelity_shares_gpu(arm) else gpus_per_training(*fidelity_layers(arm))


def fidelity_groups():
    """The fidelity table's rows, ARM|TARGET, the reference arm first."""
    arms = [FIDELITY["reference"]] + [arm for arm in FIDELITY_ARMS if arm != FIDELITY["reference"]]
    runs = range(FIDELITY["runs"])
    return {f"{arm}|{FIDELITY['arms'][arm]['target']}": runs_of(FIDELITY_RUN, runs, arm=arm) for arm in arms}


FIDELITY_RUN = f"{OUT}/fidelity/runs/{{arm}}/run{{run}}.json"
if FIDELITY:
    check_fidelity(FIDELITY)
    TABLE_GROUPS["fidelity"] = FIGURE_GROUPS["fidelity"] = fidelity_groups


# The report's first page (workflow/report/workflow.rst): the paper's numbers beside the harness's.
def paper_row(kind, row):
    best, final, interval = row["val_acc_best_optimistic_mean"], row["val_acc_final_mean"], row.get("val_acc_best_ci95")
    shown = f"{100 * best:.1f}" + (f" ± {100 * interval:.1f}" if interval is not None else "")
    return [kind, row["label"], f"{row['paper']:.1f}", shown, f"{100 * final:.1f}", str(row["n"]), row.get("verdict") or ""]


def paper_beside_harness(tables_folder):
    """For the report's first page (workflow/report/workflow.rst): an RST table of every paper number a table of
    this study put a harness number beside, from the tables already written (none yet: empty)."""
    lines = []
    for path in sorted(Path(tables_folder).glob("*.json")):
        try:  # an unreadable or foreign table is the audit's to report; the page shows the others
            table = json.loads(path.read_text())
            lines += [paper_row(table["kind"], row) for row in table["rows"] if row.get("paper") is not None]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if not lines:
        return ""
    header = ["table", "row", "paper %", "harness best-epoch %", "harness final %", "n", "verdict"]
    rows = [header] + lines
    return ".. list-table::\n   :header-rows: 1\n\n" + "".join(
        "   * - " + "\n     - ".join(cell.replace("|", " / ") for cell in row) + "\n" for row in rows
    )


# read by the report's first page only; set after the config was validated, so no study config can set it
config["_paper_beside_harness"] = paper_beside_harness(f"{OUT}/tables")


# The challenge's leaderboard (leaderboard.smk), when the config has its section: every entry on the same subsets.
LEADERBOARD = config.get("leaderboard")
LEADERBOARD_RUN = f"{OUT}/leaderboard/{{entry}}/run{{run}}.json"
# torch's threads in a submission's processes (and the cores its job holds): leaderboard.threads, else 1
LEADERBOARD_THREADS = (LEADERBOARD or {}).get("threads") or 1
# engine docker: a leaderboard job runs here and starts the submission's train and predict processes each in a
# container of the image with its work folder alone mounted, under the challenge's envelope (leaderboard.memory,
# .cpus), not the study's container limits
def leaderboard_run_args():
    """A leaderboard run's envelope and clock: its sandbox's (natively) or its containers' (engine docker)."""
    words = ["--clock", LEADERBOARD.get("clock", "auto")]
    words += ["--memory", LEADERBOARD.get("memory", "12g")] if LEADERBOARD.get("memory", "12g") else []
    words += ["--unsandboxed"] if LEADERBOARD.get("unsandboxed") else []
    if CONTAINER["engine"] == "docker":
        words += ["--image", CONTAINER["image"], "--gpus", CONTAINER["gpus"]]
        words += ["--socket", CONTAINER["socket"]] if CONTAINER.get("socket") else []
        words += ["--cpus", str(LEADERBOARD["cpus"])] if LEADERBOARD.get("cpus") else []
    return shlex.join(words)


def leaderboard_subset_config():
    """The final evaluation's data and subsets (the challenge's protocol), unless the section gives its own."""
    data = LEADERBOARD.get("data", config["final"]["data"])
    spec = LEADERBOARD.get("subsets", config["final"]["subsets"])
    return {"data": data, "subsets": {key: value for key, value in spec.items() if key != "runs"}}


def leaderboard_gpus():
    device = LEADERBOARD.get("device", "auto")
    return 0 if device == "cpu" or (device == "auto" and NO_GPU_HERE) else 1


def leaderboard_groups():
    """The leaderboard's rows: one an entry, its runs."""
    runs = range(LEADERBOARD["runs"])
    return {entry: runs_of(LEADERBOARD_RUN, runs, entry=entry) for entry in LEADERBOARD["submissions"]}


if LEADERBOARD:
    if "subsets" in LEADERBOARD["submissions"]:
        raise ValueError("leaderboard.submissions: `subsets` names the leaderboard's subsets folder; rename the entry")
    TABLE_GROUPS["leaderboard"] = FIGURE_GROUPS["leaderboard"] = leaderboard_groups
