"""`DiffusionSampler`: the learned SDE (drift network, learned log Z, optional log-flow) bound to a
target and the pinned-Brownian reference. It draws samples with importance log-weights."""
from __future__ import annotations

import math

import torch
from torch import nn

from .nets import LogFlow, make_drift
from .sde import backward_rollout, forward_rollout, make_grid
from .sde.integrators import make_integrator
from .targets import Target


class DiffusionSampler(nn.Module):
    """Holds the trainable parts (drift, log_Z, flow) and the fixed ones (target, reference)."""

    def __init__(self, target: Target, *, drift: str = "langevin", width: int = 128, depth: int = 2,
                 time_features: int = 64, score_clip: float = 100.0, sigma: float | None = None,
                 flow: bool = False, log_Z_init: float = 0.0, default_steps: int = 100,
                 scale_by_sigma: bool = True, time_warp: float = 1.0) -> None:
        super().__init__()
        self.target = target
        self.reference = target.make_reference(sigma if sigma is not None else target.sigma)
        d = target.dim
        self.drift = make_drift(drift, target, sigma=self.reference.sigma, width=width, depth=depth,
                                time_features=time_features, score_clip=score_clip, scale_by_sigma=scale_by_sigma)
        self.log_Z = nn.Parameter(torch.tensor(float(log_Z_init)))
        self.flow = LogFlow(d, width, depth, time_features) if flow else None
        self.default_steps = int(default_steps)
        self.time_warp = float(time_warp)   # every grid of this sampler: t = 1 - (1 - u)^time_warp
        make_grid("uniform", 1, 1, warp=self.time_warp)   # validates it now, not at the first rollout
        self.integrator = "euler_maruyama"   # the integrator last used by `sample`

    @property
    def nfe_per_step(self) -> float:
        """Drift evaluations per sample per step of the integrator last used by `sample`
        (Euler-Maruyama, one drift pass, until then; see `sde.integrators`)."""
        return make_integrator(self.integrator).nfe_per_step

    def make_grid(self, kind: str, batch: int, steps: int) -> torch.Tensor:
        """A time grid (batch, steps + 1) of this sampler (its time warp applied), on its device."""
        p = self.log_Z
        return make_grid(kind, batch, steps, warp=self.time_warp, device=p.device, dtype=p.dtype)

    def rollout(self, batch: int, steps: int, grid: str = "uniform", **kw):
        return forward_rollout(self, self.make_grid(grid, batch, steps), **kw)

    def backward(self, x: torch.Tensor, steps: int, grid: str = "uniform", **kw):
        return backward_rollout(self, x, self.make_grid(grid, x.shape[0], steps), **kw)

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, grid: str = "uniform",
               batch_size: int = 4096, integrator="euler_maruyama",
               corrector_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples x (n, d) and their log-weights log w (n,) (see `sde.trajectories`), simulated
        with `integrator` (a name in `sde.integrators.INTEGRATORS` or an integrator object; its
        log w is exact for its own kernels), then moved by `corrector_steps` MALA steps on the
        target (`correct`; the log-weights stay valid). Energy calls count in the 'eval' phase.
        The samples are in the user's coordinates (`Target.to_user`: the sampler of a standardized
        target simulates in its own coordinates z and returns x = m + L z; log w is the same in both)."""
        if corrector_steps < 0:
            raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
        if int(n) < 1 or (steps is not None and int(steps) < 1):
            raise ValueError(f"sample: need n >= 1 samples and steps >= 1, got n = {n}, steps = {steps}")
        steps = steps or self.default_steps
        integ = make_integrator(integrator)
        self.integrator = integ
        xs, lws = [], []
        with self.target.counter.use("eval"):
            for i in range(0, n, batch_size):
                b = min(batch_size, n - i)
                if integ.name == "euler_maruyama":
                    tr = self.rollout(b, steps, grid)
                    xs.append(tr.terminal)
                    lws.append(tr.log_w)
                else:
                    sim = integ.simulate(self, self.make_grid(grid, b, steps))
                    xs.append(sim.x)
                    lws.append(sim.log_w)
                if corrector_steps:
                    xs[-1] = self._correct(xs[-1], corrector_steps)
                xs[-1] = self.target.to_user(xs[-1])
        return torch.cat(xs), torch.cat(lws)

    @torch.no_grad()
    def correct(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Move samples x (n, d) by `steps` MALA steps that leave the target invariant (a corrector;
        B (steps + 1) energy calls, counted in the counter's current phase: 'eval' from `sample`).

        The sampler's importance weights stay valid for the moved samples: if x ~ q with
        w = p / q and K is a p-invariant kernel, E_q[w f(K x)] = E_p[f], so (K x, w) is still a
        properly weighted sample (log Z (IS) and ESS unchanged) while the raw samples move toward
        p. The step size starts at 0.5 s^2 d^(-1/3), s^2 = d / mean |grad E|^2 at x (the scale of a
        Gaussian with the same Fisher information), and is adapted toward acceptance 0.574 over the
        first half of the steps with one step size for all chains (a global adaptation couples the
        chains only through the batch-mean acceptance). x and the result are in the user's
        coordinates; the chains run in the target's own."""
        return self.target.to_user(self._correct(self.target.from_user(x), steps))

    def _correct(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """`correct` in the target's own coordinates."""
        from .search.energy import TemperedPotential
        from .search.mala import MALA, run_kernel
        potential = TemperedPotential(self.target, 1.0, phase=self.target.counter.phase)
        kernel = MALA(adapt="global", adapt_rate=0.3)
        state = kernel.init(potential, x)
        d = x.shape[1]
        g2 = state.grad.pow(2).sum(-1)
        g2 = g2[torch.isfinite(g2)].mean() if torch.isfinite(g2).any() else torch.tensor(float("nan"))
        h0 = float(0.5 * d / g2 * d ** (-1 / 3)) if float(g2) > 0 else 1e-3
        state.step_size.fill_(h0 if math.isfinite(h0) and h0 > 0 else 1e-3)
        n_adapt = steps // 2
        res = run_kernel(kernel, potential, x, steps - n_adapt, n_adapt=n_adapt, thin=max(1, steps - n_adapt),
                         state=state)
        out = self.target.project(res.state.point.x)   # particles: E is translation invariant; no CoM walk
        return out.to(x.dtype)

    @torch.no_grad()
    def log_w_backward(self, x: torch.Tensor, steps: int | None = None, grid: str = "uniform",
                       batch_size: int = 1024) -> torch.Tensor:
        """log w along backward trajectories ending at x (n, d), in the user's coordinates; its mean
        on true samples is the EUBO."""
        x = self.target.from_user(x)
        steps = steps or self.default_steps
        out = []
        with self.target.counter.use("eval"):
            for i in range(0, x.shape[0], batch_size):
                out.append(self.backward(x[i:i + batch_size], steps, grid).log_w)
        return torch.cat(out)
