"""The Searcher phase of a training round (SGDS, Kim et al. 2025): run the configured searcher on the
target energy E (round 1) or on the auxiliary energy E - alpha * novelty(x) (later rounds), and
return its samples with their TRUE energies (the buffer must never hold a novelty-shifted reward).
All energy calls are counted in the 'search' phase.

A long search runs in blocks of chains (searchers whose chains are independent declare
`splittable`), each of about `search_checkpoint_calls` energy calls: after each block the trainer can
write a checkpoint (the finished blocks' samples and the random state travel in it) and honour a
signal or a time budget, so a kill loses at most one block and a resumed search gives the same
samples as an uninterrupted one."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..search import SEARCHERS, SearchResult, run_mala, target_potential
from ..search.searcher import start_std
from ..search.stuck import energy_cutoff


@dataclass
class SearchProgress:
    """A round's search, block by block: what a checkpoint keeps in the middle of it."""

    round: int
    chains: list[int]                      # chains of each block
    done: int = 0
    x: list[torch.Tensor] = field(default_factory=list)
    energy: list[torch.Tensor] = field(default_factory=list)
    log_Z: list[float | None] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)

    def add(self, res: SearchResult, calls: int) -> None:
        self.calls.append(int(calls))
        self.x.append(res.x.detach().cpu())
        self.energy.append(res.energy.detach().cpu())
        self.log_Z.append(res.log_Z_hat)
        self.infos.append(res.info)
        self.done += 1

    def result(self) -> SearchResult:
        """The blocks together: samples concatenated; log Z-hat = log of the chain-weighted mean of the
        blocks' Z-hats (the estimate of all chains at once); the blocks' statistics merged."""
        if len(self.infos) == 1:
            return SearchResult(self.x[0], self.energy[0], self.log_Z[0], dict(self.infos[0]))
        n = torch.tensor(self.chains[:self.done], dtype=torch.float64)
        log_Z = None
        if all(v is not None for v in self.log_Z):
            log_Z = float(torch.logsumexp(torch.log(n) + torch.tensor(self.log_Z, dtype=torch.float64), 0)
                          - torch.log(n.sum()))
        info = {"blocks": len(self.infos)}
        if all("acceptance" in i for i in self.infos):
            info["acceptance"] = float(sum(w * i["acceptance"] for w, i in zip(n.tolist(), self.infos)) / n.sum())
        if all("n_reset" in i for i in self.infos):
            info["n_reset"] = int(sum(i["n_reset"] for i in self.infos))
        return SearchResult(torch.cat(self.x), torch.cat(self.energy), log_Z, info)

    def state_dict(self) -> dict:
        return {"round": self.round, "chains": self.chains, "done": self.done, "x": self.x, "energy": self.energy,
                "log_Z": self.log_Z, "infos": self.infos, "calls": self.calls}

    @classmethod
    def from_state(cls, state: dict) -> SearchProgress:
        return cls(**state)


def plan(cfg) -> list[int]:
    """Chains of each block: one block unless the searcher is splittable and costs more than
    search_checkpoint_calls, else as many near-equal blocks as that bound needs."""
    searcher = SEARCHERS.build(cfg.searcher, cfg.to_dict())
    C, calls = searcher.o.chains, searcher.calls()
    if not SEARCHERS.trait(cfg.searcher, "splittable", False) or not cfg.search_checkpoint_calls:
        return [C]
    blocks = min(C, max(1, math.ceil(calls / cfg.search_checkpoint_calls)))
    return [C // blocks + (1 if b < C % blocks else 0) for b in range(blocks)]


def run_block(cfg, target, novelty, chains: int, dtype, device, round: int = 0) -> SearchResult:
    """One block: `chains` chains of the configured searcher from N(0, init_std^2) (CoM-free for
    particle systems)."""
    searcher = SEARCHERS.build(cfg.searcher, {**cfg.to_dict(), "search_chains": chains})
    sigma = cfg.sigma if cfg.sigma is not None else target.sigma
    x0 = target.project(start_std(searcher.o, sigma) * torch.randn(chains, target.dim, dtype=dtype, device=device))
    with target.counter.use("search"):
        return searcher.run(target, x0, sigma, novelty, cfg.rnd_alpha, round=round)


def run_search(cfg, target, novelty=None, *, dtype=torch.float32, device="cpu", progress: SearchProgress | None = None,
               round: int = 0, after_block: Callable[[SearchProgress], None] | None = None,
               show: bool = False) -> SearchResult:
    """One search phase as configured by `cfg` (the searcher named by `searcher`, its options from the
    flat search_* keys), block by block (module docstring), continuing `progress` if given; `novelty`:
    an RND model whose novelty enters the auxiliary energy when cfg.rnd_alpha > 0 (None in round 1).
    `after_block(progress)` is called after each block but the last; `show`: a progress bar (chains,
    energy calls)."""
    from tqdm.auto import tqdm

    progress = progress or SearchProgress(round, plan(cfg))
    bar = tqdm(total=sum(progress.chains), initial=sum(progress.chains[:progress.done]), disable=not show,
               desc=f"search round {round + 1} ({cfg.searcher})", unit="chain", dynamic_ncols=True)
    try:
        while progress.done < len(progress.chains):
            before = target.counter.counts["search"]
            res = run_block(cfg, target, novelty, progress.chains[progress.done], dtype, device, progress.round)
            progress.add(res, target.counter.counts["search"] - before)
            bar.update(progress.chains[progress.done - 1])
            bar.set_postfix(calls=f"{sum(progress.calls):,}")
            if after_block is not None and progress.done < len(progress.chains):
                after_block(progress)
    finally:
        bar.close()
    return finish_search(progress, target, device, cfg.search_energy_cut)


def finish_search(progress: SearchProgress, target, device, energy_cut: float = 0.0) -> SearchResult:
    """The finished blocks as the search's result: far samples dropped (`drop_far_samples`), centred,
    with its statistics."""
    res = drop_far_samples(progress.result(), energy_cut)
    res.x = target.project(res.x.to(device))   # E is translation invariant: store centred configurations
    res.energy = res.energy.to(device)
    res.info["energy_calls"] = sum(progress.calls)
    res.info["samples"] = int(res.x.shape[0])
    if res.energy.numel():   # the true E of what enters the buffer: shows a search run off to high energy
        e = res.energy.double()
        res.info["energy_median"] = float(e.median())
        res.info["energy_max"] = float(e.max())
    return res


def sharded_plan(cfg) -> list[int]:
    """`plan`, with a splittable searcher's blocks a multiple of `shards` (at most one per chain), so
    that every process of a sharded run has blocks to run; the blocks depend on shards, not processes."""
    chains, S = plan(cfg), cfg.shards or 1
    if len(chains) % S == 0 or not SEARCHERS.trait(cfg.searcher, "splittable", False):
        return chains
    C = sum(chains)
    blocks = min(C, -(-len(chains) // S) * S)
    return [C // blocks + (1 if b < C % blocks else 0) for b in range(blocks)]


def run_sharded_search(cfg, target, novelty, ctx, *, dtype, device, progress: SearchProgress | None = None,
                       round: int = 0, after_block: Callable[[SearchProgress], None] | None = None,
                       show: bool = False) -> SearchResult:
    """`run_search` for shards > 1: block b runs on its own random stream, seeded from (seed, round,
    b), on process b mod W; the processes' blocks are gathered in block order after each wave of W
    blocks (then `after_block`), so every process holds the same samples, those of one process with
    the same shards. Each process counts its own energy calls (the trainer sums them)."""
    from tqdm.auto import tqdm

    from ..distributed import Tag, derive_seed, rng_fork

    progress = progress or SearchProgress(round, sharded_plan(cfg))
    n, dev = len(progress.chains), torch.device(device)
    bar = tqdm(total=sum(progress.chains), initial=sum(progress.chains[:progress.done]),
               disable=not (show and ctx.is_main), desc=f"search round {round + 1} ({cfg.searcher})", unit="chain",
               dynamic_ncols=True)
    try:
        while progress.done < n:
            mine, mined = progress.done + ctx.rank, None
            if mine < n:
                before = target.counter.counts["search"]
                with rng_fork(dev, seed=derive_seed(cfg.seed, Tag.SEARCH_BLOCK, round, mine)):
                    res = run_block(cfg, target, novelty, progress.chains[mine], dtype, device, progress.round)
                mined = (SearchResult(res.x.detach().cpu(), res.energy.detach().cpu(), res.log_Z_hat, res.info),
                         target.counter.counts["search"] - before)
            for item in ctx.all_gather_objects(mined)[:n - progress.done]:
                progress.add(*item)
                bar.update(progress.chains[progress.done - 1])
            if after_block is not None and progress.done < n:
                after_block(progress)
    finally:
        bar.close()
    return finish_search(progress, target, device, cfg.search_energy_cut)


def drop_far_samples(res: SearchResult, robust_sds: float = 0.0) -> SearchResult:
    """Drop samples whose true energy is non-finite, more than REWARD_SPAN above the lowest one, or
    (robust_sds > 0) above `energy_cutoff(E, robust_sds)`: states of chains stuck far in a tail,
    where a user's energy can be astronomically large. Under the target such states have no mass (at
    30 robust sds a Gamma(d/2) energy, a Gaussian posterior's, has tail mass 1e-5 at d = 1 and below
    1e-9 for every d >= 2),
    and in the buffer they would only teach the learner the tails: a balance loss squares their
    residuals of thousands of nats. Counted in info['dropped_far']."""
    from ..objectives.bounded import REWARD_SPAN

    e = res.energy
    ok = torch.isfinite(e)
    if ok.any():
        ok &= (e <= e[ok].min() + REWARD_SPAN) & (e <= energy_cutoff(e, robust_sds))
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
