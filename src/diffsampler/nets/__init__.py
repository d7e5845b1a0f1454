"""Networks: time embedding, drifts (MLP / Langevin-parametrised), log-flow; `make_drift` builds a
drift by name (`DRIFTS` maps names to factories f(dim, width, depth, time_features, score_clip))."""
from .drift import LangevinDrift, MLPDrift
from .flow import LogFlow
from .time_embedding import HarmonicEmbedding, mlp

DRIFTS = {
    "langevin": lambda target, w, d, tf, clip: LangevinDrift(target.dim, w, d, tf, clip),
    "mlp": lambda target, w, d, tf, clip: MLPDrift(target.dim, w, d, tf),
}


def make_drift(name: str, target, width: int, depth: int, time_features: int, score_clip: float):
    if name not in DRIFTS:
        raise ValueError(f"unknown drift {name!r}; expected one of {sorted(DRIFTS)}")
    return DRIFTS[name](target, width, depth, time_features, score_clip)


__all__ = ["HarmonicEmbedding", "mlp", "MLPDrift", "LangevinDrift", "LogFlow", "DRIFTS", "make_drift"]
