"""A researcher's own blocks and families, from an experiment file's ``plugins:`` list.

    plugins:
      - plugins/scaled_residual.py     # a path, relative to the experiment file
      - mylab.blocks                   # or an importable module (read as one file)
    rows:
      - {model: scaled56, seeds: [1, 2, 3]}

A plug-in is Python that registers through the registry the built-ins use
(``registry.register_block``, ``registry.register_family``); its names then validate, list,
count parameters and fail with the valid choices like built-in names. Running an experiment
file with ``plugins:`` runs that code, by the user's choice; nothing else the suite reads
(data, checkpoints, results, reports) runs code, and the reports never import plug-ins.

What a run records of its plug-in (``PluginSource``): the name, the sha256 and the text of each
plug-in that registered its family or block. The sha256 is part of the run's identity (an
edited plug-in is a new run), meta.json names the file and its hash, the run folder keeps a
copy of the source, and the text travels with the job, so a pool worker or a Ray node without
the file imports exactly what the driver validated (its hash checked there).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from .names import BLOCK_CONVS, BLOCK_ORIGINS, FAMILIES, plugin_origin

# The registry (and torch) is imported on first use, as the package's builders are (PEP 562):
# the experiment validator and the reports import this module for ``PluginSource`` alone.


class PluginError(ValueError):
    """A plug-in that cannot be used: missing, failing to import, clashing, or building a
    network that is not a CIFAR-10 classifier. Raised before any data loads."""


@dataclass(frozen=True)
class PluginSource:
    """One plug-in's code as runs record it."""

    name: str     # the entry as the experiment file gives it (a path or a module name)
    path: str     # the file read, absolute: for messages and tracebacks
    sha256: str   # of the text: part of the identity of every run of its models
    text: str     # the source: it travels with the job to workers that lack the file

    @property
    def origin(self) -> str:
        """What its registrations record (``names.plugin_origin``): its content, not its path."""
        return f"sha256:{self.sha256}"

    @property
    def label(self) -> str:
        return f"plug-in {self.path} (sha256 {self.sha256[:12]})"

    @property
    def file_name(self) -> str:
        """The name of the copy kept in a run folder (``plugin-<file_name>``)."""
        return Path(self.path).name

    def record(self) -> dict[str, str]:
        """What meta.json and the identity say of it."""
        return {"name": self.name, "file": self.file_name, "sha256": self.sha256}


_LOADED: dict[str, PluginSource] = {}  # sha256 -> the plug-in imported in this process
_PATHS: dict[str, str] = {}            # a file read -> the sha256 of its text when last loaded


def read_plugin(entry: str, base: Path) -> PluginSource:
    """The plug-in an experiment file names: a path ending in .py (relative to ``base``, the
    experiment file's folder) or an importable module name."""
    if not isinstance(entry, str) or not entry.strip():
        raise PluginError(f"plugins: each entry is a path to a .py file or a module name, got {entry!r}")
    if entry.endswith(".py") or "/" in entry or "\\" in entry:
        path = (base / entry).resolve()
        if not path.is_file():
            raise PluginError(f"plug-in {entry!r}: no such file {path} (paths are relative to the experiment file)")
    else:
        try:
            spec = importlib.util.find_spec(entry)
        except (ImportError, ValueError) as e:
            raise PluginError(f"plug-in {entry!r}: {type(e).__name__}: {e}") from None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise PluginError(f"plug-in {entry!r}: no importable module of that name (give a path ending in .py, "
                              "relative to the experiment file, or a module on the Python path)")
        path = Path(spec.origin).resolve()
    text = path.read_text()
    return PluginSource(entry, str(path), hashlib.sha256(text.encode()).hexdigest(), text)


def load_plugin(src: PluginSource) -> None:
    """Import a plug-in's text in this process, once (by sha256): its hash checked first, what
    it registers recorded as its own, then every family it registered built and run on one
    3x32x32 image (on the meta device: no compute) to check it gives 10 logits. On any failure
    what it registered is withdrawn and PluginError names the file (and line)."""
    if (old := _PATHS.get(src.path)) is not None and old != src.sha256 and old in _LOADED:
        _withdraw_origin(_LOADED.pop(old).origin)  # an edited file replaces its old version in this process
    _PATHS[src.path] = src.sha256
    if src.sha256 in _LOADED:  # the same text, from this path or another: one plug-in
        return
    if hashlib.sha256(src.text.encode()).hexdigest() != src.sha256:
        raise PluginError(f"plug-in {src.path}: its text does not match its recorded sha256 {src.sha256[:12]}...")
    from .registry import BLOCKS

    module = types.ModuleType(f"resnet_exp_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', Path(src.path).stem)}_{src.sha256[:12]}")
    module.__file__ = src.path
    families, blocks = set(FAMILIES), set(BLOCKS)
    sys.modules[module.__name__] = module  # dataclasses and pickling look a class's module up here
    try:
        with plugin_origin(src.origin, src.label):
            exec(compile(src.text, src.path, "exec"), module.__dict__)  # noqa: S102 (the user's own plug-in)
        for key in set(FAMILIES) - families:
            _check_family(key)
    except PluginError as e:
        _withdraw_origin(src.origin, module.__name__)
        raise PluginError(f"plug-in {src.path}: {e}") from None
    except SyntaxError as e:
        _withdraw_origin(src.origin, module.__name__)
        raise PluginError(f"plug-in {src.path}, line {e.lineno}: {e.msg}") from None
    except Exception as e:
        _withdraw_origin(src.origin, module.__name__)
        lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == src.path]
        where = f", line {lines[-1]}" if lines else ""
        raise PluginError(f"plug-in {src.path}{where}: {type(e).__name__}: {e}") from None
    if not set(FAMILIES) - families and not set(BLOCKS) - blocks:
        _withdraw_origin(src.origin, module.__name__)
        raise PluginError(f"plug-in {src.path} registers nothing: call register_family (and register_block) "
                          "from resnet_exp.models (docs/plugins.md)")
    _LOADED[src.sha256] = src


def _check_family(key: str) -> None:
    import torch

    from .registry import build_model

    family = FAMILIES[key]
    name = family.name(min(family.listed_depths))
    try:
        with torch.device("meta"):
            model = build_model(name)
            if not isinstance(model, torch.nn.Module):
                raise PluginError(f"{name}: its builder returned {type(model).__name__}, not a torch.nn.Module")
            out = model.eval()(torch.empty(2, 3, 32, 32))
    except PluginError:
        raise
    except Exception as e:
        raise PluginError(f"{name} does not build and run on a batch of 3x32x32 images: "
                          f"{type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"{name} maps a batch of 2 images of 3x32x32 to {shape}, not (2, 10): "
                          "a CIFAR-10 model gives 10 logits per image")


def _withdraw_origin(origin: str, module: str | None = None) -> None:
    """Unregister what a plug-in registered (all of it carries its origin), and its module."""
    from .registry import BLOCKS

    if module:
        sys.modules.pop(module, None)
    for key in [k for k, f in FAMILIES.items() if f.origin == origin]:
        del FAMILIES[key]
    for name in [n for n, o in BLOCK_ORIGINS.items() if o == origin]:
        BLOCKS.pop(name, None)
        BLOCK_CONVS.pop(name, None)
        BLOCK_ORIGINS.pop(name, None)


def load_plugins(entries: list[str], base: Path) -> list[PluginSource]:
    """Read and import an experiment file's plug-ins, in order."""
    sources = [read_plugin(e, base) for e in entries]
    for src in sources:
        load_plugin(src)
    return sources


def ensure_plugins(sources: tuple[PluginSource, ...]) -> None:
    """In a worker (any executor): import the plug-ins a run needs, from the text that came with
    the job, if this process has not yet. Idempotent."""
    for src in sources:
        load_plugin(src)


def sources_of(model: str, loaded: list[PluginSource]) -> tuple[PluginSource, ...]:
    """The plug-ins a model's family and block came from (none for a built-in model)."""
    from .names import parse_model_name

    family, _ = parse_model_name(model)
    origins = {family.origin, BLOCK_ORIGINS.get(family.block or "", "")}
    return tuple(s for s in loaded if s.origin in origins)
