"""The coordinates a run trains in: the user's target, its standardised view after a pilot, or a
molecule's internal coordinates (`coordinates=internal`, targets/internal_coordinates.py).

`training_target` decides once per run: a run that resumes, or starts from another run
(`init_from`), reuses the standardisation stored in that run's checkpoint (the sampler's weights
only mean something in the coordinates they were trained in); a new run runs the pilot
(`search.pilot`) when the config asks for it (`pilot=on`, or `auto` for a target whose scale is
unknown) and the target is not a particle system (whose coordinates carry a symmetry that an
affine map would break).

After a pilot, `refine_grid` sizes the training grid to the stiffness the pilot measured
(`search.pilot.stiffness`: kappa, the median largest Hessian eigenvalue at the pilot's states, in the
standardised coordinates, so that 1 / sqrt(kappa) is the target's narrowest local length scale). The
grid's last step, of length N^-w on a grid of N steps warped with power w, adds noise of sd
sigma N^(-w/2); it resolves that scale when sigma N^(-w/2) <= 1 / (c sqrt(kappa)), i.e.

    N >= (c sigma sqrt(kappa))^(2 / w),        c = pilot_grid,

taken between the configured train_steps and PILOT_GRID_MAX_STEPS. On the held-out suite a banana
(kappa ~ 65) and a Poisson GLM (kappa 35-700) need ~25 steps where 10 leave weighted errors of
0.3-0.6 sd; standard-looking posteriors (kappa 2-10) keep 10 (docs/RESULTS.md, held-out suite).

A finer grid costs iterations: each step of a score-driven rollout is an energy call per row, so on an
expensive energy a 26-step grid leaves a 300 s run a few dozen iterations. The grid is therefore
coarsened, never below train_steps, until the budget affords MIN_AFFORDED_ITERATIONS learner
iterations (`afforded_iterations`: the calls left after the pilot and the first search round, in
max_energy_calls and, under max_seconds, in the seconds left at the pilot's measured seconds per call).
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import ConfigError
from ..search.pilot import run_pilot
from ..targets import Target
from ..targets.internal_coordinates import InternalCoordinateTarget
from ..targets.standardized import StandardizedTarget
from ..targets.view import CoordinateView
from .budget import calls_per_iteration, fixed_calls, pilot_steps, search_calls_per_round, size_iterations


def wants_pilot(target: Target, cfg) -> bool:
    """Whether a new run of `cfg` on `target` runs the pilot."""
    if cfg.pilot == "off" or getattr(target, "symmetry", None) is not None:
        if cfg.pilot == "on" and getattr(target, "symmetry", None) is not None:
            raise ConfigError(f"config key 'pilot' = 'on': target {target.name!r} is a particle system, whose "
                              "symmetry an affine change of coordinates would break")
        return False
    return cfg.pilot == "on" or (cfg.pilot == "auto" and not target.scale_known and cfg.sigma is None)


def training_target(target: Target, cfg, saved: dict | None) -> tuple[Target, dict | None]:
    """(the target the run trains on, the pilot's summary or None). `saved`: the 'standardization'
    entry of the checkpoint the run continues or starts from ({'loc', 'chol'} or None), if any.
    The pilot is part of the run's search: its wall time (summary['seconds']) counts against
    max_seconds, and its MALA stages stop early once they would take more than PILOT_TIME_SHARE of it."""
    if saved is not None:
        return rebuild_view(target, saved), None
    if cfg.coordinates == "internal":
        with target.counter.use("search"):
            return InternalCoordinateTarget.build(target), None
    if not wants_pilot(target, cfg):
        return target, None
    torch.manual_seed(cfg.seed)
    with target.counter.use("search"):
        res = run_pilot(target, chains=cfg.pilot_chains, steps=pilot_steps(cfg), temperature=cfg.pilot_temperature,
                        margin=cfg.pilot_margin, widen=cfg.pilot_widen,
                        max_seconds=None if cfg.max_seconds is None else PILOT_TIME_SHARE * cfg.max_seconds)
    return StandardizedTarget(target, res.loc, res.chol), res.summary()


PILOT_GRID_MAX_STEPS = 30
MIN_AFFORDED_ITERATIONS = 1000   # the fewest iterations among the suites' passing rows: ~900 (gauss_mix)
PILOT_TIME_SHARE = 1 / 3   # under max_seconds the pilot's MALA stages stop early rather than take more of it


def pilot_train_steps(cfg, pilot: dict | None) -> int:
    """The training grid's steps after a pilot whose summary is `pilot` (module docstring); the
    configured train_steps without a pilot, a measured curvature, or with pilot_grid = 0."""
    return grid_choice(cfg, pilot)["steps"]


def grid_choice(cfg, pilot: dict | None) -> dict:
    """{'steps': the grid, 'asked': what the measured stiffness asks for (capped at
    PILOT_GRID_MAX_STEPS), 'afforded_iterations': those the chosen grid affords (None without a budget)}."""
    kappa = (pilot or {}).get("curvature")
    if not cfg.pilot_grid or kappa is None or not math.isfinite(kappa) or kappa <= 0:
        return {"steps": cfg.train_steps, "asked": cfg.train_steps, "afforded_iterations": None}
    sigma = cfg.sigma if cfg.sigma is not None else 1.0
    need = math.ceil((cfg.pilot_grid * sigma * math.sqrt(kappa)) ** (2.0 / cfg.time_warp) - 1e-9)
    asked = steps = max(cfg.train_steps, min(need, PILOT_GRID_MAX_STEPS))
    while steps > cfg.train_steps and _too_few(afforded_iterations(cfg, steps, pilot)):
        steps -= 1
    return {"steps": steps, "asked": asked, "afforded_iterations": afforded_iterations(cfg, steps, pilot)}


def _too_few(iterations: float | None) -> bool:
    return iterations is not None and iterations < MIN_AFFORDED_ITERATIONS


def afforded_iterations(cfg, steps: int, pilot: dict) -> float | None:
    """Learner iterations that a grid of `steps` affords, over one iteration's calls
    (`calls_per_iteration`), in the tighter budget: max_energy_calls less the pilot and every search
    round (as `size_iterations` counts them); max_seconds less the pilot's seconds, turned into calls at
    the pilot's measured seconds per call (which the search and the learner's score calls pay alike),
    less the first search round (later rounds start only once their iterations are reached). None
    without either budget."""
    left = []
    if cfg.max_energy_calls is not None:
        left.append(cfg.max_energy_calls - fixed_calls(cfg, pilot=True))
    seconds, calls = float(pilot.get("seconds") or 0.0), float(pilot.get("energy_calls") or 0.0)
    if cfg.max_seconds is not None and seconds > 0 and calls > 0:
        per_call = seconds / calls
        left.append((cfg.max_seconds - seconds) / per_call - search_calls_per_round(cfg))
    if not left:
        return None
    return max(0.0, min(left)) / calls_per_iteration(dataclasses.replace(cfg, train_steps=steps))


def refine_grid(cfg, pilot: dict | None):
    """`cfg` with the training grid sized to the pilot (`pilot_train_steps`); within max_energy_calls,
    when set, the iterations shrink to what the dearer grid affords."""
    steps = pilot_train_steps(cfg, pilot)
    if steps == cfg.train_steps:
        return cfg
    cfg = dataclasses.replace(cfg, train_steps=steps)
    if cfg.max_energy_calls is not None:
        cfg = dataclasses.replace(cfg, iterations=min(cfg.iterations, size_iterations(cfg, pilot=True)))
    return cfg.validate()


def rebuild_view(target: Target, saved: dict) -> CoordinateView:
    """The view a checkpoint's 'standardization' entry describes ({'kind': 'internal', ...}, or the
    pilot's {'loc', 'chol'})."""
    if saved.get("kind") == "internal":
        return InternalCoordinateTarget(target, saved["q0"], saved["scale"], saved["cut_centre"])
    return StandardizedTarget(target, saved["loc"], saved["chol"])


def standardization(target: Target) -> dict | None:
    """What a checkpoint stores to rebuild `target`'s coordinates (None: the user's own)."""
    return target.state_dict() if isinstance(target, CoordinateView) else None


__all__ = ["rebuild_view", "standardization", "training_target", "wants_pilot", "pilot_train_steps", "refine_grid",
           "afforded_iterations", "grid_choice", "PILOT_GRID_MAX_STEPS", "PILOT_TIME_SHARE", "MIN_AFFORDED_ITERATIONS"]
