"""Integrators of the learned SDE with importance weights that are exact for their own kernels: one
module per integrator, each registered in INTEGRATORS (`base.py` states the weights they share)."""
from __future__ import annotations

from ...components import discover
from ...errors import ConfigError
from .base import INTEGRATORS, DriftField, Simulation, check_grid, finish
from .euler import EulerMaruyama
from .exponential import BridgeClock, ExponentialEuler, fisher_scale
from .flow import ProbabilityFlowHeun, RandomizedMidpointODE
from .midpoint import RandomizedMidpoint
from .picard import PicardMidpoint


discover(__name__, __path__)   # every integrator module registers itself (base.py)


def nfe_for(integrator, steps: int) -> int:
    """Drift evaluations per sample when `integrator` runs `steps` grid steps."""
    f = getattr(integrator, "nfe_for_steps", None)
    return int(f(steps)) if f is not None else int(round(steps * integrator.nfe_per_step))


def make_integrator(spec):
    """An integrator from its name (see INTEGRATORS, default options) or an integrator object
    (returned as is)."""
    if hasattr(spec, "simulate"):
        return spec
    if spec not in INTEGRATORS:
        raise ConfigError(f"unknown integrator {spec!r}; expected one of {sorted(INTEGRATORS.names())}")
    return INTEGRATORS.build(spec)


__all__ = ["INTEGRATORS", "Simulation", "DriftField", "EulerMaruyama", "ExponentialEuler", "RandomizedMidpoint",
           "PicardMidpoint", "ProbabilityFlowHeun", "RandomizedMidpointODE", "BridgeClock", "fisher_scale",
           "make_integrator", "nfe_for", "check_grid", "finish"]
