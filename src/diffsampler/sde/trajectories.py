"""Trajectories of the learned SDE and their per-step log-densities.

Time runs 0 -> 1 from the reference's start (x_0 = 0) to the target. Discretised forward policy
(Euler-Maruyama) and backward policy (exact Brownian bridge of the reference):
    pi_fwd(x_{n+1} | x_n) = N(x_{n+1}; x_n + mu_theta(x_n, t_n) dt_n, sigma^2 dt_n I),
    pi_bwd(x_n | x_{n+1}) = N(x_n; (t_n/t_{n+1}) x_{n+1}, sigma^2 t_n dt_n / t_{n+1} I)  (0 for n = 0).
Importance log-weight of a trajectory (Radon-Nikodym derivative of target path measure w.r.t. the
sampler's, up to Z):
    log w = log R(x_N) + sum_n log pi_bwd - sum_n log pi_fwd,
so E_fwd[log w] = ELBO <= log Z <= E_bwd[log w] = EUBO (backward trajectories from true samples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch



@dataclass
class Trajectories:
    """A batch of B trajectories on N steps.

    x: (B, N+1, d) states (detached unless produced by a pathwise rollout);
    t: (B, N+1) time grid; log_pf, log_pb: (B, N) per-step forward / backward log-densities
    (log_pf carries gradients w.r.t. the drift parameters); log_r: (B,) log R(x_N), the *true*
    reward; log_r_steps: (B, N+1) log R at every state, when it was computed (else None);
    score: (B, N, d) the target score grad log R at x_0 .. x_{N-1}, when the drift used it (else
    None). States, grid, scores and rewards are all a replay needs to recompute log_pf under a
    newer drift without a single energy call (`replay`). terminal_score: (B, d) grad log R(x_N), when
    the rollout was asked for it (adjoint matching; the same call as log R(x_N), so it costs nothing).
    """

    x: torch.Tensor
    t: torch.Tensor
    log_pf: torch.Tensor
    log_pb: torch.Tensor
    log_r: torch.Tensor
    log_r_steps: torch.Tensor | None = None
    score: torch.Tensor | None = None
    terminal_score: torch.Tensor | None = None

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_r + self.log_pb.sum(1) - self.log_pf.sum(1)

    @property
    def terminal(self) -> torch.Tensor:
        return self.x[:, -1]


def _per_step(context, N: int, B: int) -> list:
    """Split a time context computed on all N*B (step-major) times into N per-step contexts; a
    context is a tensor (N*B, k) or a tuple of them (each split alike)."""
    if isinstance(context, torch.Tensor):
        return list(context.view(N, B, -1).unbind(0))
    return list(zip(*(c.view(N, B, -1).unbind(0) for c in context)))


def shared_grid(grid: torch.Tensor) -> bool:
    """Whether every row of a grid (B, K) holds the same times (a uniform grid: evaluation, sampling;
    not the per-trajectory random grids of training)."""
    return grid.shape[0] > 1 and bool((grid == grid[:1]).all())


def call_drift(drift, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
    """drift(x, t, score) for x (B, d) at times t (B,). When every row is at the same time, the drift's
    x-independent part (`time_context`, where it has one) is computed once and broadcast over the
    rows: the same values up to float rounding, without B copies of the time encoder's work."""
    if hasattr(drift, "time_context") and shared_grid(t[:, None]):
        return drift(x, t, score, context=drift.time_context(t[:1]))
    return drift(x, t, score)


def _reward_and_score_at_origin(target, batch: int, dtype, device, need_score: bool):
    """x_0 = 0 for every trajectory: evaluate once (one energy call) and broadcast."""
    z = torch.zeros(1, target.dim, dtype=dtype, device=device)
    if need_score:
        lr, s = target.log_reward_and_score(z)
        return lr.expand(batch), s.expand(batch, -1)
    return target.log_prob(z).detach().expand(batch), None


def _state_inputs(target, x: torch.Tensor, n: int, B: int, need_score: bool, need_step_rewards: bool,
                  pathwise: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(log R, score) at step n's states x (either may be None): what the drift and the step
    rewards need; x_0 = 0 on every row is evaluated once."""
    if n == 0 and (need_score or need_step_rewards):
        return _reward_and_score_at_origin(target, B, x.dtype, x.device, need_score)
    if need_score:
        return target.log_reward_and_score(x, create_graph=pathwise)
    if need_step_rewards:
        return target.log_prob(x.detach()).detach(), None
    return None, None


def _euler_step(sampler, x, t, dt, score, context, pathwise: bool, explore: float):
    """(x_next, mu): one Euler-Maruyama step of the learned SDE (the behaviour's extra noise `explore`
    only off the pathwise graph)."""
    ref, sigma = sampler.reference, sampler.reference.sigma
    x_in = x if pathwise else x.detach()
    if context is None:
        mu = ref.project(call_drift(sampler.drift, x_in, t, score))
    else:
        mu = ref.project(sampler.drift(x_in, t, score, context=context))
    eps = ref.noise_like(x)
    if pathwise:
        return x + mu * dt[:, None] + (sigma ** 2 * dt).sqrt()[:, None] * eps, mu
    std = (sigma ** 2 * dt + explore ** 2).sqrt()
    return (x_in + mu.detach() * dt[:, None] + std[:, None] * eps).detach(), mu


def _terminal_reward(target, x: torch.Tensor, pathwise: bool, need_terminal_score: bool):
    """(log R(x_N), grad log R(x_N) or None): with the graph for a pathwise rollout."""
    if pathwise:
        return target.log_prob(x), None
    if need_terminal_score:
        return target.log_reward_and_score(x.detach())
    return target.log_prob(x).detach(), None


def forward_rollout(sampler, grid: torch.Tensor, *, explore: float = 0.0, pathwise: bool = False,
                    need_step_rewards: bool = False, need_terminal_score: bool = False) -> Trajectories:
    """Simulate B = grid.shape[0] forward trajectories (Euler-Maruyama) on the given grid.

    explore: extra noise std per step for the *behaviour* policy (gfn-diffusion's convention: the
        step variance becomes sigma^2 dt + explore^2); log_pf is always evaluated under the learned
        policy (variance sigma^2 dt), as off-policy objectives need.
    pathwise: keep the graph through the states (reparametrisation; for the KL/PIS objective).
    need_terminal_score: also return grad log R(x_N) (from the same energy call as log R(x_N)).
    """
    target, drift, ref = sampler.target, sampler.drift, sampler.reference
    B, N = grid.shape[0], grid.shape[1] - 1
    x = torch.zeros(B, target.dim, dtype=grid.dtype, device=grid.device)
    xs, mus, step_r, scores = [x], [], [], []
    context = None
    if hasattr(drift, "time_context"):   # the x-independent part of the drift, for all steps at once
        # unbind, not context[n]: indexing would make every step's backward write a zero-filled
        # copy of the whole (N, B, width) tensor; unbind's backward stacks the N gradients once
        # (on a grid shared by every row, once per step and broadcast over the rows)
        times = grid[:1, :N] if shared_grid(grid) else grid[:, :N]
        context = _per_step(drift.time_context(times.T.reshape(-1)), N, times.shape[0])
    for n in range(N):
        t = grid[:, n]
        lr, score = _state_inputs(target, x, n, B, drift.needs_score, need_step_rewards, pathwise)
        if lr is not None and need_step_rewards:
            step_r.append(lr)
        if score is not None:
            scores.append(score.detach())
        x, mu = _euler_step(sampler, x, t, grid[:, n + 1] - t, score, None if context is None else context[n],
                            pathwise, explore)
        mus.append(mu)
        xs.append(x)
    # the per-step log-densities of all steps in one batched pass (the states are all known now)
    X = torch.stack(xs, 1)                                   # (B, N+1, d)
    dts = grid[:, 1:] - grid[:, :-1]                         # (B, N)
    X_prev = X[:, :-1] if pathwise else X[:, :-1].detach()
    log_pf = ref.step_log_prob(X[:, 1:], X_prev + torch.stack(mus, 1) * dts[..., None], ref.sigma ** 2 * dts)
    log_pb = ref.backward_log_prob(X_prev, X[:, 1:], grid[:, :-1], grid[:, 1:])
    log_r, terminal_score = _terminal_reward(target, x, pathwise, need_terminal_score)
    step = torch.stack(step_r + [log_r.detach()], 1) if need_step_rewards else None
    return Trajectories(X, grid, log_pf, log_pb, log_r, step, torch.stack(scores, 1) if scores else None,
                        terminal_score)


NO_GRAD_ACTIVATION_BUDGET = 2 ** 27   # elements of one activation tensor per drift call when no graph is kept


def policy_log_pf(sampler, X: torch.Tensor, grid: torch.Tensor, score: torch.Tensor | None) -> torch.Tensor:
    """log pi_fwd(x_{n+1} | x_n) (B, N) of the sampler's current drift along given states X (B, N+1, d)
    on `grid` (B, N+1), with the target score at x_0 .. x_{N-1} (B, N, d) when the drift needs it:
    one batched drift pass over all B N states (they are all known: parallel in time); without
    autograd, in row chunks of NO_GRAD_ACTIVATION_BUDGET / drift.activation_elems_per_row states."""
    drift, ref = sampler.drift, sampler.reference
    B, N, d = X.shape[0], X.shape[1] - 1, X.shape[2]
    if drift.needs_score and score is None:
        raise ValueError("this drift needs the target score at every state of the trajectories")
    rows = max(1, NO_GRAD_ACTIVATION_BUDGET // getattr(drift, "activation_elems_per_row", 1024))
    if hasattr(drift, "time_context") and shared_grid(grid):
        mu = _drift_on_shared_grid(drift, X[:, :-1], grid[0, :-1], score if drift.needs_score else None, rows)
    else:
        sc = None if score is None or not drift.needs_score else score.reshape(B * N, d)
        xs, ts = X[:, :-1].reshape(B * N, d), grid[:, :-1].reshape(-1)
        if torch.is_grad_enabled():
            mu = drift(xs, ts, sc)
        else:   # no graph to keep: bound the transient activations (e.g. the EUBO's B N states of an EGNN)
            mu = torch.cat([drift(xs[i:i + rows], ts[i:i + rows], None if sc is None else sc[i:i + rows])
                            for i in range(0, B * N, rows)]) if B * N else drift(xs, ts, sc)
    mu = ref.project(mu.reshape(B * N, d)).view(B, N, d)
    dt = grid[:, 1:] - grid[:, :-1]
    return ref.step_log_prob(X[:, 1:], X[:, :-1] + mu * dt[..., None], ref.sigma ** 2 * dt)


def _drift_on_shared_grid(drift, X: torch.Tensor, times: torch.Tensor, score: torch.Tensor | None,
                          rows: int) -> torch.Tensor:
    """The drift (B, N, d) at states X (B, N, d) whose rows share the times (N,): the time context is
    computed for the N times once and broadcast over the trajectories; without autograd, in chunks
    of about `rows` states (whole trajectories)."""
    context = drift.time_context(times)
    if torch.is_grad_enabled():
        return drift(X, None, score, context=context)
    per = max(1, rows // max(1, X.shape[1]))
    return torch.cat([drift(X[i:i + per], None, None if score is None else score[i:i + per], context=context)
                      for i in range(0, X.shape[0], per)])


def replay(sampler, stored: Trajectories) -> Trajectories:
    """Stored trajectories (from any earlier policy, forward or backward) with log_pf recomputed
    under the sampler's current drift; log_pb, the rewards and the stored scores are reused, so a
    replay costs no energy call. Off-policy balance objectives (TB, VarGrad, SubTB, DB) are valid
    for any behaviour distribution with full support, so replayed trajectories are valid training
    data (the trajectory replay of GFlowNets; cf. the replay buffers of SGDS and Sendera et al.)."""
    log_pf = policy_log_pf(sampler, stored.x, stored.t, stored.score)
    return Trajectories(stored.x, stored.t, log_pf, stored.log_pb, stored.log_r, stored.log_r_steps, stored.score)


def backprop_log_pf(sampler, traj: Trajectories, grad_log_pf: torch.Tensor, chunk: int) -> None:
    """Accumulate d loss / d theta = sum_{b,n} g[b, n] d log_pf[b, n] / d theta into the drift's .grad,
    given g = d loss / d log_pf (B, N) from a loss evaluated on detached log_pf (a leaf).

    The states of a non-pathwise batch are constants, so log_pf[:, n] depends on theta only through
    the drift at (x_n, t_n): recomputing it `chunk` steps at a time (`policy_log_pf` on a slice of
    the path) and back-propagating g slice by slice gives the same gradient as one backward through
    all N steps, with the autograd memory of `chunk` steps instead of N (costs one more drift pass)."""
    N = traj.log_pf.shape[1]
    for a in range(0, N, chunk):
        b = min(a + chunk, N)
        score = None if traj.score is None else traj.score[:, a:b]
        lp = policy_log_pf(sampler, traj.x[:, a:b + 1], traj.t[:, a:b + 1], score)
        lp.backward(grad_log_pf[:, a:b])


def backward_rollout(sampler, x_final: torch.Tensor, grid: torch.Tensor, *,
                     log_r: torch.Tensor | None = None, need_step_rewards: bool = False,
                     chunk: int = 65536) -> Trajectories:
    """Trajectories that end at given samples x_final (B, d), drawn from the reference bridge
    backwards; the drift is then evaluated on all B*N states in one batched pass (the states are
    all known, so this is parallel in time). log_r: the stored true log R(x_final), if known
    (off-policy replay reuses it and costs no energy call)."""
    target, drift, ref = sampler.target, sampler.drift, sampler.reference
    B, N = grid.shape[0], grid.shape[1] - 1
    x_final = x_final.to(grid).detach()
    states = [x_final]
    x = x_final
    for n in range(N - 1, -1, -1):
        x = ref.sample_backward(x, grid[:, n], grid[:, n + 1])
        states.append(x)
    X = torch.stack(states[::-1], 1)  # (B, N+1, d); X[:, 0] == 0 exactly
    d = X.shape[-1]
    inner = X[:, 1:N].reshape(B * (N - 1), d)
    need_score = drift.needs_score
    lr_inner = score_inner = None
    if need_score or need_step_rewards:
        lr0, s0 = _reward_and_score_at_origin(target, B, X.dtype, X.device, need_score)
        parts_lr, parts_s = [], []
        for i in range(0, inner.shape[0], chunk):
            if need_score:
                a, b = target.log_reward_and_score(inner[i:i + chunk])
                parts_s.append(b)
            else:
                a = target.log_prob(inner[i:i + chunk]).detach()
            parts_lr.append(a)
        lr_inner = torch.cat(parts_lr).view(B, N - 1) if parts_lr else X.new_zeros(B, 0)
        if need_score:
            s_inner = torch.cat(parts_s).view(B, N - 1, d) if parts_s else X.new_zeros(B, 0, d)
            score_inner = torch.cat([s0[:, None], s_inner], 1).reshape(B * N, d)
    if log_r is None:
        log_r = target.log_prob(x_final).detach()
    score = None if score_inner is None else score_inner.view(B, N, d)
    log_pf = policy_log_pf(sampler, X, grid, score)
    log_pb = ref.backward_log_prob(X[:, :-1], X[:, 1:], grid[:, :-1], grid[:, 1:])
    step = None
    if need_step_rewards:
        step = torch.cat([lr0[:, None], lr_inner, log_r.detach()[:, None]], 1)
    return Trajectories(X, grid, log_pf, log_pb, log_r.detach(), step, score)


def log_mean_exp(a: torch.Tensor) -> torch.Tensor:
    """log mean exp of a (n,) tensor: logsumexp(a) - log n."""
    return torch.logsumexp(a, 0) - math.log(a.shape[0])
