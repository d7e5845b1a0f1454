"""The searcher interface: one entry point for every searcher, and their registry.

A searcher fills the replay buffer of a training round (SGDS, Kim et al. 2025). Every searcher is a
class registered in SEARCHERS with its options dataclass, built from the options, with

    calls() -> int                             the energy calls one run costs (budgets are sized from it)
    run(target, x0, scale, novelty=None, alpha=0.0, round=0) -> SearchResult

The chains target the target's energy, or in later rounds the SGDS auxiliary energy E - alpha *
novelty(x) (`search.energy`; tempering and annealing searchers re-temper it); x0 (n, d) are the
chains' initial points on the target's state space, drawn by the caller from N(0, s^2 I); `scale` is
the reference process's sigma (the default spread of the start); `round` the SGDS round (0-based:
a searcher may change with it, as the MD searcher's temperature does). Inside, a searcher composes the small
kernels of `search/` (init and step over an explicit state: MALA, underdamped Langevin, ...); AIS,
tempering and SMC take the inner kernel as an argument. The result always carries the TRUE energies
of its samples (never a novelty-shifted one) and, where the searcher has one, an estimate of log Z.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..components import Registry, option

SEARCHERS = Registry("searcher")


@dataclass
class SearchResult:
    """x: (n, d) samples; energy: (n,) their true energies E(x); log_Z_hat: a log Z estimate (AIS,
    SMC) or None; info: JSON-able statistics (acceptance, resets, ...)."""

    x: torch.Tensor
    energy: torch.Tensor
    log_Z_hat: float | None
    info: dict = field(default_factory=dict)


@dataclass
class ChainOptions:
    """The options every chain searcher shares (flat config keys search_*)."""

    chains: int = option(3000, "number of chains", alias="search_chains", low=1)
    steps: int = option(100, "MCMC steps per chain after burn-in (AIS, SMC: annealing levels)", alias="search_steps",
                        low=1)
    burnin: int = option(0, "MCMC steps discarded first, adapting the step size", alias="search_burnin", low=0)
    thin: int = option(10, "keep every k-th state", alias="search_thin", low=1)
    step_size: float = option(0.01, "initial MCMC step size (adapted during burn-in)", alias="search_step_size",
                              low=0.0, low_open=True)
    adapt_rate: float = option(0.3, "burn-in adaptation: log h += rate (acceptance - 0.574) per step",
                               alias="search_adapt_rate", low=0.0, low_open=True)
    init_std: float | None = option(None, "chains start at N(0, s^2 I) (AIS, SMC: their base); None: the "
                                    "reference sigma", alias="search_init_std", low=0.0, low_open=True)


Start = Callable[[int, float], torch.Tensor]   # (n chains, std) -> (n, d) initial points


class ChainSearcher:
    """Base of the searchers whose chains each cost one call at the start and `calls_per_step` per
    step (burn-in included); `self.o` holds the options."""

    calls_per_step = 1

    def __init__(self, options: ChainOptions) -> None:
        self.o = options

    def calls(self) -> int:
        return self.o.chains * (1 + self.calls_per_step * (self.o.burnin + self.o.steps))


def start_std(options: ChainOptions, scale: float) -> float:
    """The std of the chains' start N(0, s^2 I): the options' init_std, else the reference's sigma."""
    return options.init_std if options.init_std is not None else scale


def chain_result(samples, info: dict) -> SearchResult:
    """A SearchResult from recorded chain states (`ChainSamples`-like: .flat() -> (x, E))."""
    x, e = samples.flat()
    return SearchResult(x, e, None, info)


__all__ = ["SEARCHERS", "SearchResult", "ChainOptions", "ChainSearcher", "Start", "start_std", "chain_result"]
