"""The Searcher phase of a training round (SGDS, Kim et al. 2025): run an MCMC searcher on the
target energy E (round 1) or on the auxiliary energy E - alpha * novelty(x) (later rounds), and
return its samples with their TRUE energies (the buffer must never hold a novelty-shifted reward).
All energy calls are counted in the 'search' phase."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..search import (MALA, auxiliary_potential, geometric_temperatures, run_ais, run_mala, run_rmp_langevin,
                      run_tempering, run_underdamped, target_potential)

SEARCHERS = ("none", "mala", "ais", "pt", "underdamped", "rmp_langevin")


@dataclass
class SearchResult:
    x: torch.Tensor            # (n, d) samples
    energy: torch.Tensor       # (n,) true energies E(x)
    log_Z_hat: float | None    # AIS estimate (log of an unbiased Z estimate); None for MCMC
    info: dict


def run_search(cfg, target, novelty=None, *, dtype=torch.float32, device="cpu") -> SearchResult:
    """One search phase as configured by `cfg` (searcher, search_* keys). `novelty`: an RND model
    whose novelty enters the auxiliary energy when cfg.rnd_alpha > 0 (None in round 1)."""
    name = cfg.searcher
    aux = novelty is not None and cfg.rnd_alpha > 0
    pot = auxiliary_potential(target, novelty, cfg.rnd_alpha) if aux else target_potential(target)
    sigma = cfg.sigma if cfg.sigma is not None else target.sigma
    init_std = cfg.search_init_std if cfg.search_init_std is not None else sigma
    x0 = init_std * torch.randn(cfg.search_chains, target.dim, dtype=dtype, device=device)
    if hasattr(target, "project"):   # particle systems: start on the zero-centre-of-mass subspace
        x0 = target.project(x0)
    before = target.counter.counts["search"]
    with target.counter.use("search"):
        if name == "mala":
            r = run_mala(pot, x0, cfg.search_steps, step_size=cfg.search_step_size, n_adapt=cfg.search_burnin,
                         thin=cfg.search_thin, adapt_rate=cfg.search_adapt_rate)
            x, e = r.flat()
            res = SearchResult(x, e, None, {"acceptance": r.acceptance_rate, "n_reset": r.n_reset})
        elif name == "ais":
            # step sizes adapt per chain along the path: log Z-hat is then consistent rather than
            # exactly unbiased; it only initialises the learner's log Z.
            r = run_ais(target, cfg.search_chains, cfg.search_steps, s0=init_std, kernel=MALA(cfg.search_step_size),
                        n_inner=cfg.search_inner, adapt=True, dtype=dtype, device=device,
                        novelty=novelty if aux else None, alpha=cfg.rnd_alpha if aux else 0.0)
            ok = torch.isfinite(r.log_w)
            res = SearchResult(r.x[ok], r.energy[ok], None if aux else r.log_Z,
                               {"acceptance": r.acceptance_rate, "n_reset": r.n_reset, "ais_ess": r.ess})
        elif name == "pt":
            temps = geometric_temperatures(cfg.search_temperatures, cfg.search_t_max)
            r = run_tempering(target, x0, temps, cfg.search_steps, kernel=MALA(cfg.search_step_size, adapt_rate=cfg.search_adapt_rate),
                              n_adapt=cfg.search_burnin, thin=cfg.search_thin,
                              novelty=novelty if aux else None, alpha=cfg.rnd_alpha if aux else 0.0)
            x, e = r.flat()
            res = SearchResult(x, e, None, {"swap_acceptance": [float(a) for a in r.swap_acceptance]})
        elif name == "underdamped":
            r = run_underdamped(pot, x0, cfg.search_steps, step_size=cfg.search_step_size,
                                friction=cfg.search_friction, n_burn=cfg.search_burnin, thin=cfg.search_thin)
            x, e = r.flat()
            res = SearchResult(x, e, None, {"n_reset": r.n_reset})
        elif name == "rmp_langevin":   # Shen-Lee randomized-midpoint underdamped Langevin (unadjusted)
            r = run_rmp_langevin(pot, x0, cfg.search_steps, step_size=cfg.search_step_size,
                                 friction=cfg.search_friction, n_burn=cfg.search_burnin, thin=cfg.search_thin)
            x, e = r.flat()
            res = SearchResult(x, e, None, {"n_reset": r.n_reset})
        else:
            raise ConfigError(f"config key 'searcher' = {name!r}: expected one of {SEARCHERS}")
    res = drop_far_samples(res)
    if hasattr(target, "project"):   # E is translation invariant: store the centred configurations
        res.x = target.project(res.x)
    res.info["energy_calls"] = target.counter.counts["search"] - before
    res.info["samples"] = int(res.x.shape[0])
    if res.energy.numel():   # the true E of what enters the buffer: shows a search run off to high energy
        e = res.energy.double()
        res.info["energy_median"] = float(e.median())
        res.info["energy_max"] = float(e.max())
    return res


def drop_far_samples(res: SearchResult) -> SearchResult:
    """Drop samples whose true energy is non-finite or more than REWARD_SPAN above the lowest one
    (chains stuck far in a user energy's tails, where it is astronomically large): their density
    is below e^-REWARD_SPAN of the best sample's, so keeping them would only teach the learner the
    tails. Counted in info['dropped_far']."""
    from ..objectives.bounded import REWARD_SPAN

    e = res.energy
    ok = torch.isfinite(e)
    if ok.any():
        ok &= e <= e[ok].min() + REWARD_SPAN
    dropped = int((~ok).sum())
    if dropped:
        res = SearchResult(res.x[ok], e[ok], res.log_Z_hat, res.info)
    res.info["dropped_far"] = dropped
    return res


def local_search(cfg, target, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gfn-diffusion's local search: a few MALA steps on the plain target from buffer samples;
    returns the final states and their true energies (calls counted as 'search')."""
    with target.counter.use("search"):
        r = run_mala(target_potential(target), x0, cfg.local_search_steps, step_size=cfg.search_step_size)
    return r.x[-1], r.energy[-1]
