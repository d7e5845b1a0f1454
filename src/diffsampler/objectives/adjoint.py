"""Reciprocal adjoint matching: regress the drift onto a target built from terminal samples and the
energy gradient there (Adjoint Sampling, Havens et al., ICML 2025; adjoint matching, Domingo-Enrich
et al., ICLR 2025).

For the pinned-Brownian reference (X_0 = 0, dX = sigma dW, so X_1 ~ N(0, sigma^2 I)) the reference is
memoryless and its lean adjoint is constant in time, so the optimal (Föllmer) drift is a conditional
expectation over the terminal state Y = X_1 of the optimal process:

    mu*(x, t) = E[ Y + sigma^2 grad log R(Y) | X_t = x ],   Y ~ p,   X_t | Y ~ N(t Y, sigma^2 t (1 - t) I)

(the bridge of the reference; `Target.optimal_drift` states the same identity). The loss is the
regression of mu_theta on that target, with Y the sampler's own terminal states (the reciprocal
projection of its path measure), M bridge times t ~ U(t_min, t_max) (default U(0, 1)) per Y:

    L = E_{Y, t, X_t} w(Y) || mu_theta(X_t, t) - (Y + sigma^2 clip(grad log R(Y))) ||^2 / sigma^2.

With w = 1 the exact sampler is a fixed point (AS's iteration). With `importance=True` the terminal
states carry self-normalised trajectory weights w_i ∝ exp(log w_i) (batch mean 1): reweighted, a
forward trajectory's terminal state is distributed as p, so the regression aims at mu* itself, not
only at a fixed point, at the price of the weights' variance (use it when the ESS is not small).

Lower-variance target (`kappa > 0`). Given X_t = x the bridge form (Y - X_t) / (1 - t) has the same
conditional mean mu*(x, t) (integrate the posterior's score to zero: the Tweedie / denoising form, as
against the target-score form above; De Bortoli et al., "Target score matching", 2024, compare the
two), so any mixture
    goal_lambda = lambda(t) (Y + sigma^2 grad log R(Y)) + (1 - lambda(t)) (Y - X_t) / (1 - t)
regresses onto the same mu*. The score form's variance is roughly flat in t and large for stiff
targets; the bridge form's grows like 1 / (1 - t). Weighting them by inverse variance gives
    lambda(t) = 1 / (1 + kappa (1 - t)),
kappa = (variance of the score form) / ((1 - t) x variance of the bridge form); kappa = 0 is the plain
score form (Adjoint Sampling's target), and lambda -> 1 as t -> 1 keeps the bridge term's variance
finite there. On DW-4 (sigma = 1) the posterior variances measured by MALA give kappa ~ 40 and a
7-12x lower target variance for 0.3 <= t <= 0.9; on LJ-13 kappa ~ 7.5 (docs/RESULTS.md, DW-4; docs/notebook/2026-12-04-reliable-optimal-drift-and-adjoint-kappa.md).
Meant for `importance=True`: with uniform weights the bridge form's conditional mean under the
sampler's own process is its own drift, so only the lambda-weighted score part pulls towards the
target (same fixed point, smaller steps).

Rao-Blackwellised over the batch (`batch_average=True`): a state X_t drawn from the bridge of Y_i is
equally likely to have come from any Y_j of the batch a priori, so given X_t = x and the batch, the
index I that generated it has posterior P(I = j) ∝ w_j N(x; t Y_j, sigma^2 t (1 - t) I). Replacing the
target goal_I and the weight w_I by their conditional expectations given (x, batch),

    goal_hat(x) = sum_j w_j N_j goal_j / sum_j w_j N_j,   w_hat(x) = sum_j N_j w_j / sum_j N_j,

leaves the expected gradient unchanged (tower property; the same argument as the orbit estimator's,
seed 002, with the batch in place of the group orbit, the generating sample always included) and lowers its
variance where the bridge is wide: at small t the average runs over most of the batch, near t = 1
it reduces to the sample's own target. No extra energy calls; a (M B) x B matrix of distances.

Energy calls per batch of B terminal states: none at Y when the trainer's rollout returned the
gradient there with log R (`needs_terminal_score`; else B), plus, for a drift that takes the target
score as input (Langevin drifts), B M (the score at the bridge states). The rollout that made
the terminal states needs no graph: the loss only differentiates the drift at the bridge states. With
`trajectory_reuse=R` the trainer replays stored batches as drawn (terminal states, gradients, and the
log-weights of the policy that drew them), so each energy call serves R + 1 updates, as in Adjoint
Sampling's replay buffer.
On the centre-of-mass-free space of particle targets, states, targets and residuals are projected
by the reference.
"""
from __future__ import annotations

import torch

from dataclasses import dataclass

from ..components import option
from ..errors import ConfigError
from ..sde import Trajectories
from .base import OBJECTIVES, Objective


def bridge_states(reference, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """X_t ~ N(t y, sigma^2 t (1 - t) I) on the reference's state space; y (B, d), t (B,) -> (B, d)."""
    std = reference.sigma * (t * (1 - t)).clamp_min(0).sqrt()
    return t[:, None] * y + std[:, None] * reference.noise_like(y)


def adjoint_target(reference, y: torch.Tensor, score_y: torch.Tensor, score_clip: float | None = None) -> torch.Tensor:
    """Y + sigma^2 grad log R(Y) (B, d), the regression target whose conditional mean given X_t is mu*.
    score_clip: clamp each component of the score (as the Langevin drift does) against rare huge gradients."""
    if score_clip is not None:
        score_y = score_y.clamp(-score_clip, score_clip)
    return reference.project(y + reference.sigma ** 2 * score_y)


def mixed_target(reference, goal: torch.Tensor, y: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 kappa: float) -> torch.Tensor:
    """lambda(t) goal + (1 - lambda(t)) (y - x_t) / (1 - t), lambda(t) = 1 / (1 + kappa (1 - t)) (see module);
    goal, y, x_t (Q, d), t (Q,) -> (Q, d). Same conditional mean given x_t as goal; kappa = 0: goal."""
    if kappa == 0:
        return goal
    one_minus = (1 - t)[:, None]
    lam = 1 / (1 + kappa * one_minus)
    # (1 - lam) / (1 - t) = kappa lam: finite at t = 1
    return lam * goal + kappa * lam * reference.project(y - x_t)


def batch_averaged_target(reference, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, goal: torch.Tensor,
                          w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditional expectations of the target and weight of the sample that generated each bridge
    state, given the state and the batch (see module): x_t (Q, d), t (Q,), y and goal (B, d), w (B,)
    with mean 1 -> goal_hat (Q, d), w_hat (Q,)."""
    var = (reference.sigma ** 2 * t * (1 - t)).clamp_min(torch.finfo(t.dtype).tiny)
    # ||x_q - t_q y_j||^2 = ||x_q||^2 - 2 t_q x_q.y_j + t_q^2 ||y_j||^2: one matmul, no (Q, B, d) tensor
    d2 = ((x_t ** 2).sum(-1)[:, None] - 2 * t[:, None] * (x_t @ y.T)
          + (t ** 2)[:, None] * (y ** 2).sum(-1)[None]).clamp_min(0)            # (Q, B)
    log_n = -0.5 * d2 / var[:, None]
    log_w = torch.log(w.clamp_min(torch.finfo(w.dtype).tiny))
    goal_hat = torch.softmax(log_n + log_w, 1) @ goal
    w_hat = (torch.softmax(log_n, 1) * w).sum(1)
    return goal_hat, w_hat


@dataclass
class AdjointOptions:
    """Adjoint matching's options (flat keys adjoint_*, score_clip)."""
    times: int = option(4, "bridge times t ~ U(t_min, t_max) per terminal sample", alias="adjoint_times", low=1)
    t_min: float = option(0.0, "lower end of the bridge times (the minimiser is the same mu*)", alias="adjoint_t_min",
                          low=0.0, high=1.0)
    t_max: float = option(1.0, "upper end of the bridge times", alias="adjoint_t_max", low=0.0, high=1.0,
                          low_open=True)
    weights: str = option("uniform", "uniform (Adjoint Sampling's fixed point) | importance (self-normalised "
                          "trajectory weights: regress on mu* itself)", alias="adjoint_weights",
                          choices=("uniform", "importance"))
    kappa: float = option(0.0, "mix the bridge form (Y - X_t)/(1 - t) into the target, weight 1 - 1/(1 + kappa "
                          "(1 - t)); same minimiser, lower variance (0: off)", alias="adjoint_kappa", low=0.0)
    batch_average: bool = option(False, "Rao-Blackwellise each bridge state's target over the batch (posterior "
                                 "of the sample that generated it); no extra calls", alias="adjoint_batch_average")
    score_clip: float = option(100.0, "clip of each score component fed to the drift", alias="score_clip",
                               low=0.0, low_open=True)

    def __post_init__(self) -> None:
        if self.kappa and self.batch_average:
            raise ConfigError(f"config key 'adjoint_kappa' = {self.kappa!r}: must be 0 with adjoint_batch_average=true "
                              "(the two are not combined)")
        if not self.t_min < self.t_max:
            raise ConfigError(f"config key 'adjoint_t_max' = {self.t_max!r}: must be > adjoint_t_min = {self.t_min!r}")


@OBJECTIVES.register("adjoint", AdjointOptions)
class AdjointMatching(Objective):
    """Reciprocal adjoint matching on the terminal states of a batch of trajectories (see module)."""

    name = "adjoint"
    fits_log_Z = False
    differentiates_rollout = False
    needs_terminal_score = True     # the rollout returns grad log R(x_N) with log R(x_N): no extra call

    def __init__(self, times: int | AdjointOptions = 4, importance: bool = False, score_clip: float | None = 100.0,
                 batch_average: bool = False, t_range: tuple[float, float] = (0.0, 1.0), kappa: float = 0.0) -> None:
        if isinstance(times, AdjointOptions):
            o = times
            times, importance, score_clip = o.times, o.weights == "importance", o.score_clip
            batch_average, t_range, kappa = o.batch_average, (o.t_min, o.t_max), o.kappa
        if times < 1:
            raise ValueError(f"adjoint matching needs >= 1 bridge time per sample, got {times}")
        if not 0 <= t_range[0] < t_range[1] <= 1:
            raise ValueError(f"adjoint matching bridge times: need 0 <= t_min < t_max <= 1, got {t_range}")
        if not kappa >= 0:
            raise ValueError(f"adjoint matching: kappa (mixing of the bridge-form target) must be >= 0, got {kappa}")
        if kappa and batch_average:
            raise ValueError("adjoint matching: the bridge-form mixing (kappa > 0) is not combined with batch_average")
        self.t_range, self.kappa = (float(t_range[0]), float(t_range[1])), float(kappa)
        self.times, self.importance, self.score_clip = int(times), bool(importance), score_clip
        self.batch_average = bool(batch_average)

    def weights(self, traj: Trajectories) -> torch.Tensor:
        """(B,) weights with mean 1: uniform, or self-normalised exp(log w) of the trajectories."""
        B = traj.log_r.shape[0]
        if not self.importance:
            return traj.log_r.new_ones(B)
        return torch.softmax(traj.log_w.detach(), 0) * B

    def __call__(self, traj: Trajectories, sampler) -> torch.Tensor:
        target, drift, ref = sampler.target, sampler.drift, sampler.reference
        y = traj.terminal.detach()
        B, M = y.shape[0], self.times
        score_y = traj.terminal_score
        if score_y is None:   # trajectories from elsewhere (a backward batch, a test): one call per sample
            _, score_y = target.log_reward_and_score(y)
        goal = adjoint_target(ref, y, score_y, self.score_clip)                  # (B, d)
        w = self.weights(traj)
        lo, hi = self.t_range
        t = lo + (hi - lo) * torch.rand(M * B, dtype=y.dtype, device=y.device)
        x_t = bridge_states(ref, y.repeat(M, 1), t)                              # (M B, d), sample-minor
        if self.batch_average:
            goal_x, w_x = batch_averaged_target(ref, x_t, t, y, goal, w)
        else:
            goal_x = mixed_target(ref, goal.repeat(M, 1), y.repeat(M, 1), x_t, t, self.kappa)
            w_x = w.repeat(M)
        score = target.log_reward_and_score(x_t)[1] if drift.needs_score else None
        mu = ref.project(drift(x_t, t, score))
        per_state = ((mu - goal_x) ** 2).sum(-1) / ref.sigma ** 2                # (M B,)
        return (w_x * per_state).mean()


__all__ = ["AdjointMatching", "adjoint_target", "batch_averaged_target", "bridge_states", "mixed_target"]
