"""Training objectives: TB, VarGrad, SubTB, DB, KL (PIS), maximum likelihood, adjoint matching."""
from ..errors import ConfigError
from .adjoint import AdjointMatching, adjoint_target, batch_averaged_target, bridge_states, mixed_target
from .balance import (DetailedBalance, Objective, SubTrajectoryBalance, TrajectoryBalance, VarGrad,
                      log_flows)
from .divergence import KLDivergence, MaximumLikelihood
from .orbit import (OrbitMaximumLikelihood, OrbitTarget, apply_group, augment, orbit_ml_loss, orbit_target,
                    sample_permutations, sample_rotations)

OBJECTIVES = {"tb": TrajectoryBalance, "vargrad": VarGrad, "subtb": SubTrajectoryBalance,
              "db": DetailedBalance, "kl": KLDivergence, "ml": MaximumLikelihood,
              "adjoint": AdjointMatching}


def make_objective(name: str, subtb_lambda: float = 2.0, *, adjoint_times: int = 4,
                   adjoint_weights: str = "uniform", adjoint_batch_average: bool = False,
                   adjoint_t_range: tuple[float, float] = (0.0, 1.0), adjoint_kappa: float = 0.0,
                   score_clip: float | None = 100.0) -> Objective:
    """The objective `name`, with its options (SubTB's lambda; adjoint matching's bridge times per
    sample, terminal weights 'uniform' | 'importance', batch Rao-Blackwellisation, bridge-time range,
    bridge-form mixing kappa, and score clip)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    if name == "subtb":
        return SubTrajectoryBalance(subtb_lambda)
    if name == "adjoint":
        return AdjointMatching(adjoint_times, adjoint_weights == "importance", score_clip, adjoint_batch_average,
                               adjoint_t_range, adjoint_kappa)
    return OBJECTIVES[name]()


__all__ = ["Objective", "TrajectoryBalance", "VarGrad", "DetailedBalance", "SubTrajectoryBalance",
           "KLDivergence", "MaximumLikelihood", "AdjointMatching", "adjoint_target", "batch_averaged_target",
           "mixed_target", "bridge_states",
           "OBJECTIVES", "make_objective", "log_flows",
           "OrbitMaximumLikelihood", "OrbitTarget", "orbit_target", "orbit_ml_loss", "sample_rotations",
           "sample_permutations", "apply_group", "augment"]
