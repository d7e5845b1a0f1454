"""The coordinates a run trains in: the user's target, its standardised view after a pilot, or a
molecule's internal coordinates (`coordinates=internal`, targets/internal_coordinates.py).

`training_target` decides once per run: a run that resumes, or starts from another run
(`init_from`), reuses the standardisation stored in that run's checkpoint (the sampler's weights
only mean something in the coordinates they were trained in); a new run runs the pilot
(`search.pilot`) when the config asks for it (`pilot=on`, or `auto` for a target whose scale is
unknown) and the target is not a particle system (whose coordinates carry a symmetry that an
affine map would break).
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..search.pilot import run_pilot
from ..targets import Target
from ..targets.internal_coordinates import InternalCoordinateTarget
from ..targets.standardized import StandardizedTarget
from ..targets.view import CoordinateView


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
    entry of the checkpoint the run continues or starts from ({'loc', 'chol'} or None), if any."""
    if saved is not None:
        return rebuild_view(target, saved), None
    if cfg.coordinates == "internal":
        with target.counter.use("search"):
            return InternalCoordinateTarget.build(target), None
    if not wants_pilot(target, cfg):
        return target, None
    torch.manual_seed(cfg.seed)
    with target.counter.use("search"):
        res = run_pilot(target, chains=cfg.pilot_chains, steps=cfg.pilot_steps)
    return StandardizedTarget(target, res.loc, res.chol), res.summary()


def rebuild_view(target: Target, saved: dict) -> CoordinateView:
    """The view a checkpoint's 'standardization' entry describes ({'kind': 'internal', ...}, or the
    pilot's {'loc', 'chol'})."""
    if saved.get("kind") == "internal":
        return InternalCoordinateTarget(target, saved["q0"], saved["scale"], saved["cut_centre"])
    return StandardizedTarget(target, saved["loc"], saved["chol"])


def standardization(target: Target) -> dict | None:
    """What a checkpoint stores to rebuild `target`'s coordinates (None: the user's own)."""
    return target.state_dict() if isinstance(target, CoordinateView) else None


__all__ = ["rebuild_view", "standardization", "training_target", "wants_pilot"]
