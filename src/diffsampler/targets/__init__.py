"""Targets: unnormalised densities that carry their own ground truth (log Z, samples, modes)."""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from ..errors import UnknownTargetError
from .base import PHASES, EnergyCounter, Target
from .custom import EnergyFunctionTarget, from_energy
from .funnel import Funnel
from .gmm import GMM25, GMM40, GaussianMixture
from .manywell import ManyWell
from .particles import (DoubleWell4, LennardJones, MeanFreeGaussian, ParticleSymmetry, ParticleTarget,
                        data_file)

_REGISTRY: dict[str, Callable[[], Target]] = {
    "gmm40": GMM40,
    "gmm25": GMM25,
    "funnel": Funnel,
    "manywell32": lambda: ManyWell(32),
    "manywell64": lambda: ManyWell(64),
    "manywell128": lambda: ManyWell(128),
    "dw4": DoubleWell4,
    "lj13": lambda: LennardJones(13, pairs_counted=2),
    "lj55": lambda: LennardJones(55, pairs_counted=2),
    "lj13_bgflow": lambda: LennardJones(13, pairs_counted=1),
}


def _peptide(name: str) -> Callable[[], Target]:
    """Factory of a peptide target; OpenMM is imported only when the target is built."""
    def factory() -> Target:
        from .peptides import make
        return make(name)
    return factory


for _p in ("aldp", "ala3", "ala4"):
    for _v in ("", "_vacuum", "_ani2x"):
        _REGISTRY[_p + _v] = _peptide(_p + _v)


def register(name: str, factory: Callable[[], Target]) -> None:
    """Make `get(name)` build a target with `factory()`."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """The registry's target names (manywell<d> also works for any even d)."""
    return list(_REGISTRY)


def get(name: str | Target) -> Target:
    """A fresh target by registry name (``manywell{d}`` works for any even d)."""
    if isinstance(name, Target):
        return name
    if not isinstance(name, str):
        raise TypeError(f"target must be a name or a Target, got {type(name).__name__}")
    key = name.strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]()
    m = re.fullmatch(r"manywell(\d+)", key)
    if m:
        d = int(m.group(1))
        if d < 2 or d % 2:
            raise UnknownTargetError(f"unknown target {name!r}: manywell<d> needs an even dimension d >= 2 "
                                     f"(e.g. manywell32), got d = {d}")
        return ManyWell(d)
    close = difflib.get_close_matches(key, names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownTargetError(f"unknown target {name!r}.{hint} Known targets: {', '.join(names())}")


__all__ = ["Target", "EnergyCounter", "PHASES", "get", "names", "register", "from_energy",
           "EnergyFunctionTarget", "GMM40", "GMM25", "GaussianMixture", "Funnel", "ManyWell",
           "ParticleTarget", "ParticleSymmetry", "DoubleWell4", "LennardJones", "MeanFreeGaussian",
           "data_file"]
