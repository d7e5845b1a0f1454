"""Named recipes: bundles of config values, so that comparisons are one flag apart
(`diffsampler train manywell32 recipe=sgds`). Keys given next to the recipe override it."""
from __future__ import annotations

from ..errors import ConfigError

RECIPES: dict[str, dict] = {
    "custom": {},
    # on-policy baselines (gfn-diffusion / continuous-time paper)
    "tb": {"objective": "tb"},
    "tb_expl": {"objective": "tb", "exploration": 0.2, "exploration_until": 0.25},
    "vargrad": {"objective": "vargrad"},
    "subtb": {"objective": "subtb", "lr_flow": 1e-2},
    "pis": {"objective": "kl"},
    # TB + local search: replay of own samples improved by MALA (Sendera et al., 2024)
    "tb_ls": {"objective": "tb", "behaviour": "mixed", "offpolicy_data": "replay", "exploration": 0.1,
              "exploration_until": 0.25, "local_search_every": 100, "local_search_steps": 200},
    # SGDS (Kim et al., 2025): searcher -> buffer -> mixed on/off-policy TB -> re-init, 2 rounds
    "sgds": {"objective": "tb", "behaviour": "mixed", "offpolicy_data": "search", "searcher": "mala",
             "rounds": 2, "rnd_alpha": 100.0, "reinit": True, "keep_log_Z": True, "buffer_priority": "rank",
             "search_burnin": 100, "search_thin": 10},
    # SGDS with the symmetric (Jeffreys) objective: EUBO - ELBO is the sum of the two path-space KL
    # divergences, so on-policy batches minimise KL(P_F || P_B) by the pathwise gradient and buffer
    # batches minimise KL(P_B || P_F) by maximum likelihood on backward trajectories from the
    # searcher's samples. Neither term uses log Z; no novelty bonus, and round 2 fine-tunes (its
    # buffer only adds samples). Manywell-128 at 10M calls: gap 75.1 against TB's 91.7, and 68.7 with
    # width=512 (paper, TB at 20M: 70.35); Manywell-32 at 20M: 2.80 with width=256 (paper 3.85), and
    # ~3.1 at 4M calls; DW-4: 2.45 (docs/RESULTS.md).
    "sgds_jeffreys": {"objective": "ml", "objective_fwd": "kl", "behaviour": "mixed", "offpolicy_data": "search",
                      "searcher": "mala", "rounds": 2, "rnd_alpha": 0.0, "reinit": False, "keep_log_Z": True,
                      "buffer_priority": "uniform", "search_burnin": 100, "search_thin": 10},
    # SGDS ablations
    "sgds_no_rnd": {"objective": "tb", "behaviour": "mixed", "offpolicy_data": "search", "searcher": "mala",
                    "rounds": 2, "rnd_alpha": 0.0, "search_burnin": 100, "search_thin": 10},
    "sgds_finetune": {"objective": "tb", "behaviour": "mixed", "offpolicy_data": "search", "searcher": "mala",
                      "rounds": 2, "rnd_alpha": 100.0, "reinit": False, "search_burnin": 100, "search_thin": 10},
    "sgds_reset_log_Z": {"objective": "tb", "behaviour": "mixed", "offpolicy_data": "search", "searcher": "mala",
                         "rounds": 2, "rnd_alpha": 100.0, "keep_log_Z": False, "search_burnin": 100,
                         "search_thin": 10},
    # amortise searcher samples by maximum likelihood only
    "ais_ml": {"objective": "ml", "behaviour": "backward", "offpolicy_data": "search", "searcher": "ais",
               "rounds": 1},
}


def recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ConfigError(f"config key 'recipe' = {name!r}: expected one of {sorted(RECIPES)}")
    return dict(RECIPES[name])
