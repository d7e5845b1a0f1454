"""A molecule seen in whitened internal coordinates (config key `coordinates=internal`).

In Cartesian coordinates a molecule's density is a thin, curved shell: bond lengths fluctuate by
0.003 nm and angles by 0.05 rad while the conformation (a peptide's phi and psi) moves over radians,
and the torsions that carry the conformational distribution are nonlinear functions of all the
atoms. In internal coordinates (`targets/zmatrix.py`: bond lengths r, angles theta, torsions tau) the
stiff degrees of freedom become nearly independent Gaussians and each torsion is one coordinate,
which is how Boltzmann generators (Noe et al. 2019) and the samplers evaluated on alanine dipeptide
in internal coordinates (e.g. the adjoint Schroedinger bridge sampler, Liu et al. 2025) present it.

The view's coordinates u (B, 3n - 6) map to internal coordinates q by
    r, theta:  q = q0 + s u,
    tau:       q = c + pi tanh((v0 + s u) / pi),   v0 = pi atanh(wrap(tau0 - c) / pi),
q0 the internal coordinates of the molecule's structure (the shipped peptides' are minimised; a
user's file whose structure is not, with a force above MINIMISE_FORCE on some atom, is first
minimised by L-BFGS on the counted energy), so u = 0 is that structure. The torsion map is
a bijection of R onto the circle cut at c + pi, with slope s at the structure and exponential
tails; the cut c + pi is where a rigid scan of that torsion (every other coordinate at the
structure's) has its highest energy, a barrier that the physical ensemble does not cross. The
scales s are 1 / sqrt(H_ii), H the Hessian of E_q (below) at q0 (conditional standard deviations:
0.003 nm for a bond, 0.05 rad for an angle), except for the proper torsions about a bond on no ring
(free rotations, broad and often multimodal), which keep s = 1 rad. A ring's own torsions are held
narrow by its closure (the bond that closes the ring is no coordinate: its length follows from the
others, and the energy keeps it) and take the Hessian's scale like the stiff coordinates.

Energy (units of kT), with log |J(q)| the Cartesian volume element (zmatrix.py):
    E_u(u) = E(x(q(u))) - log |J(q(u))| - sum_i log |dq_i / du_i|,
the marginal of exp(-E(x)) over the internal coordinates, with the six external ones (position
and orientation) integrated out: log Z_u = log Z_x - log(V 8 pi^2) for a box of volume V, so
log-weights and the EUBO - ELBO gap are those of the internal marginal. Samples reach the user as
centred Cartesian rows in a fixed orientation (the first atom, the second on +x, the third in the
xy plane), as the base's `to_user` returns them (L enantiomer).

The scan and the Hessian cost energy calls (a few hundred, counted on the base's counter in the
phase the caller sets; training attributes them to the search).
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, ShapeError
from .base import Target
from .view import CoordinateView
from .zmatrix import ZMatrix

SCAN_POINTS = 36        # rigid scan of each torsion, every 10 degrees
HESSIAN_STEP = 1e-3     # central differences of the gradient, in units of each coordinate's own
MINIMISE_FORCE = 100.0  # kT/nm: a structure with a larger force on some atom is minimised first (a PDB's
                        # 1e-4 nm rounding of a minimum leaves about 20)
MINIMISE_ITERATIONS = 500


def zmatrix_of(target) -> ZMatrix:
    """The Z-matrix of an OpenMM molecule target (its topology's bonds; hydrogens by element)."""
    top = getattr(target, "topology", None)
    if top is None:
        raise ConfigError(f"config key 'coordinates' = 'internal': target {target.name!r} is not a molecule (it "
                          "has no topology); internal coordinates need a bond graph")
    bonds = [(b[0].index, b[1].index) for b in top.bonds()]
    heavy = [a.element is not None and a.element.symbol != "H" for a in top.atoms()]
    try:
        return ZMatrix.from_bonds(top.getNumAtoms(), bonds, heavy)
    except ValueError as e:
        raise ConfigError(f"config key 'coordinates' = 'internal': {target.name!r}: {e}; train it with "
                          "coordinates=cartesian") from None


def _log_cosh(y: torch.Tensor) -> torch.Tensor:
    a = y.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


class InternalCoordinateTarget(CoordinateView):
    """`base` (an OpenMM molecule, rows (B, 3n) in nm) in whitened internal coordinates (module doc).

    q0 (3n - 6,): the structure's internal coordinates; scale (3n - 6,): s; cut_centre (n - 3,): c
    per torsion. All float64."""

    def __init__(self, base: Target, q0: torch.Tensor, scale: torch.Tensor, cut_centre: torch.Tensor) -> None:
        self.zmatrix = zmatrix_of(base)
        d = self.zmatrix.dim
        q0, scale, cut = (torch.as_tensor(a, dtype=torch.float64).flatten() for a in (q0, scale, cut_centre))
        n_tau = self.zmatrix.n_atoms - 3
        if q0.shape != (d,) or scale.shape != (d,) or cut.shape != (n_tau,):
            raise ShapeError(f"internal coordinates of {base.name!r}: expected q0 and scale of shape ({d},) and "
                             f"cut_centre ({n_tau},), got {tuple(q0.shape)}, {tuple(scale.shape)}, {tuple(cut.shape)}")
        if not (torch.isfinite(q0).all() and torch.isfinite(cut).all() and (scale > 0).all() and torch.isfinite(scale).all()):
            raise ValueError(f"internal coordinates of {base.name!r}: q0, scale and cut_centre must be finite, "
                             "scale positive")
        super().__init__(base, d)
        self.q0, self.scale, self.cut = q0, scale, cut
        self.n_stiff = d - n_tau
        self.v0 = math.pi * torch.atanh(self._wrap(q0[self.n_stiff:] - cut) / math.pi)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(cls, base: Target) -> InternalCoordinateTarget:
        """Cuts from rigid scans and scales from the Hessian at the base's structure (module doc)."""
        zm = zmatrix_of(base)
        if getattr(base, "positions", None) is None:
            raise ConfigError(f"internal coordinates of {base.name!r} need the molecule's structure (positions)")
        pos = relaxed_structure(base, torch.as_tensor(base.positions, dtype=torch.float64).reshape(1, -1))
        q0 = zm.to_internal(pos.reshape(1, -1, 3))[0]
        n_stiff = zm.dim - (zm.n_atoms - 3)
        cut = cls._scan_cuts(base, zm, q0, n_stiff)
        proper = torch.zeros(zm.dim, dtype=torch.bool)
        proper[[n_stiff + k for k in zm.free_torsions]] = True
        scale = torch.ones(zm.dim, dtype=torch.float64)
        h = _hessian_diagonal(base, zm, q0, ~proper)
        stiff = ~proper & (h > 0)
        scale[stiff] = h[stiff].rsqrt()
        return cls(base, q0, scale, cut)

    @staticmethod
    def _scan_cuts(base: Target, zm: ZMatrix, q0: torch.Tensor, n_stiff: int) -> torch.Tensor:
        """c per torsion: the rigid scan's highest-energy angle, minus pi."""
        grid = torch.linspace(-math.pi, math.pi, SCAN_POINTS + 1, dtype=torch.float64)[:-1]
        n_tau = zm.n_atoms - 3
        q = q0.repeat(n_tau * SCAN_POINTS, 1)
        rows = torch.arange(n_tau * SCAN_POINTS)
        q[rows, n_stiff + rows // SCAN_POINTS] = grid.repeat(n_tau)
        x = zm.to_cartesian(q).reshape(q.shape[0], -1)
        e = base.energy(base.project(x).to(torch.get_default_dtype()), check_finite=False).double()
        e = torch.nan_to_num(e, nan=math.inf).reshape(n_tau, SCAN_POINTS)
        top = grid[e.argmax(1)]
        return torch.remainder(top, 2 * math.pi) - math.pi

    # -- coordinates ------------------------------------------------------------------------------
    @staticmethod
    def _wrap(a: torch.Tensor) -> torch.Tensor:
        """a mapped into [-pi, pi), then pulled inside (-pi, pi) by a hair (atanh stays finite)."""
        w = torch.remainder(a + math.pi, 2 * math.pi) - math.pi
        lim = math.pi * (1 - 1e-12)
        return w.clamp(-lim, lim)

    def internal(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q (B, 3n - 6), sum_i log |dq_i/du_i| (B,)) of rows u, float64."""
        u = u.double()
        k, s = self.n_stiff, self.scale.to(u.device)
        stiff = self.q0[:k].to(u.device) + s[:k] * u[:, :k]
        y = (self.v0.to(u.device) + s[k:] * u[:, k:]) / math.pi
        tau = self.cut.to(u.device) + math.pi * torch.tanh(y)
        log_dq = torch.log(s).sum() - 2.0 * _log_cosh(y).sum(1)
        return torch.cat([stiff, tau], dim=1), log_dq

    def to_user(self, z: torch.Tensor) -> torch.Tensor:
        """Centred Cartesian rows (B, 3n) of rows z (B, 3n - 6), in the base's `to_user` convention."""
        q, _ = self.internal(z)
        x = self.base.project(self.zmatrix.to_cartesian(q).reshape(z.shape[0], -1))
        return self.base.to_user(x.to(z.dtype))

    def from_user(self, x: torch.Tensor) -> torch.Tensor:
        """Rows z (B, 3n - 6) of Cartesian rows x (B, 3n) in nm (any position and orientation)."""
        if x.dim() != 2 or x.shape[1] != self.base.dim:
            raise ShapeError(f"{self.name}: expected Cartesian rows of shape (B, {self.base.dim}), got {tuple(x.shape)}")
        q = self.zmatrix.to_internal(x.double().reshape(x.shape[0], -1, 3))
        k, s = self.n_stiff, self.scale.to(x.device)
        stiff = (q[:, :k] - self.q0[:k].to(x.device)) / s[:k]
        v = math.pi * torch.atanh(self._wrap(q[:, k:] - self.cut.to(x.device)) / math.pi)
        return torch.cat([stiff, (v - self.v0.to(x.device)) / s[k:]], dim=1).to(x.dtype)

    def to_user_energy(self, z: torch.Tensor, e_user: torch.Tensor) -> torch.Tensor:
        q, log_dq = self.internal(z)
        return (e_user.double() - self.zmatrix.log_jacobian(q) - log_dq).to(e_user.dtype)

    # -- energy (uncounted; the counted path is Target's) -------------------------------------------
    def _cartesian(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (B, 3n) in the base's dtype, log |dx/dz| (B,) float64), differentiable in z."""
        q, log_dq = self.internal(z)
        x = self.zmatrix.to_cartesian(q).reshape(z.shape[0], -1)
        return self.base.project(x), self.zmatrix.log_jacobian(q) + log_dq

    def _energy(self, z: torch.Tensor) -> torch.Tensor:
        x, log_j = self._cartesian(z)
        return (self.base._energy(x.to(z.dtype)).double() - log_j).to(z.dtype)

    def _energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_z, grad_z E_z): the base's energy and gradient at x(z), pulled back through the map."""
        with torch.enable_grad():
            zg = z.detach().double().requires_grad_(True)
            x, log_j = self._cartesian(zg)
            if type(self.base)._energy_and_grad is not Target._energy_and_grad:
                e, g = self.base._energy_and_grad(x.detach().to(z.dtype))
                e, g = e.double(), g.double()
                (gz,) = torch.autograd.grad((x * g).sum() - log_j.sum(), zg)
            else:
                e = self.base._energy(x.to(z.dtype)).double()
                (gz,) = torch.autograd.grad(e.sum() - log_j.sum(), zg)
                e = e.detach()
        return (e - log_j.detach()).to(z.dtype), gz.to(z.dtype)

    def info(self) -> dict:
        return {**self.base.info(), "coordinates": "internal", "internal_dim": self.dim}

    def state_dict(self) -> dict:
        """What a checkpoint keeps to rebuild this view."""
        return {"kind": "internal", "q0": self.q0.clone(), "scale": self.scale.clone(), "cut_centre": self.cut.clone()}


def relaxed_structure(base: Target, x: torch.Tensor) -> torch.Tensor:
    """The structure x (1, 3n) in nm, or, when some atom feels a force above MINIMISE_FORCE (kT/nm),
    a nearby minimum of E found by L-BFGS (strong-Wolfe line search, gradient tolerance 1 kT/nm, at
    most MINIMISE_ITERATIONS steps); every energy goes through the base's counted path. A structure
    whose energy is not finite (overlapping atoms) gets a clear error."""
    dtype = torch.get_default_dtype()

    def energy_and_force(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_r, score = base.log_reward_and_score(v.detach().to(dtype), check_finite=False)
        return -log_r.double().sum(), score.double()

    e, force = energy_and_force(x)
    if not (torch.isfinite(e) and torch.isfinite(force).all()):
        raise ConfigError(f"internal coordinates of {base.name!r}: the energy of the molecule's structure is not "
                          f"finite ({float(e)}); check the file for overlapping or missing atoms")
    if float(force.abs().max()) <= MINIMISE_FORCE:
        return x
    p = x.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=MINIMISE_ITERATIONS, tolerance_grad=1.0, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        e, f = energy_and_force(p)
        p.grad = torch.nan_to_num(-f, nan=0.0)
        return e if torch.isfinite(e) else torch.tensor(1e30, dtype=torch.float64)

    opt.step(closure)
    return p.detach()


def _hessian_diagonal(base: Target, zm: ZMatrix, q0: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """H_ii of E_q(q) = E(x(q)) - log |J(q)| at q0 for the coordinates `which` (bool (d,)), by central
    differences of the gradient (two energy-and-gradient calls per coordinate); 0 elsewhere."""
    idx = which.nonzero().flatten()
    h = HESSIAN_STEP * torch.where(idx < zm.n_atoms - 1, q0[idx].abs().clamp(min=0.1), torch.ones(len(idx), dtype=torch.float64))
    q = q0.repeat(2 * len(idx), 1)
    rows = torch.arange(len(idx))
    q[rows, idx] += h
    q[rows + len(idx), idx] -= h
    q.requires_grad_(True)
    with torch.enable_grad():
        x = base.project(zm.to_cartesian(q).reshape(q.shape[0], -1))
        _, score = base.log_reward_and_score(x.detach().to(torch.get_default_dtype()), check_finite=False)
        (g,) = torch.autograd.grad((x * -score.double()).sum() - zm.log_jacobian(q).sum(), q)
    out = torch.zeros(zm.dim, dtype=torch.float64)
    out[idx] = (g[rows, idx] - g[rows + len(idx), idx]) / (2 * h)
    return torch.nan_to_num(out, nan=0.0)


__all__ = ["InternalCoordinateTarget", "zmatrix_of"]
