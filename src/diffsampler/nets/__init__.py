"""Networks: time embedding, drifts (MLP / Langevin-parametrised), log-flow; `make_drift` builds a
drift by name (`DRIFTS` maps names to factories f(target, width, depth, time_features, score_clip, scale=1.0,
sigma=None); sigma is the reference's, scale the unit the MLP drifts work in)."""
from .drift import LangevinDrift, MLPDrift
from .egnn import EGNNDrift, EGNNFeatures, EGNNLayer
from .flow import LogFlow
from .optimal import OptimalDrift
from .time_embedding import HarmonicEmbedding, mlp


def _egnn(target, width: int, depth: int, tf: int, clip: float, langevin: bool) -> EGNNDrift:
    n, D = getattr(target, "n_particles", 0), getattr(target, "spatial_dim", 0)
    if not (n and D):
        raise ValueError(f"the EGNN drift needs a particle target (n_particles, spatial_dim); "
                         f"{getattr(target, 'name', target)!r} is not one")
    return EGNNDrift(n, D, width, depth, tf, clip, langevin=langevin)


DRIFTS = {
    "langevin": lambda target, w, d, tf, clip, scale=1.0, sigma=None: LangevinDrift(target.dim, w, d, tf, clip, scale),
    # NN_2(t) in R^d: one Langevin coefficient per coordinate
    "langevin_per_dim": lambda target, w, d, tf, clip, scale=1.0, sigma=None: LangevinDrift(target.dim, w, d, tf, clip, scale,
                                                                               per_dimension=True),
    "mlp": lambda target, w, d, tf, clip, scale=1.0, sigma=None: MLPDrift(target.dim, w, d, tf, scale),
    # particle targets: equivariant, CoM-free; "egnn" needs no score (SGDS's LJ budgets), the
    # Langevin variant adds NN(t) * P clip(grad log R) (one energy call per state).
    "egnn": lambda target, w, d, tf, clip, scale=1.0, sigma=None: _egnn(target, w, d, tf, clip, langevin=False),
    "egnn_langevin": lambda target, w, d, tf, clip, scale=1.0, sigma=None: _egnn(target, w, d, tf, clip,
                                                                                  langevin=True),
    # the target's exact Föllmer drift (no parameters): the discretisation floor of a grid
    "optimal": lambda target, w, d, tf, clip, scale=1.0, sigma=None: OptimalDrift(
        target, target.sigma if sigma is None else sigma),
}


def make_drift(name: str, target, width: int, depth: int, time_features: int, score_clip: float,
               scale: float = 1.0, sigma: float | None = None):
    """Build drift `name`; `scale`: the unit the MLP drifts work in (the reference sigma, or 1);
    `sigma`: the reference's sigma (default: the target's)."""
    if name not in DRIFTS:
        raise ValueError(f"unknown drift {name!r}; expected one of {sorted(DRIFTS)}")
    return DRIFTS[name](target, width, depth, time_features, score_clip, scale=scale, sigma=sigma)


__all__ = ["HarmonicEmbedding", "mlp", "MLPDrift", "LangevinDrift", "LogFlow", "DRIFTS", "make_drift",
           "EGNNDrift", "EGNNFeatures", "EGNNLayer", "OptimalDrift"]
