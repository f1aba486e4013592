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

A ``seeds: [1, 2, 3]`` row expands into one run per seed. Every mistake (unknown key,
unknown model, bad value) is reported before any training starts, naming the file, the
row and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .models import parse_model_name, resolve_shortcut

PROFILES_FILE = Path(__file__).with_name("profiles.yaml")

# Bump when the training code changes in a way that changes results, so old runs are
# not silently reused as if they came from the new code.
RECIPE_VERSION = 1


# --------------------------------------------------------------------------- field checks
def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            integer: bool = False, nullable: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None:
            return None if nullable else "must not be empty"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            return f"must be {'an integer' if integer else 'a number'}, got {v!r}"
        if not math.isfinite(v):
            return f"must be finite, got {v!r}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}, got {v!r}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v!r}"
        return None
    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def _choice(*options: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}, got {v!r}"


def _int_list(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in v):
        return f"must be a list of positive integers, got {v!r}"
    if v != sorted(set(v)):
        return f"must be increasing, got {v!r}"
    return None


# name -> (check, meaning). The values live in profiles.yaml, never here.
RECIPE_FIELDS: dict[str, tuple[Callable[[Any], str | None], str]] = {
    "lr": (_number(0, lo_open=True), "initial learning rate"),
    "momentum": (_number(0, 1), "SGD momentum"),
    "weight_decay": (_number(0), "L2 weight decay (on every parameter, as the original code)"),
    "nesterov": (_bool, "Nesterov momentum"),
    "batch_size": (_number(1, integer=True), "mini-batch size"),
    "iterations": (_number(1, integer=True), "training iterations"),
    "milestones": (_int_list, "iterations at which the lr is multiplied by lr_decay"),
    "lr_decay": (_number(0, 1, lo_open=True), "lr multiplier at each milestone"),
    "warmup_lr": (_number(0, lo_open=True, nullable=True), "warm-up lr (null: no warm-up)"),
    "warmup_until_train_error": (_number(0, 100), "leave warm-up once training error (%) is below this"),
    "warmup_min_depth": (_number(0, integer=True), "warm up only nets at least this deep"),
    "warmup_check_every": (_number(1, integer=True), "iterations between warm-up checks"),
    "augment": (_bool, "pad-4 random crop + horizontal flip"),
    "val_split": (_number(0, integer=True), "hold out this many training images (e.g. 5000) as val"),
    "train_per_class": (_number(1, integer=True, nullable=True), "use only this many training images per class"),
    "test_per_class": (_number(1, integer=True, nullable=True), "use only this many test images per class"),
    "precision": (_choice("fp32", "bf16"), "fp32, or bf16 autocast (GPU speed-up)"),
    "eval_every": (_number(1, integer=True), "iterations between log lines (test evaluations)"),
    "checkpoint_every_s": (_number(0), "seconds of training between checkpoints"),
}
# Fields that cannot change a run's results, so they are left out of its identity.
NOT_IDENTITY = {"checkpoint_every_s"}

ROW_KEYS: dict[str, str] = {
    "model": "network name (python -m resnet_exp models)",
    "shortcut": "A, B or C (residual nets only)",
    "name": "run name (default: model, plus -<shortcut> when not the default)",
    "seed": "random seed (default 1)",
    "seeds": "list of seeds: one run per seed",
    "group": "what the row varies, for the ablation report",
    "opt_in": "run only when named with --only or with --include-opt-in",
    "note": "free text shown in reports",
    "baseline": "experiment/name of the run the ablations report draws beside this one",
    "zero_init_residual": "start every residual branch at zero",
}
FILE_KEYS = {"description", "defaults", "rows"}


class ExperimentError(ValueError):
    """A malformed experiment file or row."""


@dataclass(frozen=True)
class RunSpec:
    experiment: str
    name: str
    model: str
    shortcut: str | None
    seed: int
    recipe: dict[str, Any]
    profile: str
    group: str | None = None
    opt_in: bool = False
    note: str | None = None
    baseline: str | None = None
    zero_init_residual: bool = False
    source: str = field(default="", compare=False)  # "file.yaml row 3", for messages

    @property
    def depth(self) -> int:
        return parse_model_name(self.model)[1]

    def identity(self, dataset_sha256: str) -> str:
        """A hash of everything that determines the run's results."""
        key = {"model": self.model, "shortcut": self.shortcut, "seed": self.seed,
               "zero_init_residual": self.zero_init_residual, "dataset": dataset_sha256,
               "recipe_version": RECIPE_VERSION,
               "recipe": {k: v for k, v in sorted(self.recipe.items()) if k not in NOT_IDENTITY}}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def run_dir_name(self, dataset_sha256: str) -> str:
        return f"{self.name}-s{self.seed}-{self.identity(dataset_sha256)[:10]}"

    def config(self) -> dict[str, Any]:
        """The resolved configuration, as recorded in meta.json."""
        return {"experiment": self.experiment, "name": self.name, "model": self.model,
                "shortcut": self.shortcut, "seed": self.seed, "profile": self.profile,
                "group": self.group, "note": self.note, "baseline": self.baseline, "zero_init_residual": self.zero_init_residual,
                "recipe_version": RECIPE_VERSION, "recipe": dict(self.recipe)}


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    profiles = yaml.safe_load(path.read_text())
    for name, recipe in profiles.items():
        missing, extra = set(RECIPE_FIELDS) - set(recipe), set(recipe) - set(RECIPE_FIELDS)
        if missing or extra:
            raise ExperimentError(f"{path}: profile {name!r}: missing fields {sorted(missing)}, "
                                  f"unknown fields {sorted(extra)}")
        for key, value in recipe.items():
            if (err := RECIPE_FIELDS[key][0](value)) is not None:
                raise ExperimentError(f"{path}: profile {name!r}: {key} {err}")
    return profiles


def load_experiment(path: str | Path, profile: str) -> list[RunSpec]:
    """Every run of one experiment file under one profile; ExperimentError on any mistake."""
    path = Path(path)
    profiles = load_profiles()
    if profile not in profiles:
        raise ExperimentError(f"unknown profile {profile!r}; valid profiles: {', '.join(profiles)}")
    if not path.exists():
        raise ExperimentError(f"{path}: no such experiment file")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list) or not doc["rows"]:
        raise ExperimentError(f"{path}: expected a mapping with a non-empty list under 'rows'")
    if unknown := set(doc) - FILE_KEYS:
        raise ExperimentError(f"{path}: unknown top-level key(s) {sorted(unknown)}; valid: {sorted(FILE_KEYS)}")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ExperimentError(f"{path}: 'defaults' must be a mapping of row keys")
    _check_keys(defaults, f"{path}: defaults")

    specs: list[RunSpec] = []
    for i, row in enumerate(doc["rows"], start=1):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise ExperimentError(f"{where}: expected a mapping like {{model: resnet20}}, got {row!r}")
        where += f" ({row.get('name') or row.get('model')})" if row.get("name") or row.get("model") else ""
        specs.extend(_expand_row({**defaults, **row}, profiles[profile], profile, path.stem, where))

    seen: dict[tuple[str, int], str] = {}
    for s in specs:
        if (s.name, s.seed) in seen:
            raise ExperimentError(f"{s.source}: run name {s.name!r} (seed {s.seed}) is already used by "
                                  f"{seen[(s.name, s.seed)]}; give one of them a distinct 'name'")
        seen[(s.name, s.seed)] = s.source
    return specs


def _check_keys(row: dict[str, Any], where: str) -> None:
    for key in row:
        if key not in ROW_KEYS and key not in RECIPE_FIELDS:
            raise ExperimentError(f"{where}: unknown key {key!r}; valid keys: "
                                  f"{', '.join(list(ROW_KEYS) + list(RECIPE_FIELDS))}")


def _expand_row(row: dict[str, Any], base: dict[str, Any], profile: str, experiment: str,
                where: str) -> list[RunSpec]:
    _check_keys(row, where)
    if "model" not in row:
        raise ExperimentError(f"{where}: missing key 'model'")
    try:
        family, _ = parse_model_name(row["model"])
        shortcut = resolve_shortcut(family, row.get("shortcut"))
    except ValueError as e:
        key = "shortcut" if "shortcut" in str(e) else "model"
        raise ExperimentError(f"{where}: key {key!r}: {e}") from e

    recipe = dict(base)
    for key in RECIPE_FIELDS:
        if key in row:
            if (err := RECIPE_FIELDS[key][0](row[key])) is not None:
                raise ExperimentError(f"{where}: key {key!r} {err}")
            recipe[key] = row[key]
    if any(m >= recipe["iterations"] for m in recipe["milestones"]):
        raise ExperimentError(f"{where}: key 'milestones' {recipe['milestones']} must lie below "
                              f"iterations ({recipe['iterations']})")
    for key in ("name", "group", "note", "baseline"):
        if key in row and not isinstance(row[key], str):
            raise ExperimentError(f"{where}: key {key!r} must be a string, got {row[key]!r}")
    if "baseline" in row and row["baseline"].count("/") != 1:
        raise ExperimentError(f"{where}: key 'baseline' must look like experiment/name, e.g. figure6/resnet56")
    for key in ("opt_in", "zero_init_residual"):
        if key in row and (err := _bool(row[key])) is not None:
            raise ExperimentError(f"{where}: key {key!r} {err}")

    if "seed" in row and "seeds" in row:
        raise ExperimentError(f"{where}: give 'seed' or 'seeds', not both")
    seeds = row.get("seeds", [row.get("seed", 1)])
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ExperimentError(f"{where}: key 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")

    name = row.get("name")
    if name is None:
        name = row["model"] + (f"-{shortcut}" if shortcut != family.default_shortcut else "")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ExperimentError(f"{where}: key 'name' must be a non-empty string without spaces or slashes")
    return [RunSpec(experiment=experiment, name=name, model=row["model"], shortcut=shortcut, seed=seed,
                    recipe=recipe, profile=profile, group=row.get("group"), opt_in=row.get("opt_in", False),
                    note=row.get("note"), baseline=row.get("baseline"), zero_init_residual=row.get("zero_init_residual", False),
                    source=where) for seed in seeds]
