"""The Searcher phase of a training round (SGDS, Kim et al. 2025): run an MCMC searcher on the
target energy E (round 1) or on the auxiliary energy E - alpha * novelty(x) (later rounds), and
return its samples with their TRUE energies (the buffer must never hold a novelty-shifted reward).
All energy calls are counted in the 'search' phase."""
from __future__ import annotations

import torch

from ..search import SEARCHERS, SearchResult, run_mala, target_potential
from ..search.searcher import start_std


def run_search(cfg, target, novelty=None, *, dtype=torch.float32, device="cpu") -> SearchResult:
    """One search phase as configured by `cfg` (the searcher named by `searcher`, with its options
    from the flat search_* keys). `novelty`: an RND model whose novelty enters the auxiliary energy
    when cfg.rnd_alpha > 0 (None in round 1). Energy calls count as 'search'."""
    flat = cfg.to_dict()
    searcher = SEARCHERS.build(cfg.searcher, flat)
    sigma = cfg.sigma if cfg.sigma is not None else target.sigma
    x0 = start_std(searcher.o, sigma) * torch.randn(searcher.o.chains, target.dim, dtype=dtype, device=device)
    if target.symmetry is not None:   # particle systems: start on the zero-centre-of-mass subspace
        x0 = target.project(x0)
    before = target.counter.counts["search"]
    with target.counter.use("search"):
        res = searcher.run(target, x0, sigma, novelty, cfg.rnd_alpha)
    res = drop_far_samples(res)
    if target.symmetry is not None:   # E is translation invariant: store the centred configurations
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
