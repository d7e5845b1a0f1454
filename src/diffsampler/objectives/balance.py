"""Off-policy balance objectives on trajectories (any behaviour policy: forward with exploration,
or backward from replayed samples). All take a `Trajectories` batch and the sampler.

References: trajectory balance (Malkin et al., 2022), log-variance / VarGrad (Richter et al., 2020),
detailed and sub-trajectory balance (Bengio et al., 2023; Madan et al., 2023), and their
continuous-time limits (Berner et al., "From discrete-time policies to continuous-time diffusion
samplers"). With delta = log pi_fwd - log pi_bwd per step:
    TB:      (log Z + sum_n delta_n - log R(x_N))^2
    VarGrad: Var_batch(sum_n delta_n - log R(x_N))          (log Z replaced by the batch mean)
    DB:      sum_n (log F_n(x_n) + delta_n - log F_{n+1}(x_{n+1}))^2
    SubTB:   sum_{i<j} lam^{j-i} (log F_i + sum_{i<=n<j} delta_n - log F_j)^2 / sum_{i<j} lam^{j-i}
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from ..components import option
from ..sde import Trajectories
from .base import OBJECTIVES, Objective
from .bounded import bounded_log_reward, robust_square


@OBJECTIVES.register("tb")
class TrajectoryBalance(Objective):
    """TB: mean of (log Z + sum log pi_fwd - sum log pi_bwd - log R(x_N))^2 over the batch (log R bounded)."""
    name = "tb"

    def __call__(self, traj, sampler):
        res = sampler.log_Z + traj.log_pf.sum(1) - traj.log_pb.sum(1) - bounded_log_reward(traj.log_r)
        return robust_square(res).mean()


@OBJECTIVES.register("vargrad")
class VarGrad(Objective):
    """Log-variance loss; also keeps sampler.log_Z at the batch estimate (no gradient)."""

    name = "vargrad"
    sets_log_Z = True

    def __call__(self, traj, sampler):
        neg = traj.log_pf.sum(1) - traj.log_pb.sum(1) - bounded_log_reward(traj.log_r)
        with torch.no_grad():
            sampler.log_Z.copy_(-neg.mean())
        return robust_square(neg - neg.mean()).mean()


def log_flows(traj: Trajectories, sampler) -> torch.Tensor:
    """Forward-looking log F_n(x_n), (B, N+1); see `nets.flow`."""
    if sampler.flow is None:
        raise ValueError("this objective needs a log-flow network (sampler built with flow=True)")
    if traj.log_r_steps is None:
        raise ValueError("this objective needs log R at every state (rollout with need_step_rewards)")
    B, N1, d = traj.x.shape
    x = traj.x[:, 1:-1].reshape(-1, d).detach()
    t = traj.t[:, 1:-1].reshape(-1)
    nn_part = sampler.flow(x, t).view(B, N1 - 2)
    tt = traj.t[:, 1:-1]
    prior = sampler.reference.marginal_log_prob(traj.x[:, 1:-1].detach(), tt)
    log_r = bounded_log_reward(traj.log_r_steps)
    inner = nn_part + (1 - tt) * prior + tt * log_r[:, 1:-1]
    logz = sampler.log_Z.expand(B, 1)
    return torch.cat([logz, inner, log_r[:, -1:]], 1)


@OBJECTIVES.register("db")
class DetailedBalance(Objective):
    """DB: per-step residuals log F_n + log pi_fwd - log pi_bwd - log F_{n+1} with the learned log-flow,
    squared, summed over steps, averaged over the batch."""
    name = "db"
    needs_flow = True

    def __call__(self, traj, sampler):
        f = log_flows(traj, sampler)
        res = f[:, :-1] + traj.log_pf - traj.log_pb - f[:, 1:]
        return robust_square(res).sum(1).mean()


@dataclass
class SubTBOptions:
    """SubTB's option: the weight base lambda (flat key subtb_lambda)."""
    lam: float = option(2.0, "SubTB: weight lambda^(j - i) of the sub-trajectory (i, j)", alias="subtb_lambda",
                        low=0.0, low_open=True)


@OBJECTIVES.register("subtb", SubTBOptions)
class SubTrajectoryBalance(Objective):
    """lambda-weighted SubTB over all O(N^2) sub-trajectories; works for any grid length."""

    name = "subtb"
    needs_flow = True

    def __init__(self, options: SubTBOptions | float = 2.0) -> None:
        self.lam = float(options.lam if isinstance(options, SubTBOptions) else options)

    def __call__(self, traj, sampler):
        f = log_flows(traj, sampler)  # (B, N+1)
        delta = traj.log_pf - traj.log_pb
        c = torch.cat([torch.zeros_like(delta[:, :1]), delta.cumsum(1)], 1)  # (B, N+1)
        # residual(i, j) = f_i + c_j - c_i - f_j for i < j
        a = f - c
        res = a[:, :, None] - a[:, None, :]  # (B, N+1, N+1) indexed [i, j]
        N1 = f.shape[1]
        idx = torch.arange(N1, device=f.device)
        span = (idx[None, :] - idx[:, None]).to(f.dtype)  # j - i
        mask = span > 0
        w = torch.where(mask, self.lam ** span.clamp(min=0), torch.zeros_like(span))
        w = w / w.sum()
        return (robust_square(res) * w).sum((1, 2)).mean()
