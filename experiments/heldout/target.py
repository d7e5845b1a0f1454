"""The held-out target: one log density for torch and jax, its reference draws and (maybe) log Z."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .arrays import namespace

LogDensity = Callable[[Any, Any, dict[str, np.ndarray]], Any]


@dataclass
class HeldoutTarget:
    """A target on R^d, in the unconstrained parameterisation (log for scales, logit for
    intervals, ...), the log-Jacobian of every transform included in `log_density`.

    log_density(theta, xp, data): theta (B, d) -> log p(theta) + const, (B,); xp is torch or jax
    (see `arrays.Namespace`). The energy is E = -log_density. `reference` holds (N, d) draws in the
    same parameterisation (exact for the synthetic targets, MCMC for posteriordb: `n_chains` equal
    blocks of consecutive rows). `log_Z` = log of the integral of exp(log_density), where known.
    `modes` ((K, d) centres, optional) label each draw by its nearest centre. `exact_moments`
    (mean (d,), sd (d,)), where known, replace the reference draws' moments in the error figures.
    `exact_sampler(rng, n)`, where the target has one, returns n independent exact draws (n, d).
    """

    name: str
    dim: int
    kind: str
    source: str
    param_names: list[str]
    log_density: LogDensity
    data: dict[str, np.ndarray]
    reference: np.ndarray
    log_Z: float | None = None
    n_chains: int = 1
    modes: np.ndarray | None = None
    notes: str = ""
    exact_moments: tuple[np.ndarray, np.ndarray] | None = None
    exact_sampler: Callable[[np.random.Generator, int], np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.param_names) != self.dim or self.reference.shape[1:] != (self.dim,):
            raise ValueError(f"{self.name}: {len(self.param_names)} names and reference "
                             f"{self.reference.shape} for dim {self.dim}")

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) = -log p(x), (B, d) -> (B,), differentiable; evaluated in float64, returned in x's dtype."""
        return -self.log_density(x.to(torch.float64), namespace("torch"), self.data).to(x.dtype)

    def log_prob_jax(self, theta):
        """log p for jax: theta (B, d) -> (B,) in float64 (jax's x64 mode is switched on)."""
        xp = namespace("jax")
        return self.log_density(xp.asarray(theta, dtype=xp.float64), xp, self.data)

    def potential_jax(self) -> Callable:
        """U(theta) = -log p(theta) for one unbatched point (d,) -> (), as numpyro's potential_fn."""
        return lambda theta: -self.log_prob_jax(theta[None, :])[0]

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, sd) per coordinate: exact where known, else those of the reference draws."""
        if self.exact_moments is not None:
            return self.exact_moments
        return self.reference.mean(0), self.reference.std(0, ddof=1)

    def mode_labels(self, x: np.ndarray) -> np.ndarray | None:
        """Index of the nearest centre in `modes` for each row of x (N, d), or None."""
        if self.modes is None:
            return None
        d2 = ((np.asarray(x)[:, None, :] - self.modes[None]) ** 2).sum(-1)
        return d2.argmin(1)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "kind": self.kind, "source": self.source,
                "log_Z": self.log_Z, "n_reference": int(self.reference.shape[0]),
                "params": self.param_names, "notes": self.notes}
