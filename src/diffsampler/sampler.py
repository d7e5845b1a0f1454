"""`DiffusionSampler`: the learned SDE (drift network, learned log Z, optional log-flow) bound to a
target and the pinned-Brownian reference. It draws samples with importance log-weights."""
from __future__ import annotations

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
        self.drift = make_drift(drift, target, width, depth, time_features, score_clip,
                                scale=self.reference.sigma if scale_by_sigma else 1.0, sigma=self.reference.sigma)
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
               batch_size: int = 4096, integrator="euler_maruyama") -> tuple[torch.Tensor, torch.Tensor]:
        """n samples x (n, d) and their log-weights log w (n,) (see `sde.trajectories`), simulated
        with `integrator` (a name in `sde.integrators.INTEGRATORS` or an integrator object; its
        log w is exact for its own kernels). Energy calls are counted in the 'eval' phase."""
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
        return torch.cat(xs), torch.cat(lws)

    @torch.no_grad()
    def log_w_backward(self, x: torch.Tensor, steps: int | None = None, grid: str = "uniform",
                       batch_size: int = 1024) -> torch.Tensor:
        """log w along backward trajectories ending at x (n, d); its mean on true samples is the EUBO."""
        steps = steps or self.default_steps
        out = []
        with self.target.counter.use("eval"):
            for i in range(0, x.shape[0], batch_size):
                out.append(self.backward(x[i:i + batch_size], steps, grid).log_w)
        return torch.cat(out)
