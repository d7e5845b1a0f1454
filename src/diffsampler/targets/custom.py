"""A user's own energy as a first-class target."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import NonFiniteError, ShapeError, UserEnergyError
from .base import Target


class EnergyFunctionTarget(Target):
    """Wraps a callable E: (B, d) tensor -> (B,) tensor (the energy, i.e. -log density).

    Optional ground truth: `log_Z` (exact log normaliser) and `samples` (an (N, d) array of exact
    or reference samples used for EUBO, W2 and MMD; never used for training unless asked).
    `sigma`: the scale of the sampler's reference process at t = 1 (the target's typical spread
    around 0); None (the default) means unknown, and training then runs a pilot that finds
    the energy's location and scale (`search.pilot`, config key `pilot`).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int, log_Z: float | None = None,
                 samples: np.ndarray | torch.Tensor | None = None, name: str | None = None,
                 sigma: float | None = None) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"from_energy: fn must be callable, got {type(fn).__name__}")
        if int(dim) < 1:
            raise ValueError(f"from_energy: dim must be >= 1, got {dim}")
        if sigma is not None and not float(sigma) > 0:
            raise ValueError(f"from_energy: sigma must be > 0 (or None: unknown), got {sigma}")
        self.fn, self.dim = fn, int(dim)
        self.scale_known = sigma is not None
        self.sigma = 1.0 if sigma is None else float(sigma)
        self.name = name or getattr(fn, "__name__", "custom")
        self.log_Z = None if log_Z is None else float(log_Z)
        self._samples = None
        if samples is not None:
            s = torch.as_tensor(np.asarray(samples), dtype=torch.get_default_dtype())
            if s.dim() != 2 or s.shape[1] != self.dim:
                raise ShapeError(f"from_energy: samples must have shape (N, {self.dim}), got {tuple(s.shape)}")
            if not torch.isfinite(s).all():
                raise NonFiniteError("from_energy: samples contain NaN or inf")
            self._samples = s

    @property
    def has_samples(self) -> bool:
        return self._samples is not None

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.fn(x)
        except Exception as e:   # the user's error, with where in the run it happened
            raise UserEnergyError(f"the energy {self.name!r} raised {type(e).__name__}: {e} (during "
                                  f"{self.counter.where()}, on a batch of {x.shape[0]} points of shape "
                                  f"{tuple(x.shape)} and dtype {x.dtype})") from e

    def _sample(self, n: int) -> torch.Tensor:
        N = self._samples.shape[0]
        idx = torch.randperm(N)[:n] if n <= N else torch.randint(0, N, (n,))
        return self._samples[idx]


def from_energy(fn: Callable[[torch.Tensor], torch.Tensor], dim: int, log_Z: float | None = None,
                samples=None, name: str | None = None, sigma: float | None = None) -> EnergyFunctionTarget:
    """Build a target from an energy function E(x) (B, d) -> (B,); see `EnergyFunctionTarget`."""
    return EnergyFunctionTarget(fn, dim, log_Z=log_Z, samples=samples, name=name, sigma=sigma)
