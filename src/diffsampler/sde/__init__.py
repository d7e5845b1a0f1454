"""Reference process, time grids and trajectories of the learned SDE."""
from .grids import GRID_KINDS, make_grid
from .integrators import (INTEGRATORS, EulerMaruyama, ExponentialEuler, PicardMidpoint, RandomizedMidpoint, Simulation,
                          fisher_scale, make_integrator)
from .mean_free import MeanFreePinnedBrownian
from .reference import PinnedBrownian, gaussian_log_prob
from .trajectories import Trajectories, backprop_log_pf, backward_rollout, forward_rollout, log_mean_exp, policy_log_pf, replay

__all__ = ["GRID_KINDS", "make_grid", "PinnedBrownian", "MeanFreePinnedBrownian", "gaussian_log_prob", "Trajectories",
           "forward_rollout", "backward_rollout", "backprop_log_pf", "log_mean_exp", "policy_log_pf", "replay", "INTEGRATORS", "make_integrator", "Simulation",
           "EulerMaruyama", "ExponentialEuler", "RandomizedMidpoint", "PicardMidpoint", "fisher_scale"]
