"""What `diffsampler train TARGET` runs with no flags: the target's own measured settings, else the
default of its kind.

A built-in target carries the settings our experiments found best for it (`Target.default_recipe`,
`Target.recommended[recipe]`: searcher start and step size, network width, budget, ...; each cited
in docs/RESULTS.md), so the command line reproduces the results page with `recipe=` alone. Any other
target gets the default of its kind:
- particle systems (a `symmetry`): the equivariant EGNN drift with the score (DW-4's recipe);
- every other target: the recipe of `EUCLIDEAN_RECIPE`, sized by dimension; a user's energy of
  unknown scale runs in the coordinates of a pilot (`pilot=auto`, training/pilot_phase.py).
"""
from __future__ import annotations

from .config import TrainConfig
from .recipes import RECIPES

# the default for Euclidean targets without settings of their own (held-out suite: docs/RESULTS.md)
EUCLIDEAN_RECIPE = "sgds"
PARTICLE_RECIPE = "sgds_jeffreys"


def target_kind(target) -> str:
    """'particle' (the target declares a symmetry group) or 'euclidean'."""
    return "particle" if getattr(target, "symmetry", None) is not None else "euclidean"


def kind_keys(target, recipe: str) -> dict:
    """The generic keys of `target`'s kind for `recipe` (sized by the dimension d)."""
    d = target.dim
    if target_kind(target) == "particle":
        keys = {"drift": "egnn_langevin", "width": 64, "depth": 2, "train_steps": 20, "lr_final": 0.1,
                "iterations": 6000}
    else:
        keys = {"width": 64 if d <= 4 else (128 if d <= 32 else 256), "iterations": 10000 if d <= 32 else 20000}
    keys.update(time_warp=2.0 if target_kind(target) == "euclidean" else 1.0, ema_decay=0.999)
    if recipe.startswith("sgds") and target_kind(target) == "euclidean":
        # MALA chains from N(0, sigma^2) (for a user energy: the pilot's standardised coordinates), sized
        # for a time budget of minutes: ~1,000 x 300 = 300K calls per round, 20,000 buffer states; states of
        # chains stuck far in a tail kept out of the buffer (centred eight schools: 5% at E ~ 1e4-1e5)
        keys.update(searcher="mala", search_chains=1000, search_burnin=100, search_steps=200, search_thin=10,
                    search_energy_cut=30.0)
        # a buffer that holds every state of both rounds' searches: a full rank buffer evicts its
        # highest energies, which cut the tails of a heavy-tailed or curved posterior (held-out suite:
        # student_t5, the banana; docs/RESULTS.md)
        per_round = keys["search_chains"] * (keys["search_steps"] // keys["search_thin"])
        keys.update(buffer_size=RECIPES.get(recipe, {}).get("rounds", 1) * per_round)
    return keys


def default_keys(target, recipe: str | None = None, max_energy_calls: float | None = None) -> dict:
    """Config keys for `target` (see module): its own settings for `recipe` (default: its default
    recipe) when it has them, which are complete (the measured runs' keys), those measured at the
    largest budget that `max_energy_calls` reaches where it has several (`Target.settings`); else
    its kind's."""
    own = getattr(target, "default_recipe", None)
    kind_default = PARTICLE_RECIPE if target_kind(target) == "particle" else EUCLIDEAN_RECIPE
    recipe = recipe or own or kind_default
    settings = target.settings(recipe, max_energy_calls)
    return {"recipe": recipe, **(settings if settings else kind_keys(target, recipe))}


def default_config(target, recipe: str | None = None, max_energy_calls: float | None = None) -> TrainConfig:
    """The TrainConfig of `default_keys(target, recipe, max_energy_calls)`."""
    return TrainConfig.from_dict(default_keys(target, recipe, max_energy_calls))


__all__ = ["default_keys", "default_config", "target_kind", "kind_keys", "EUCLIDEAN_RECIPE", "PARTICLE_RECIPE"]
