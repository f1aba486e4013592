"""The budget ladder (``ladder.yaml``): the paper's schedule compressed to fractions of its
64k iterations, shortest first, each rung a profile of ``profiles.yaml`` and, where one is
committed, the reference runs that measured it.

Read by the planner (``budget.py`` picks a rung) and by the reports (``reporting/reference.py``
draws a rung's reference; ``reporting/results.py`` names a rung in its warning), so it sits
at the bottom of planning and imports nothing of the package.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

LADDER_FILE = Path(__file__).with_name("ladder.yaml")
REPO = Path(__file__).resolve().parents[3]  # the checkout: references are relative to it


@dataclass(frozen=True)
class Rung:
    profile: str
    fraction: str            # of the paper's 64k iterations: "1/128" ... "1"
    reference: str | None = None  # committed run folders of this rung (fp32), relative to the repository
    reference_bf16: str | None = None  # the same nets trained in bf16 on a CPU (issue 46)

    def reference_for(self, precision: str | None) -> str | None:
        """The reference a run of this precision is compared with: bf16 runs with the bf16 one,
        fp32 (and TF32, a GPU's fp32) runs with the fp32 one."""
        return self.reference_bf16 if precision == "bf16" else self.reference

    @property
    def references(self) -> list[str]:
        return [r for r in (self.reference, self.reference_bf16) if r]

    @property
    def caption(self) -> str:
        return "the paper's schedule" if self.fraction == "1" else f"{self.fraction} of the paper's schedule"


@functools.lru_cache(maxsize=None)
def _read(path: Path, mtime_ns: int) -> tuple[Rung, ...]:
    return tuple(Rung(r["profile"], str(r["fraction"]), r.get("reference"), r.get("reference_bf16"))
                 for r in yaml.safe_load(path.read_text()))


def load_ladder(path: Path = LADDER_FILE) -> list[Rung]:
    """The rungs, shortest first. Parsed once per version of the file (its mtime is part of
    the cache key), not on every call: the planner and the reports ask many times."""
    return list(_read(path, path.stat().st_mtime_ns))


def rung_of(profile: str | None) -> Rung | None:
    return next((r for r in load_ladder() if r.profile == profile), None)
