"""Networks: time embedding, drifts (MLP / Langevin-parametrised / EGNN / the exact optimum), log-flow.

Drifts register themselves in DRIFTS (nets/registry.py) with their options and whether they take
the target's score as input (`needs_score`: one energy call per state of a rollout);
`make_drift(name, target, options, sigma)` builds one."""
from ..components import discover
from .drift import LangevinDrift, MLPDrift
from .egnn import EGNNDrift, EGNNFeatures, EGNNLayer
from .flow import LogFlow
from .optimal import OptimalDrift
from .registry import DRIFTS, DriftOptions, ScoreDriftOptions, make_drift
from .time_embedding import HarmonicEmbedding, mlp

discover(__name__, __path__)   # every drift module registers itself (nets/registry.py)

__all__ = ["HarmonicEmbedding", "mlp", "MLPDrift", "LangevinDrift", "LogFlow", "DRIFTS", "DriftOptions",
           "ScoreDriftOptions", "make_drift", "EGNNDrift", "EGNNFeatures", "EGNNLayer", "OptimalDrift"]
