"""Potentials: the energies that searcher chains target, evaluated through the counted path.

A potential U(x) is built from the target's true energy E(x) = -log R(x). Evaluating it at a
batch x (B, d) costs exactly one energy call per row (one `target.log_reward_and_score` call)
and gives

    U (B,), grad U (B, d)          what the chain targets: pi(x) ∝ exp(-U(x));
    E_true (B,), grad E_true (B, d) the target's true energy and its gradient at x.

Kernels carry all four in a `ChainState`, so a point is never evaluated twice: when AIS moves to
the next annealing level or parallel tempering swaps replicas, `Potential.rebase` recomputes
U and grad U from the stored (x, E, grad E) without an energy call.

Potentials:
    TemperedPotential   U = beta E  (or beta (E - alpha novelty)) (beta a float or per-row (B,))
    GeometricPath       U = (1 - b) ||x||^2 / (2 s0^2) + b E      (AIS path from N(0, s0^2 I))
    AuxiliaryPotential  U = E - alpha * novelty(x)                (SGDS auxiliary energy, Kim et
                                                                   al. 2025, with RND novelty)
Energy calls are attributed to the "search" phase of the target's counter.
Non-finite values are *not* raised here (`check_finite=False`): kernels reject or reset them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from ..errors import NonFiniteError, ShapeError
from ..targets.base import Target

Tensor = torch.Tensor


@dataclass
class ChainState:
    """A batch of chain positions with everything one energy call gives (see module doc)."""

    x: Tensor        # (B, d)
    U: Tensor        # (B,)   potential the chain targets
    grad: Tensor     # (B, d) grad U
    E_true: Tensor   # (B,)   true target energy E(x)
    grad_E: Tensor   # (B, d) grad E(x)

    def finite(self) -> Tensor:
        """(B,) True where x, U, grad U, E and grad E are all finite."""
        return (torch.isfinite(self.x).all(1) & torch.isfinite(self.U) & torch.isfinite(self.grad).all(1)
                & torch.isfinite(self.E_true) & torch.isfinite(self.grad_E).all(1))

    def where(self, mask: Tensor, other: ChainState) -> ChainState:
        """Rows of `other` where mask (B,) is True, rows of self elsewhere."""
        def pick(a: Tensor, b: Tensor) -> Tensor:
            m = mask.view(-1, *([1] * (a.dim() - 1)))
            return torch.where(m, b, a)
        return ChainState(**{f.name: pick(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def take(self, idx: Tensor) -> ChainState:
        """Rows idx (a permutation or index tensor)."""
        return ChainState(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


class Potential:
    """U(x) built from a target's energy. `pot(x) -> (U, grad U, E_true)`; kernels use
    `evaluate(x) -> ChainState` (one energy call per row) and `rebase(state)` (no call)."""

    def __init__(self, target: Target, phase: str = "search") -> None:
        if not isinstance(target, Target):
            raise TypeError(f"potential: expected a diffsampler Target, got {type(target).__name__}")
        self.target, self.phase = target, phase

    # -- the one counted evaluation -----------------------------------------------------------
    def energy(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(E (B,), grad E (B, d)) at x: B energy calls, non-finite values passed through."""
        if x.dim() != 2 or x.shape[1] != self.target.dim:
            raise ShapeError(f"potential: expected x of shape (B, {self.target.dim}), got {tuple(x.shape)}")
        with self.target.counter.use(self.phase):
            log_r, score = self.target.log_reward_and_score(x.detach(), check_finite=False)
        return -log_r, -score

    def combine(self, x: Tensor, E: Tensor, grad_E: Tensor) -> tuple[Tensor, Tensor]:
        """(U, grad U) from x and the true (E, grad E); costs no energy call."""
        raise NotImplementedError

    # -- the SGDS auxiliary energy, shared by the tempered and annealed potentials ---------------
    aux: AuxiliaryPotential | None = None

    def _use_novelty(self, novelty: Callable[[Tensor], Tensor] | None, alpha: float) -> None:
        """Make base_energy E - alpha * novelty(x) (no novelty or alpha = 0: the plain E)."""
        self.aux = None if novelty is None or alpha == 0 else AuxiliaryPotential(self.target, novelty, alpha,
                                                                               self.phase)

    def base_energy(self, x: Tensor, E: Tensor, grad_E: Tensor) -> tuple[Tensor, Tensor]:
        """(E_base, grad E_base) from the true (E, grad E): E, or E - alpha * novelty; no energy call."""
        return (E, grad_E) if self.aux is None else self.aux.combine(x, E, grad_E)

    def evaluate(self, x: Tensor) -> ChainState:
        E, gE = self.energy(x)
        U, gU = self.combine(x, E, gE)
        return ChainState(x.detach(), U.detach(), gU.detach(), E, gE)

    def rebase(self, s: ChainState) -> ChainState:
        """The same points under this potential (after a level change or a swap); no energy call."""
        U, gU = self.combine(s.x, s.E_true, s.grad_E)
        return ChainState(s.x, U.detach(), gU.detach(), s.E_true, s.grad_E)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = self.evaluate(x)
        return s.U, s.grad, s.E_true


class TemperedPotential(Potential):
    """U = beta * E_base: the target at temperature 1/beta. beta is a float or a (B,) tensor (one
    inverse temperature per chain row, as parallel tempering uses). E_base = E, or the SGDS
    auxiliary energy E - alpha * novelty(x) when a novelty is given (tempering the auxiliary
    target, so parallel tempering can search it like MALA and AIS do)."""

    def __init__(self, target: Target, beta: float | Tensor = 1.0, phase: str = "search",
                 novelty: Callable[[Tensor], Tensor] | None = None, alpha: float = 0.0) -> None:
        super().__init__(target, phase)
        b = torch.as_tensor(beta)
        if not torch.isfinite(b).all() or (b <= 0).any():
            raise ValueError(f"tempered potential: beta must be finite and > 0, got {beta}")
        self.beta = beta
        self._use_novelty(novelty, alpha)

    def combine(self, x, E, grad_E):
        Eb, gEb = self.base_energy(x, E, grad_E)
        b = torch.as_tensor(self.beta).to(E)
        return b * Eb, (b[:, None] if b.dim() else b) * gEb


class GeometricPath(Potential):
    """U_b(x) = (1 - b) ||x||^2 / (2 s0^2) + b E_end(x): the geometric path between N(0, s0^2 I)
    (b = 0) and the end energy (b = 1) used by annealed importance sampling (Neal, 2001).
    E_end = E, or the SGDS auxiliary energy E - alpha * novelty(x) when a novelty is given."""

    def __init__(self, target: Target, b: float, s0: float = 1.0, phase: str = "search",
                 novelty: Callable[[Tensor], Tensor] | None = None, alpha: float = 0.0) -> None:
        super().__init__(target, phase)
        if not 0.0 <= float(b) <= 1.0:
            raise ValueError(f"geometric path: b must lie in [0, 1], got {b}")
        if not float(s0) > 0:
            raise ValueError(f"geometric path: s0 must be > 0, got {s0}")
        self.b, self.s0 = float(b), float(s0)
        self._use_novelty(novelty, alpha)

    def prior_energy(self, x: Tensor) -> Tensor:
        """U_0(x) = ||x||^2 / (2 s0^2) (unnormalised; Z_0 = (2 pi s0^2)^(d/2))."""
        return 0.5 * (x ** 2).sum(-1) / self.s0 ** 2

    end_energy = Potential.base_energy   # (E_end, grad E_end): the path's end point

    def combine(self, x, E, grad_E):
        b = self.b
        Ee, gEe = self.end_energy(x, E, grad_E)
        U = (1 - b) * self.prior_energy(x) + b * Ee
        g = (1 - b) * x / self.s0 ** 2 + b * gEe
        return U, g


class AuxiliaryPotential(Potential):
    """SGDS auxiliary energy U(x) = E(x) - alpha * novelty(x) (Kim et al., 2025): the chain is
    pushed towards points the novelty model (RND) finds unfamiliar. E_true stays the plain E."""

    def __init__(self, target: Target, novelty: Callable[[Tensor], Tensor], alpha: float,
                 phase: str = "search") -> None:
        super().__init__(target, phase)
        if not callable(novelty):
            raise TypeError(f"auxiliary potential: novelty must be callable, got {type(novelty).__name__}")
        self.novelty, self.alpha = novelty, float(alpha)

    def combine(self, x, E, grad_E):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            n = self.novelty(xg)
            if n.shape != E.shape:
                raise ShapeError(f"auxiliary potential: novelty must return shape {tuple(E.shape)}, "
                                 f"got {tuple(n.shape)}")
            (gn,) = torch.autograd.grad(n.sum(), xg)
        n, gn = n.detach().to(E), gn.detach().to(grad_E)
        return E - self.alpha * n, grad_E - self.alpha * gn


def target_potential(target: Target, beta: float | Tensor = 1.0) -> TemperedPotential:
    """U = beta E (beta = 1: the target itself)."""
    return TemperedPotential(target, beta)


def auxiliary_potential(target: Target, novelty: Callable[[Tensor], Tensor], alpha: float) -> AuxiliaryPotential:
    """SGDS auxiliary energy U = E - alpha * novelty(x)."""
    return AuxiliaryPotential(target, novelty, alpha)


def geometric_path(target: Target, b: float, s0: float = 1.0) -> GeometricPath:
    """AIS level b of the path N(0, s0^2 I)^(1-b) exp(-E)^b."""
    return GeometricPath(target, b, s0)


def repair(state: ChainState, anchor: ChainState, potential: Potential) -> tuple[ChainState, Tensor]:
    """Reset rows of `state` that are not finite to the matching `anchor` row (rebased under
    `potential`, no energy call). Returns (state, reset mask (B,))."""
    bad = ~state.finite()
    if not bad.any():
        return state, bad
    fallback = potential.rebase(anchor)
    if not fallback.finite()[bad].all():
        raise NonFiniteError(f"{int(bad.sum())} chains are non-finite and their stored reset point is "
                             "non-finite under the current potential (check the novelty/temperature)")
    return state.where(bad, fallback), bad


def make_anchor(state: ChainState) -> ChainState:
    """Reset points for a freshly initialised batch: each non-finite row is replaced by a random
    finite row. Raises NonFiniteError if no initial point has a finite energy and gradient."""
    ok = state.finite()
    if ok.all():
        return state
    good = ok.nonzero().flatten()
    if good.numel() == 0:
        raise NonFiniteError(f"all {ok.numel()} initial chain points have a non-finite energy or gradient")
    pick = good[torch.randint(0, good.numel(), (ok.numel(),), device=good.device)]
    return state.where(~ok, state.take(pick))


@dataclass
class StepInfo:
    """What one kernel step did, per chain row.

    acceptance: (B,) Metropolis acceptance probability min(1, ratio) (1 for unadjusted moves);
    accepted: (B,) bool; step_size: (B,) the step size used; energy_calls: rows evaluated;
    reset: (B,) chains reset to their stored finite point this step; nonfinite: (B,) proposals whose
    energy or gradient was NaN/inf (rejected by Metropolised kernels).
    """

    acceptance: Tensor
    accepted: Tensor
    step_size: Tensor
    energy_calls: int
    reset: Tensor
    nonfinite: Tensor

    @property
    def acceptance_rate(self) -> float:
        return float(self.acceptance.mean())

    @property
    def n_reset(self) -> int:
        return int(self.reset.sum())

    @property
    def n_nonfinite(self) -> int:
        return int(self.nonfinite.sum())
