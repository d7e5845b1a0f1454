"""A target seen in other coordinates: the base class of the views the sampler can train in.

A view presents the density of a `base` target in its own coordinates z (`to_user(z)` = x, the
base's; `from_user(x)` = z), with the energy E_z(z) = E(x(z)) - log |dx/dz| so that importance
weights, ELBO and EUBO mean the same in either system. Energy calls go through the view's counted
path on the base's counter; the ground truth (reference samples, mode coverage, target metrics and
plots) stays the base's, in the user's coordinates. Subclasses: `StandardizedTarget` (an affine
map found by the pilot) and `InternalCoordinateTarget` (a molecule's bond lengths, angles and
torsions).
"""
from __future__ import annotations

import torch

from .base import Target


class CoordinateView(Target):
    """Delegation to `base` for everything that is not the energy or the coordinates."""

    def __init__(self, base: Target, dim: int) -> None:
        super().__init__()
        self.base, self.counter = base, base.counter
        self.name, self.dim, self.log_Z = base.name, int(dim), base.log_Z
        self.sigma, self.plot_dims, self.symmetry = 1.0, base.plot_dims, None

    @property
    def nonfinite(self) -> str:          # one policy, the base target's
        return self.base.nonfinite

    @nonfinite.setter
    def nonfinite(self, value: str) -> None:
        self.base.nonfinite = value

    def to_user_energy(self, z: torch.Tensor, e_user: torch.Tensor) -> torch.Tensor:
        """E_z at rows z (B, dim) from the base's energies E(x(z)) (B,), without an energy call."""
        raise NotImplementedError

    # -- ground truth, in the user's coordinates ----------------------------------------------------
    @property
    def has_samples(self) -> bool:
        return self.base.has_samples

    def sample(self, n: int) -> torch.Tensor:
        return self.base.sample(n)

    def mode_coverage(self, x: torch.Tensor) -> dict | None:
        return self.base.mode_coverage(x)

    def extra_metrics(self, x: torch.Tensor, x_true: torch.Tensor | None,
                      log_w: torch.Tensor | None = None) -> dict:
        return self.base.extra_metrics(x, x_true, log_w)

    def extra_plots(self, x: torch.Tensor, x_true: torch.Tensor | None, directory: str, title: str = "") -> None:
        self.base.extra_plots(x, x_true, directory, title)


def user_target(target: Target) -> Target:
    """The target in the user's coordinates: the base of a view, else the target itself."""
    return target.base if isinstance(target, CoordinateView) else target


__all__ = ["CoordinateView", "user_target"]
