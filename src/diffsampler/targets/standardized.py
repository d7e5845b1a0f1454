"""A target seen in standardised coordinates: x = m + L z.

A user's energy of unknown location and scale (a posterior whose mean is far from 0, or whose
coordinates differ in scale by 100x) is a poor match for the sampler's reference process, which
starts at 0 with one isotropic scale sigma. `StandardizedTarget` presents the same density in the
coordinates z = L^-1 (x - m), in which a pilot run (`search.pilot`) found it roughly standard:

    E_z(z) = E(m + L z) - log |det L|,     grad_z E_z = L^T grad_x E(m + L z),

so that Z_z = int exp(-E_z) dz = Z: log Z, ELBO, EUBO and every importance weight are the same in
either coordinate system. The sampler trains, searches and keeps its buffer in z; what reaches the
user (samples, the ground truth the metrics compare with) is in x: `to_user` / `from_user` map
between them, and the ground-truth methods (`sample`, `mode_coverage`, `extra_metrics`, plots) are
the base target's, in x. Energy calls go through this view's counted path, on the base target's
counter (one call per row, as for the base).
"""
from __future__ import annotations

import torch

from ..errors import ShapeError
from .base import Target
from .view import CoordinateView


class StandardizedTarget(CoordinateView):
    """`base` in coordinates z with x = loc + chol @ z; loc (d,), chol (d, d) lower-triangular with a
    positive diagonal (a diagonal matrix for a per-coordinate scale)."""

    def __init__(self, base: Target, loc: torch.Tensor, chol: torch.Tensor) -> None:
        d = base.dim
        loc = torch.as_tensor(loc, dtype=torch.float64).flatten()
        chol = torch.as_tensor(chol, dtype=torch.float64)
        if loc.shape != (d,) or chol.shape != (d, d):
            raise ShapeError(f"standardization of {base.name!r}: loc must have shape ({d},) and chol ({d}, {d}), "
                             f"got {tuple(loc.shape)} and {tuple(chol.shape)}")
        diag = torch.diagonal(chol)
        if not (torch.isfinite(chol).all() and torch.isfinite(loc).all() and (diag > 0).all()
                and torch.equal(chol, torch.tril(chol))):
            raise ValueError(f"standardization of {base.name!r}: chol must be finite, lower-triangular, "
                             "with a positive diagonal")
        super().__init__(base, d)
        self.loc, self.chol = loc, chol
        self.log_det = float(torch.log(diag).sum())
        self.chol_inv = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=torch.float64), upper=False)

    # -- coordinates -----------------------------------------------------------------------------
    def to_user(self, z: torch.Tensor) -> torch.Tensor:
        """x = m + L z for rows z (B, d)."""
        return self.loc.to(z) + z @ self.chol.to(z).T

    def from_user(self, x: torch.Tensor) -> torch.Tensor:
        """z = L^-1 (x - m) for rows x (B, d)."""
        return (x - self.loc.to(x)) @ self.chol_inv.to(x).T

    def to_user_energy(self, z: torch.Tensor, e_user: torch.Tensor) -> torch.Tensor:
        """E_z = E(x) - log |det L|."""
        return e_user - self.log_det

    # -- energy (uncounted parts; the counted path is Target's) --------------------------------------
    def _energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.base._energy(self.to_user(z)) - self.log_det

    def _energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_z, grad_z E_z) rows (B,), (B, d): the base's closed form mapped, else autograd through
        the base's energy (rows are independent, so a NaN row leaves the others' gradients intact)."""
        if type(self.base)._energy_and_grad is not Target._energy_and_grad:
            e, g = self.base._energy_and_grad(self.to_user(z))
            return e - self.log_det, g @ self.chol.to(g)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            e = self._energy(zg)
            (g,) = torch.autograd.grad(e.sum(), zg)
        return e.detach(), g

    def info(self) -> dict:
        return {**self.base.info(), "standardized": True}

    def state_dict(self) -> dict:
        """What a checkpoint keeps to rebuild this view: {'loc': (d,), 'chol': (d, d)} in float64."""
        return {"loc": self.loc.clone(), "chol": self.chol.clone()}


__all__ = ["StandardizedTarget"]
