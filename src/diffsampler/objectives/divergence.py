"""Objectives that are not balance conditions.

KL (PIS, Zhang & Chen 2022): minimise E_fwd[log pi_fwd - log pi_bwd - log R] = log Z - ELBO by
differentiating through the simulated states (reparametrisation), so it needs pathwise rollouts
and a differentiable energy.
Maximum likelihood on backward trajectories (SGDS warm-up; forward KL on path space): maximise
E_{x ~ data, bwd}[sum_n log pi_fwd], i.e. loss = -mean(sum_n log pi_fwd).
"""
from __future__ import annotations

from .base import OBJECTIVES, Objective
from .bounded import bounded_log_reward


@OBJECTIVES.register("kl")
class KLDivergence(Objective):
    """Reverse KL (PIS): mean of sum log pi_fwd - sum log pi_bwd - log R(x_N) on pathwise forward rollouts
    (= log Z - ELBO); its gradient flows through the states."""
    name = "kl"
    pathwise = True
    on_policy_only = True
    fits_log_Z = False

    def __call__(self, traj, sampler):
        return (traj.log_pf.sum(1) - traj.log_pb.sum(1) - bounded_log_reward(traj.log_r)).mean()


@OBJECTIVES.register("ml")
class MaximumLikelihood(Objective):
    """Maximum likelihood: -mean of sum log pi_fwd on backward trajectories from samples (forward KL on
    path space, up to a constant)."""
    name = "ml"
    off_policy_only = True
    fits_log_Z = False

    def __call__(self, traj, sampler):
        return -traj.log_pf.sum(1).mean()
