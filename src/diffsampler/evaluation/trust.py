"""When not to trust a sampler's output: plain warnings from its importance weights.

A diffusion sampler's samples carry log-weights log w = log p̃ - log q (up to the sampler's path
terms), so the same diagnostics as for importance sampling apply:
- PSIS k̂ (`psis`): above min(1 - 1/log10 S, 0.7) weighted estimates (log Z (IS), weighted means,
  resampled draws) are unreliable (Vehtari et al. 2024; Yao et al. 2018).
- ESS below 1% of the samples: the weighted estimates rest on a handful of samples, and the raw
  samples are far from p (the weights are what would correct them).
- EUBO - ELBO (where the target has reference samples) above log(1 / 1%) = 4.6 nats. The gap is the
  symmetrised path-space KL, KL(q||p) + KL(p||q); for log-normal weights it equals Var(log w) and the
  ESS fraction is exp(-Var(log w)), so a gap above 4.6 means an ESS below 1% even where the
  evaluation's few draws missed the heavy tail that would show it (k̂ and the ESS are estimated on
  `eval_samples` draws; the gap also uses the target's own samples, which find the mass the sampler misses).
- Non-finite energies at the sampler's samples (zero density, or outside the energy's domain) above
  1%: the sampler puts visible mass where the target has none.
Raw samples are a good answer only when the ESS is high; weighted or resampled ones when k̂ is low.
"""
from __future__ import annotations

import math

ESS_WARNING = 0.01          # ESS as a fraction of the samples
K_WARNING = 0.7             # PSIS k̂ (the threshold for S >= 2,000 draws; fewer draws lower it)
NONFINITE_WARNING = 0.01    # fraction of evaluated samples with a non-finite energy
GAP_WARNING = math.log(1.0 / ESS_WARNING)   # EUBO - ELBO in nats (4.6): ESS ~ exp(-gap) below 1%


def trust_warnings(m: dict) -> list[str]:
    """Warning lines for a metrics/report dict with keys 'psis_k', 'psis_k_threshold', 'ess',
    'eubo_minus_elbo', 'nonfinite_fraction' (missing or None: not checked)."""
    out = []
    k, thr = m.get("psis_k"), m.get("psis_k_threshold")
    limit = K_WARNING if thr is None else min(K_WARNING, thr)
    if k is not None and k > limit:
        out.append(f"PSIS k-hat = {k:.2f} > {limit:.2f}: the importance weights have too heavy a tail; "
                   "log Z (IS), weighted means and resampled draws are unreliable (train longer or "
                   "change the recipe)")
    ess = m.get("ess")
    if ess is not None and ess < ESS_WARNING:
        out.append(f"ESS = {100 * ess:.2g}% of the samples (< {100 * ESS_WARNING:g}%): raw samples are far from "
                   "the target and weighted estimates rest on a few samples")
    gap = m.get("eubo_minus_elbo")
    if gap is not None and gap > GAP_WARNING:
        out.append(f"EUBO - ELBO = {gap:.3g} nats (> {GAP_WARNING:.1f}): the sampler is far from the target where "
                   f"its reference samples lie (an ESS near exp(-{gap:.3g})); weighted and raw estimates are "
                   "unreliable even where k-hat and the ESS look fine")
    bad = m.get("nonfinite_fraction")
    if bad is not None and bad > NONFINITE_WARNING:
        out.append(f"{100 * bad:.2g}% of the samples have a non-finite energy (outside the target's domain, or "
                   "overflow): the sampler puts mass where the target has none")
    return out


__all__ = ["trust_warnings", "ESS_WARNING", "K_WARNING", "GAP_WARNING", "NONFINITE_WARNING"]
