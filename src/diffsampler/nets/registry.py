"""The drift registry and the options drift networks share.

A drift mu_theta(x, t) is registered with its options dataclass and its traits (`needs_score`:
whether it takes grad log R(x) as an input, so that a rollout pays one energy call per state).
Factories take (options, target, sigma) with sigma the reference's; `scale_by_sigma` makes the MLP
drifts work in units of sigma (mu = sigma NN(x / sigma, t))."""
from __future__ import annotations

from dataclasses import dataclass

from ..components import Registry, option

DRIFTS = Registry("drift")


@dataclass
class DriftOptions:
    """Options every drift network shares (flat keys width, depth, time_features, scale_by_sigma)."""
    width: int = option(128, "hidden width of the drift (and log-flow) networks", alias="width", low=1)
    depth: int = option(2, "hidden layers (EGNN: message-passing layers)", alias="depth", low=1)
    time_features: int = option(64, "harmonic time features", alias="time_features", low=1)
    scale_by_sigma: bool = option(True, "MLP drifts work in units of sigma: mu = sigma NN(x / sigma, t)",
                                  alias="scale_by_sigma")


@dataclass
class ScoreDriftOptions(DriftOptions):
    """Options of drifts that take the target's score (adds score_clip)."""
    score_clip: float = option(100.0, "clip of each score component fed to the drift", alias="score_clip",
                               low=0.0, low_open=True)


def make_drift(name: str, target, options=None, sigma: float | None = None, **keys):
    """Drift `name` for `target` with its options (an options object, or flat keys given as a dict
    or keywords); sigma: the reference's (default: the target's)."""
    e = DRIFTS.entry(name)
    if options is None or isinstance(options, dict):
        from ..components import options_from
        options = options_from(e.options, {**(options or {}), **keys})
    return e.factory(options, target, target.sigma if sigma is None else sigma)


__all__ = ["DRIFTS", "DriftOptions", "ScoreDriftOptions", "make_drift"]
