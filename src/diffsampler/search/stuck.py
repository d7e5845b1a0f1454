"""Chains stuck far in a tail: the robust energy cut-off shared by the pilot and the searchers.

A user's energy can be astronomically large far out (an exponential inside a likelihood, a
recursion whose roots leave the unit circle): a MALA chain that starts or lands there has
gradients so large that every proposal is rejected, and it stays, its states in every estimate
made from the chains. Such a state is judged by the energies of all the chains together:

    E > median(E) + k * 1.4826 MAD(E),

the median and the median absolute deviation being estimates that up to half the chains cannot move
(Hampel 1974, "The influence curve and its role in robust estimation"); 1.4826 MAD is the sd of a
normal law. With k = 30 a Gamma(d/2) energy (a Gaussian posterior's) has tail mass 1e-5 at d = 1
and below 1e-9 for every d >= 2, so no state of the target's own mass is judged stuck.
"""
from __future__ import annotations

import math

import torch

STUCK_ROBUST_SDS = 30.0


def energy_cutoff(e: torch.Tensor, robust_sds: float = STUCK_ROBUST_SDS) -> float:
    """median(e) + robust_sds * 1.4826 MAD(e) over the finite entries of e; +inf for robust_sds = 0,
    no finite entry or a zero MAD."""
    e = e[torch.isfinite(e)].double()
    if robust_sds <= 0 or e.numel() == 0:
        return math.inf
    med = e.median()
    spread = 1.4826 * (e - med).abs().median()
    return float(med + robust_sds * spread) if spread > 0 else math.inf


def stuck_chains(e: torch.Tensor, robust_sds: float = STUCK_ROBUST_SDS) -> torch.Tensor:
    """(C,) True for chains whose energy e (C,) is non-finite or above `energy_cutoff(e, robust_sds)`."""
    return ~torch.isfinite(e) | (e > energy_cutoff(e, robust_sds))


__all__ = ["energy_cutoff", "stuck_chains", "STUCK_ROBUST_SDS"]
