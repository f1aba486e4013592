"""Experiment files -> validated, fully resolved runs (``RunSpec``).

An experiment file (``experiments/*.yaml``)::

    description: Figure 1 of the paper
    defaults:             # optional: applied to every row
      seeds: [1]
    rows:
      - model: plain20
      - model: resnet56
        shortcut: B
        name: resnet56-B  # optional; default is derived from the model and shortcut
        lr: 0.05          # any recipe field (profiles.yaml) may be overridden

A ``seeds: [1, 2, 3]`` row expands into one run per seed. Rows and recipes are declared
pydantic models (``Row``, ``Recipe``): every mistake (unknown key, unknown model, bad
value) is reported before any training starts, naming the file, the row and the key.
The recipe values live in ``profiles.yaml`` only; this module declares their types and
bounds, never their values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...models import parse_model_name, resolve_shortcut
from ...models.plugins import PluginError, PluginSource, load_plugins, sources_of

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")

# Bump when the training code changes in a way that changes results, so old runs are
# not silently reused as if they came from the new code.
RECIPE_VERSION = 1

N_CLASSES = 10
MAX_SEED = 2**32 - 1  # numpy's and most tools' seed range; torch's is larger

PositiveInt = Annotated[int, Field(strict=True, gt=0)]

# Names that become path components (a run's name, an experiment file's stem): portable
# characters only, and short enough that <name>-s<seed>-<10 hex digits> (at most 23 bytes
# more) fits the 255 bytes a path component may have on every common filesystem.
NAME_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
MAX_NAME_BYTES = 200


def check_path_name(value: str, what: str) -> None:
    """ValueError naming what is wrong with a name that becomes a folder."""
    if not NAME_CHARS.match(value):
        raise ValueError(f"{what} {value[:60]!r}{'...' if len(value) > 60 else ''} becomes a folder name: use "
                         "letters, digits and . _ + = - only, starting with a letter or digit")
    if len(value.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"{what} is {len(value.encode())} bytes long, at most {MAX_NAME_BYTES}: its run folders "
                         "are named <name>-s<seed>-<identity> and a folder name may have 255 bytes")


class ExperimentError(ValueError):
    """A malformed experiment file, row or profile."""


# --------------------------------------------------------------------------- recipe
Precision = Literal["fp32", "tf32", "bf16"]


class Recipe(BaseModel):
    """One training recipe: a profile of ``profiles.yaml``, with a row's overrides."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    lr: float = Field(gt=0, allow_inf_nan=False, description="initial learning rate")
    momentum: float = Field(ge=0, le=1, description="SGD momentum")
    weight_decay: float = Field(ge=0, allow_inf_nan=False,
                                description="L2 weight decay (on every parameter, as the original code)")
    nesterov: bool = Field(description="Nesterov momentum")
    batch_size: int = Field(ge=1, description="mini-batch size")
    iterations: int = Field(ge=1, description="training iterations")
    milestones: Annotated[tuple[PositiveInt, ...], Field(strict=False)] = Field(
        description="iterations at which the lr is multiplied by lr_decay")
    lr_decay: float = Field(gt=0, le=1, description="lr multiplier at each milestone")
    warmup_lr: float | None = Field(gt=0, allow_inf_nan=False, description="warm-up lr (null: no warm-up)")
    warmup_until_train_error: float = Field(ge=0, le=100,
                                            description="leave warm-up once training error (%) is below this")
    warmup_min_depth: int = Field(ge=0, description="warm up only nets at least this deep")
    warmup_check_every: int = Field(ge=1, description="iterations between warm-up checks")
    augment: bool = Field(description="pad-4 random crop + horizontal flip")
    val_split: int = Field(ge=0, description="hold out this many training images (e.g. 5000) as val, "
                                             "a multiple of 10 (balanced per class)")
    train_per_class: int | None = Field(ge=1, description="use at most this many training images per class")
    test_per_class: int | None = Field(ge=1, description="use at most this many test images per class")
    precision: Precision = Field(
        description="fp32 (IEEE, TF32 off on CUDA), tf32 (CUDA's TF32 tensor cores for convolutions and "
                    "matmuls; fp32 on a CPU), or bf16 autocast")
    eval_every: int = Field(ge=1, description="iterations between log lines (test evaluations)")
    checkpoint_every_s: float = Field(ge=0, description="seconds of training between checkpoints")
    cuda_graph: bool = Field(description="on CUDA, capture the step in a CUDA graph and replay it "
                                         "(runs/training/step.py); the same numbers, a third of the host time")
    deterministic: bool = Field(description="PyTorch's deterministic algorithms (cuDNN, cuBLAS): a GPU rerun "
                                            "or resume of one seed gives identical logs, at a cost in speed")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if list(v) != sorted(set(v)):
            raise ValueError("must be increasing")
        return v

    @field_validator("val_split")
    @classmethod
    def _balanced(cls, v: int) -> int:
        if v % N_CLASSES:
            raise ValueError(f"must be a multiple of {N_CLASSES} (the same number held out per class)")
        return v

    @model_validator(mode="after")
    def _milestones_below_iterations(self) -> "Recipe":
        if any(m >= self.iterations for m in self.milestones):
            raise ValueError(f"key 'milestones' {list(self.milestones)} must lie below iterations "
                             f"({self.iterations})")
        return self

    def identity_fields(self) -> dict[str, Any]:
        """Every field that can change a run's results (``checkpoint_every_s`` cannot)."""
        d = self.model_dump(exclude=NOT_IDENTITY)
        d["milestones"] = list(d["milestones"])
        return d


# How a run is trained, not what it computes: a graphed step replays the eager step's kernels,
# and a deterministic run is one more sample of the same recipe (on a CPU, the same numbers).
# Runs that differ only in these share an identity, so either reuses the other's results.
NOT_IDENTITY = {"checkpoint_every_s", "cuda_graph", "deterministic"}
RECIPE_FIELDS = tuple(Recipe.model_fields)


# --------------------------------------------------------------------------- row
class Row(BaseModel):
    """The keys of an experiment row that are not recipe fields."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(description="network name (python -m resnet_exp models)")
    shortcut: Literal["A", "B", "C"] | None = Field(None, description="A, B or C (residual nets only)")
    name: str | None = Field(None, description="run name (default: model, plus -<shortcut> when not the default); "
                                               f"letters, digits and . _ + = -, at most {MAX_NAME_BYTES} bytes")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="random seed (default 1)")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | None = Field(
        None, min_length=1, description="list of seeds: one run per seed")
    group: str | None = Field(None, description="what the row varies, for the ablation report")
    opt_in: bool = Field(False, description="run only when named with --only or with --include-opt-in")
    note: str | None = Field(None, description="free text shown in reports")
    baseline: str | None = Field(None, pattern=r"^[^/]+/[^/]+$",
                                 description="experiment/name of the run the ablations report draws beside this one")
    zero_init_residual: bool = Field(False, description="start every residual branch at zero")
    sweep: dict[str, list[Any]] | None = Field(
        None, description="recipe keys and their values, e.g. {lr: [0.05, 0.1, 0.2]}: one run per value "
                          "(per combination for several keys), each validated like a row")

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str | None) -> str | None:
        if v is not None:
            check_path_name(v, "the name")
        return v

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, v: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one key")
        for key, values in v.items():
            if key not in RECIPE_FIELDS:
                raise ValueError(f"must sweep recipe fields ({', '.join(RECIPE_FIELDS)}), got {key!r}")
            if not values or len(set(map(repr, values))) != len(values):
                raise ValueError(f"must give {key!r} a list of distinct values, got {values!r}")
        return v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        parse_model_name(v)  # ValueError with the valid choices
        return v

    @model_validator(mode="after")
    def _one_seed_key(self) -> "Row":
        if self.seed is not None and self.seeds is not None:
            raise ValueError("give 'seed' or 'seeds', not both")
        return self


ROW_KEYS = tuple(Row.model_fields)
FILE_KEYS = ("description", "plugins", "defaults", "rows")
# where the suite's own experiment files live: a baseline such as figure6/resnet56 named by a
# file in the user's own folder resolves here when that folder has no figure6.yaml
SUITE_EXPERIMENTS = Path(__file__).resolve().parents[3] / "experiments"


# --------------------------------------------------------------------------- errors
_MESSAGES = {
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
    "int_type": "must be an integer", "int_from_float": "must be an integer", "int_parsing": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "literal_error": "must be one of {expected}", "finite_number": "must be finite",
    "string_type": "must be a string", "list_type": "must be a list", "tuple_type": "must be a list",
    "too_short": "must not be empty",
    "string_pattern_mismatch": "must be a non-empty string without spaces or slashes",
}


def explain(error: ValidationError, where: str) -> ExperimentError:
    """A pydantic error as one line naming the file, row and key, and what is valid."""
    lines = []
    for err in error.errors():
        key = str(err["loc"][0]) if err["loc"] else None
        kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
        if kind == "missing":
            lines.append(f"missing key {key!r}")
            continue
        if kind == "value_error":  # our validators' words: "must ..." reads on from the key
            text = str(ctx.get("error", err["msg"]))
            text = f"{text}, got {got!r}" if text.startswith("must") else f": {text}"
        else:
            text = _MESSAGES.get(kind, err["msg"]).format(**ctx)
            if key == "baseline" and kind == "string_pattern_mismatch":
                text = "must look like experiment/name, e.g. figure6/resnet56"
            text += f", got {got!r}"
        lines.append(f"key {key!r}{'' if text.startswith(':') else ' '}{text}" if key and not text.startswith("key ")
                     else text.lstrip(": "))
    return ExperimentError(f"{where}: " + "; ".join(lines))


# --------------------------------------------------------------------------- runs
@dataclass(frozen=True, eq=False)
class RunSpec:
    experiment: str
    name: str
    model: str
    shortcut: str | None
    seed: int
    recipe: Recipe
    profile: str
    group: str | None = None
    opt_in: bool = False
    note: str | None = None
    baseline: str | None = None
    zero_init_residual: bool = False
    source: str = field(default="")  # "file.yaml row 3", for messages
    file: str = ""                   # the experiment file it came from
    sweep: dict[str, Any] | None = None  # a swept row's run: {"row": name, "values": {key: value}}
    plugins: tuple[PluginSource, ...] = ()  # the plug-ins its model came from (models/plugins.py)

    @property
    def depth(self) -> int:
        return parse_model_name(self.model)[1]

    @property
    def label(self) -> str:
        """``experiment/name-s<seed>``: how messages name this run."""
        return f"{self.experiment}/{self.name}-s{self.seed}"

    def identity(self, dataset_sha256: str) -> str:
        """A hash of everything that determines the run's results."""
        key = {"model": self.model, "shortcut": self.shortcut, "seed": self.seed,
               "zero_init_residual": self.zero_init_residual, "dataset": dataset_sha256,
               "recipe_version": RECIPE_VERSION, "recipe": self.recipe.identity_fields()}
        if self.plugins:  # the code it trains (a built-in model's identity has no such key)
            key["plugins"] = [p.sha256 for p in self.plugins]
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def run_dir_name(self, dataset_sha256: str) -> str:
        return f"{self.name}-s{self.seed}-{self.identity(dataset_sha256)[:10]}"

    def config(self) -> dict[str, Any]:
        """The resolved configuration, as recorded in meta.json."""
        return {"experiment": self.experiment, "name": self.name, "model": self.model,
                "shortcut": self.shortcut, "seed": self.seed, "profile": self.profile,
                "group": self.group, "note": self.note, "baseline": self.baseline,
                "zero_init_residual": self.zero_init_residual, "recipe_version": RECIPE_VERSION,
                "recipe": self.recipe.model_dump(mode="json"), "sweep": self.sweep,
                # the reports read family and depth from here: they never import a plug-in
                "family": parse_model_name(self.model)[0].key, "depth": self.depth,
                **({"plugins": [p.record() for p in self.plugins]} if self.plugins else {})}


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Recipe]:
    profiles = yaml.safe_load(path.read_text())
    out = {}
    for name, values in profiles.items():
        try:
            out[name] = Recipe.model_validate(values)
        except ValidationError as e:
            raise explain(e, f"{path}: profile {name!r}") from None
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# Numbers as a person writes them: YAML 1.1 (PyYAML's) reads 5e-4 and 1e4 as strings, wanting a
# dot (5.0e-4); YAML 1.2 reads them as numbers, and so does this loader (only this one).
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_experiment(path: str | Path, profile: str, check_baselines: bool = True,
                    precision: Precision | None = None) -> list[RunSpec]:
    """Every run of one experiment file under one profile; ExperimentError on any mistake.
    ``precision`` (``run --precision``, or the budget's choice on a CPU with native bf16)
    replaces the profile's; a row that names its own precision keeps it."""
    path = Path(path)
    profiles = load_profiles()
    if profile not in profiles:
        raise ExperimentError(f"unknown profile {profile!r}; valid profiles: {', '.join(profiles)}")
    base = profiles[profile] if precision is None else profiles[profile].model_copy(update={"precision": precision})
    if not path.exists():
        raise ExperimentError(f"{path}: no such experiment file")
    try:  # the stem names the results folder <results>/<stem>/
        check_path_name(path.stem, "the experiment file's name")
    except ValueError as e:
        raise ExperimentError(f"{path}: {e}") from None
    try:
        doc = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        raise ExperimentError(f"{path}: expected a mapping with a non-empty list under 'rows'")
    if unknown := set(doc) - set(FILE_KEYS):
        raise ExperimentError(f"{path}: unknown top-level key(s) {sorted(unknown)}; valid: {list(FILE_KEYS)}")
    entries = doc.get("plugins") or []
    if not isinstance(entries, list):
        raise ExperimentError(f"{path}: 'plugins' must be a list of .py paths (relative to this file) "
                              "or module names")
    try:  # before the rows: their model names may be the plug-ins'
        plugins = load_plugins(entries, path.parent)
    except PluginError as e:
        raise ExperimentError(f"{path}: {e}") from None
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ExperimentError(f"{path}: 'defaults' must be a mapping of row keys")
    _check_keys(defaults, f"{path}: defaults")

    specs: list[RunSpec] = []
    for i, row in enumerate(doc["rows"], start=1):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise ExperimentError(f"{where}: expected a mapping like {{model: resnet20}}, got {row!r}")
        if label := row.get("name") or row.get("model"):
            label = str(label)
            where += f" ({label[:40]}{'...' if len(label) > 40 else ''})"
        specs.extend(_expand_row({**defaults, **row}, base, profile, path.stem, where, str(path),
                                 plugins))

    seen: dict[tuple[str, int], str] = {}
    for s in specs:
        if (s.name, s.seed) in seen:
            raise ExperimentError(f"{s.source}: run name {s.name!r} (seed {s.seed}) is already used by "
                                  f"{seen[(s.name, s.seed)]}; give one of them a distinct 'name'")
        seen[(s.name, s.seed)] = s.source
    if check_baselines:
        _check_baselines(specs, path, profile)
    return specs


def _check_baselines(specs: list[RunSpec], path: Path, profile: str) -> None:
    """Every ``baseline: experiment/name`` names a row of experiments/<experiment>.yaml."""
    names: dict[str, set[str]] = {path.stem: {s.name for s in specs}}
    for s in specs:
        if s.baseline is None:
            continue
        experiment, name = s.baseline.split("/")
        if experiment not in names:
            other = baseline_file(path, experiment)
            if not other.exists():
                valid = sorted({p.stem for d in (path.parent, SUITE_EXPERIMENTS) for p in d.glob("*.yaml")})
                raise ExperimentError(f"{s.source}: key 'baseline' {s.baseline!r}: there is no experiment file "
                                      f"{experiment}.yaml beside {path} or in the suite's {SUITE_EXPERIMENTS}; "
                                      f"valid experiments: {', '.join(valid)}")
            names[experiment] = {o.name for o in load_experiment(other, profile, check_baselines=False)}
        if name not in names[experiment]:
            raise ExperimentError(f"{s.source}: key 'baseline' {s.baseline!r}: {experiment} has no row named "
                                  f"{name!r}; its rows: {', '.join(sorted(names[experiment]))}")


def baseline_file(path: Path, experiment: str) -> Path:
    """The experiment file a ``baseline: <experiment>/<name>`` of ``path`` names: beside it,
    else the suite's own (so a file in the user's folder can name figure6/resnet56)."""
    beside = Path(path).with_name(f"{experiment}.yaml")
    return beside if beside.exists() else SUITE_EXPERIMENTS / f"{experiment}.yaml"


def check_against_data(specs: list[RunSpec], n_train: int, n_test: int) -> None:
    """The checks that need the dataset's size, right after it loads, naming row and key."""
    for s in specs:
        r = s.recipe
        if r.val_split >= n_train:
            raise ExperimentError(f"{s.source}: key 'val_split' {r.val_split} leaves no training images "
                                  f"(the dataset has {n_train:,})")
        available = n_train - r.val_split
        # train_per_class / test_per_class are upper bounds ("at most"): smoke runs on any dataset
        train = min(r.train_per_class * N_CLASSES, available) if r.train_per_class else available
        if r.batch_size > train:
            raise ExperimentError(f"{s.source}: key 'batch_size' {r.batch_size} exceeds the {train:,} training "
                                  "images this run has")


def _check_keys(row: dict[str, Any], where: str) -> None:
    for key in row:
        if key not in ROW_KEYS and key not in RECIPE_FIELDS:
            raise ExperimentError(f"{where}: unknown key {key!r}; valid keys: "
                                  f"{', '.join(ROW_KEYS + RECIPE_FIELDS)}")


def _expand_row(row: dict[str, Any], base: Recipe, profile: str, experiment: str, where: str,
                file: str = "", plugins: list[PluginSource] | None = None) -> list[RunSpec]:
    _check_keys(row, where)
    try:
        r = Row.model_validate({k: v for k, v in row.items() if k in ROW_KEYS})
    except ValidationError as e:
        raise explain(e, where) from None
    family, _ = parse_model_name(r.model)
    try:
        shortcut = resolve_shortcut(family, r.shortcut)
    except ValueError as e:
        raise ExperimentError(f"{where}: key 'shortcut': {e}") from None
    name = r.name or r.model + (f"-{shortcut}" if shortcut != family.default_shortcut else "")
    seeds = r.seeds or [r.seed if r.seed is not None else 1]
    overrides = {k: v for k, v in row.items() if k in RECIPE_FIELDS}
    # a swept row: one run per combination of the swept values, each named and validated on its own
    combos = [dict(zip(r.sweep, values)) for values in itertools.product(*r.sweep.values())] if r.sweep else [{}]
    specs = []
    for values in combos:
        at = where + "".join(f", sweep {k}={v!r}" for k, v in values.items())
        try:
            recipe = Recipe.model_validate({**base.model_dump(), **overrides, **values})
        except ValidationError as e:
            raise explain(e, at) from None
        run_name = "-".join([name, *(f"{k}{_value_tag(v)}" for k, v in values.items())])
        try:
            check_path_name(run_name, "key 'name': the run name")
        except ValueError as e:
            raise ExperimentError(f"{at}: {e}") from None
        sweep = {"row": name, "values": values} if values else None
        specs += [RunSpec(experiment=experiment, name=run_name, model=r.model, shortcut=shortcut, seed=seed,
                          recipe=recipe, profile=profile, group=r.group, opt_in=r.opt_in, note=r.note,
                          baseline=r.baseline, zero_init_residual=r.zero_init_residual, source=at, file=file,
                          sweep=sweep, plugins=sources_of(r.model, plugins or [])) for seed in seeds]
    return specs


def _value_tag(v: Any) -> str:
    """A swept value as part of a run name: 0.05, true, 1000_1500."""
    if isinstance(v, (list, tuple)):
        return "_".join(map(_value_tag, v))
    return str(v).lower() if isinstance(v, bool) else str(v)


def baseline_seed_runs(specs: list[RunSpec], profile: str, precision: Precision | None = None) -> list[RunSpec]:
    """The baseline-seeds rule: a baseline is trained with every seed of the rows that name it.

    An ablation's difference is read against the seed-to-seed noise, so its baseline needs
    the same seeds (paired comparison: same data order and initial weights). These runs are
    added only when such a row is selected, so figure6 itself, and the CPU default, keep one
    seed a net; they are the baseline's own row under its own experiment (``figure6/resnet56``
    seed 2, ...), so seed 1 is the very identity figure6 trains, never trained twice."""
    have = {(f"{s.experiment}/{s.name}", s.seed) for s in specs}
    wanted: dict[str, tuple[str, set[int]]] = {}
    for s in specs:
        if s.baseline:
            file = str(baseline_file(Path(s.file), s.baseline.split('/')[0])) if s.file else ""
            wanted.setdefault(s.baseline, (file, set()))[1].add(s.seed)
    extra: list[RunSpec] = []
    for baseline, (file, seeds) in wanted.items():
        name = baseline.split("/")[1]
        rows = [b for b in load_experiment(file, profile, check_baselines=False, precision=precision)
                if b.name == name]
        for seed in sorted(seeds):
            if (baseline, seed) in have:
                continue
            template = next((b for b in rows if b.seed == seed), rows[0])
            extra.append(dataclasses.replace(template, seed=seed, opt_in=False,
                                             source=f"{template.source} (seed {seed}, as the rows that name it)"))
            have.add((baseline, seed))
    return extra


def row_names(s: RunSpec) -> set[str]:
    """The names ``--only`` knows a run by: its name (in every file) or experiment/name (in that
    file alone); a swept row's runs also by the row's name."""
    row = s.sweep["row"] if s.sweep else s.name
    return {s.name, row, f"{s.experiment}/{s.name}", f"{s.experiment}/{row}"}


def explain_only(only: list[str], specs: list[RunSpec]) -> list[str]:
    """What each ``--only`` name matched, and the runs added as baselines (and why): a name
    that matches rows of several files, or an ablation that pulls in its baseline's seeds,
    should never surprise anyone at the estimate."""
    def runs(chosen: list[RunSpec]) -> str:
        by_row: dict[str, list[int]] = {}
        for s in chosen:
            by_row.setdefault(f"{s.experiment}/{s.name}", []).append(s.seed)
        return ", ".join(f"{row} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))})"
                         for row, seeds in by_row.items())
    lines = [f"--only {name}: {runs([s for s in specs if name in row_names(s)])}" for name in only]
    extra = [s for s in specs if not row_names(s) & set(only)]
    if extra:
        lines.append(f"added: {runs(extra)}, the baseline of selected rows, trained with their seeds "
                     "(an ablation is read against the same seeds of its baseline)")
    return lines


def select_runs(files: list[str], profile: str, only: list[str] | None = None,
                include_opt_in: bool = False, precision: Precision | None = None) -> list[RunSpec]:
    """Every run of every file, validated, then narrowed by --only / opt-in. ``precision``:
    see ``load_experiment``."""
    specs: list[RunSpec] = []
    stems: dict[str, str] = {}
    for f in files:
        stem = Path(f).stem
        if stem in stems and Path(stems[stem]).resolve() != Path(f).resolve():
            raise ExperimentError(f"{f} and {stems[stem]}: two experiment files named {stem!r} would share "
                                  f"results/{stem}/; rename one")
        stems[stem] = f
        specs.extend(load_experiment(f, profile, precision=precision))
    if only:
        unknown = set(only) - set().union(*map(row_names, specs))
        if unknown:
            raise ExperimentError(f"--only {' '.join(sorted(unknown))}: no such row; rows are "
                                  f"{', '.join(dict.fromkeys(s.name for s in specs))} (or experiment/name)")
        chosen = [s for s in specs if row_names(s) & set(only)]
    else:
        chosen = [s for s in specs if include_opt_in or not s.opt_in]
    return chosen + baseline_seed_runs(chosen, profile, precision)
