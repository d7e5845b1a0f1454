"""The `Target` interface and the single counted path through which every energy call goes.

Conventions (used everywhere in the package):
    p(x) = exp(-E(x)) / Z,    log R(x) = -E(x)   (unnormalised log density, "log reward"),
    score(x) = grad log R(x) = -grad E(x).
An *energy call* is the evaluation of E (or of E and grad E together) at one point: a batch of
B rows costs B calls. Calls are attributed to the phase that is active on the target's
`EnergyCounter` ("search", "train" or "eval").
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..errors import NonFiniteError, ShapeError

PHASES = ("search", "train", "eval")


def settings_for_budget(measured: dict | list[dict], max_energy_calls: float | None = None) -> dict:
    """The config keys of `measured` (one dict, or a list of dicts measured at different budgets,
    each with its `max_energy_calls`, the default first) for a run of `max_energy_calls` calls:
    None gives the first; a budget gets the entry of the largest measured budget it reaches (a
    smaller budget than any: the smallest entry's, which the budget check then sizes or refuses).
    A copy, so callers may update it."""
    if isinstance(measured, dict):
        return dict(measured)
    if not measured:
        return {}
    if max_energy_calls is None:
        return dict(measured[0])
    by_budget = sorted(measured, key=lambda keys: keys["max_energy_calls"])
    reached = [keys for keys in by_budget if keys["max_energy_calls"] <= max_energy_calls]
    return dict(reached[-1] if reached else by_budget[0])


@dataclass
class EnergyCounter:
    """Number of energy evaluations (rows) per phase. A value-and-gradient call counts once.
    `nonfinite` counts, per phase, the evaluated rows whose energy or gradient was NaN or inf."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    phase: str = "train"
    nonfinite: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    iteration: int | None = None   # the training iteration under way, for error messages (set by the trainer)

    def where(self) -> str:
        """'phase P, iteration I' of the call under way (for error messages)."""
        return f"phase {self.phase!r}" + ("" if self.iteration is None else f", iteration {self.iteration}")

    def add(self, n: int) -> None:
        self.counts[self.phase] += int(n)

    def add_nonfinite(self, n: int) -> None:
        self.nonfinite[self.phase] += int(n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {**self.counts, "total": self.total}

    def load(self, counts: dict[str, int], nonfinite: dict[str, int] | None = None) -> None:
        for k in PHASES:
            self.counts[k] = int(counts.get(k, 0))
            self.nonfinite[k] = int((nonfinite or {}).get(k, 0))

    @contextlib.contextmanager
    def use(self, phase: str) -> Iterator[None]:
        """Attribute calls made inside the block to `phase`."""
        if phase not in PHASES:
            raise ValueError(f"unknown energy-call phase {phase!r}; expected one of {PHASES}")
        old, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = old


class Target:
    """An unnormalised density p(x) ∝ exp(-E(x)) on R^dim, carrying its own ground truth.

    Subclasses implement `_energy(x)` (uncounted, batched, (B, dim) -> (B,)) and may override
    `_sample(n)` (exact or reference samples) and `mode_coverage(x)`.

    Attributes:
        name: registry name. dim: dimension d. log_Z: exact log normaliser or None.
        sigma: standard deviation of the pinned-Brownian reference process at t = 1 suited to
            this target (the "t_scale" of gfn-diffusion is sigma**2).
        symmetry: None, or a description of the invariance group (particle systems).
    """

    name: str = "target"
    dim: int = 0
    log_Z: float | None = None
    sigma: float = 1.0
    symmetry: object | None = None
    plot_dims: tuple[int, int] = (0, 1)
    # what a non-finite energy or gradient means when the caller does not say (check_finite=None):
    # "reject" (a point of zero density: E = +inf, score 0, counted in counter.nonfinite) or
    # "error" (NonFiniteError). Training sets it from the config key `nonfinite_energy`.
    nonfinite: str = "reject"
    # whether `sigma` (and the origin) describe where the target's mass lies; False for a user's
    # energy given without a scale: training then runs a pilot (config key `pilot`)
    scale_known: bool = True
    # the settings our experiments found best for this target (training/defaults.py): its default
    # recipe and, per recipe, the config keys that go with it (each cited in docs/RESULTS.md)
    default_recipe: str | None = None
    recommended: dict[str, dict] = {}

    def __init__(self) -> None:
        self.counter = EnergyCounter()

    # -- the one counted path ---------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self.name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{self.name}: expected x of shape (B, {self.dim}), got {tuple(x.shape)}")

    def _check_output(self, x: torch.Tensor, e: torch.Tensor, check_finite: bool) -> None:
        if not isinstance(e, torch.Tensor) or e.shape != (x.shape[0],):
            shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ShapeError(f"{self.name}: energy must return shape ({x.shape[0]},) for input "
                             f"{tuple(x.shape)}, got {shape}")
        if check_finite:
            bad = ~torch.isfinite(e)
            if bad.any():
                i = int(bad.nonzero()[0, 0])
                raise NonFiniteError(
                    f"{self.name}: energy is non-finite ({e[i].item()}) at {int(bad.sum())} of "
                    f"{e.shape[0]} points; first bad row {i}: x = {x[i].detach().cpu().numpy()[:8]}...")

    def _strict(self, check_finite: bool | None) -> bool:
        return self.nonfinite == "error" if check_finite is None else check_finite

    def energy(self, x: torch.Tensor, *, check_finite: bool | None = True) -> torch.Tensor:
        """E(x), shape (B,). Counts B energy calls. Differentiable w.r.t. x.

        check_finite: True raises NonFiniteError on a NaN/inf energy; False passes it through;
        None applies the target's `nonfinite` policy ("reject": such rows become E = +inf and carry
        no gradient, so one bad row cannot poison the others' gradients). Non-finite rows are
        counted in counter.nonfinite unless an error is raised."""
        self._check_input(x)
        e = self._energy(x)
        self.counter.add(x.shape[0])
        self._check_output(x, e, self._strict(check_finite))
        bad = ~torch.isfinite(e)
        if bad.any():
            self.counter.add_nonfinite(int(bad.sum()))
            if check_finite is None:
                e = self._rejected(x, e, bad)
        return e

    def _rejected(self, x: torch.Tensor, e: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
        """e with +inf at the bad rows; with autograd, the good rows are evaluated again (counted)
        so that the result's graph does not pass through the bad rows' NaN/inf derivatives."""
        if not e.requires_grad:
            return torch.where(bad, torch.full_like(e, torch.inf), e)
        out = torch.full_like(e.detach(), torch.inf)
        good = (~bad).nonzero().flatten()
        if good.numel() == 0:
            return out
        e_good = self._energy(x[good])
        self.counter.add(good.numel())
        return out.index_put((good,), e_good)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log density log R(x) = -E(x), shape (B,). Counts B energy calls.
        Non-finite energies follow the target's `nonfinite` policy (-inf under "reject")."""
        return -self.energy(x, check_finite=None)

    def log_reward_and_score(self, x: torch.Tensor, *, create_graph: bool = False,
                             check_finite: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log R(x), grad log R(x)) with shapes (B,), (B, d); one energy call per row.

        With create_graph=False the result is detached from x (no second derivatives).
        check_finite as in `energy` (None: the target's policy; under "reject" a row whose energy
        or gradient is NaN/inf gets log R = -inf and score 0, counted once in counter.nonfinite).
        """
        strict = self._strict(check_finite)
        if not create_graph and type(self)._energy_and_grad is not Target._energy_and_grad:
            self._check_input(x)
            e, g = self._energy_and_grad(x.detach())
            self.counter.add(x.shape[0])
            self._check_output(x, e, strict)
            return self._apply_policy(x, e, g, check_finite, energy_counted=False)
        with torch.enable_grad():
            xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            e = self.energy(xg, check_finite=strict)        # counts the rows with a non-finite energy
            if check_finite is None and not torch.isfinite(e).all():
                e = self._rejected(xg, e, ~torch.isfinite(e))
            g = None
            if e.requires_grad:   # (no row left to differentiate: every energy was rejected)
                (g,) = torch.autograd.grad(e.sum(), xg, create_graph=create_graph, allow_unused=True)
            g = torch.zeros_like(xg) if g is None else g
        if not create_graph:
            e, g = e.detach(), g.detach()
        return self._apply_policy(x, e, g, check_finite, energy_counted=True)

    def _apply_policy(self, x: torch.Tensor, e: torch.Tensor, g: torch.Tensor, check_finite: bool | None,
                      energy_counted: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(-E, -grad E) with the rows whose energy or gradient is non-finite raised on, passed
        through or rejected as `check_finite` (and the policy) says, and counted in counter.nonfinite
        (rows with a non-finite energy only once: `energy_counted` says `energy` did it)."""
        bad_e = ~torch.isfinite(e)
        bad = bad_e | ~torch.isfinite(g).all(-1)
        if not bad.any():
            return -e, -g
        if self._strict(check_finite):
            raise NonFiniteError(f"{self.name}: energy gradient is non-finite at {int(bad.sum())} of "
                                 f"{x.shape[0]} points")
        self.counter.add_nonfinite(int((bad & ~bad_e).sum()) if energy_counted else int(bad.sum()))
        if check_finite is None:
            e = torch.where(bad, torch.full_like(e, torch.inf), e)
            g = torch.where(bad[:, None], torch.zeros_like(g), g)
        return -e, -g

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad log R(x), (B, d); one energy call per row."""
        return self.log_reward_and_score(x)[1]

    # -- ground truth ---------------------------------------------------------------------------
    @property
    def has_samples(self) -> bool:
        return type(self)._sample is not Target._sample

    def _sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        """n exact (or reference) samples, shape (n, d). Costs no energy calls."""
        if not self.has_samples:
            raise NotImplementedError(f"target {self.name!r} has no exact or reference samples")
        return self._sample(int(n))

    def mode_coverage(self, x: torch.Tensor) -> dict | None:
        """{'mode_coverage': fraction in [0, 1], ...} for targets with known modes, else None."""
        return None

    @property
    def has_optimal_drift(self) -> bool:
        return type(self).optimal_drift is not Target.optimal_drift

    def optimal_drift(self, x: torch.Tensor, t: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
        """The exact optimal drift (B, d) at states x (B, d), times t (B,), for the pinned-Brownian
        reference of scale sigma (default: the target's): the Föllmer drift, under which X_1 ~ p
        exactly in continuous time. With f = p / N(0, sigma^2 I) and h_t = f * N(0, sigma^2 (1-t) I),
            mu*(x, t) = sigma^2 grad log h_t(x) = E[sigma^2 grad log p(Y) + Y | X_t = x],
        the posterior of Y = X_1 given X_t = x being  p(y) N(x; t y, sigma^2 t (1 - t) I).
        Ground truth for diagnostics (how far a learned drift is from the optimum, how much a grid's
        discretisation costs with no learning error); targets define it where it is computable.
        Costs no energy calls."""
        raise NotImplementedError(f"target {self.name!r} has no closed-form optimal drift")

    def _energy(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Optional closed-form (E(x), grad E(x)), (B,), (B, d), uncounted. Targets that define it
        skip autograd in `log_reward_and_score` when no second derivatives are needed (a speed-up
        only: tests check it against autograd)."""
        raise NotImplementedError

    def extra_metrics(self, x: torch.Tensor, x_true: torch.Tensor | None,
                      log_w: torch.Tensor | None = None) -> dict:
        """Target-specific sample metrics added to the report (particles: distance/energy W1/W2;
        peptides: torsion KLs and basin populations, also importance-weighted by log_w (n,))."""
        return {}

    def extra_plots(self, x: torch.Tensor, x_true: torch.Tensor | None, directory: str, title: str = "") -> None:
        """Target-specific PNG plots written to `directory` (particles: distance/energy histograms)."""

    def settings(self, recipe: str, max_energy_calls: float | None = None) -> dict:
        """Config keys measured best for this target under `recipe` ({} if none were measured), for
        a run of `max_energy_calls` (None: the first, default budget). `recommended[recipe]` is one
        dict of keys, or a list of them measured at different budgets (each with its own
        `max_energy_calls`, the default first): a budget gets the settings measured at the largest
        budget it reaches, or the smallest one's below them all (`settings_for_budget`)."""
        return settings_for_budget(self.recommended.get(recipe, {}), max_energy_calls)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projection onto the state space: the identity here; particle systems remove the centre of
        mass (their energy is translation invariant)."""
        return x

    def to_user(self, z: torch.Tensor) -> torch.Tensor:
        """The user's coordinates of rows z of this target's own (identity; a `StandardizedTarget`
        maps x = m + L z). Samples leave the sampler through it."""
        return z

    def from_user(self, x: torch.Tensor) -> torch.Tensor:
        """This target's own coordinates of rows x in the user's (identity unless standardized)."""
        return x

    def make_reference(self, sigma: float):
        """The reference process of this target's state space (pinned Brownian on R^d; particle
        targets return a centre-of-mass-free one)."""
        from ..sde.reference import PinnedBrownian
        return PinnedBrownian(sigma)

    def info(self) -> dict:
        return {"name": self.name, "dim": self.dim, "log_Z": self.log_Z, "has_samples": self.has_samples}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, log_Z={self.log_Z})"
