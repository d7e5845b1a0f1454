"""The NUTS baseline: numpyro's NUTS with its default settings on the jax log density of a target.

Defaults: step-size adaptation to accept prob 0.8, diagonal mass matrix, max tree depth 10, each
chain started as numpyro's `init_to_uniform` does (uniform on (-2, 2)^d in the unconstrained
space). 4 chains run one after another on the CPU, 1,000 warm-up + 1,000 draws each. A first
pass of chain 0 compiles the jitted loops and is discarded: its extra time is `compile_seconds`.
Gradient evaluations = sum of numpyro's `num_steps` (leapfrog steps, one gradient each) over all
warm-up and sampling iterations of all chains.
"""
from __future__ import annotations

import time

import numpy as np

from .arrays import namespace
from .metrics import moment_errors
from .target import HeldoutTarget


def _one_chain(mcmc, key, init) -> dict:
    """Warm-up (collected) then sampling for one chain; draws (n, d), steps and seconds."""
    fields = ("num_steps", "diverging")
    t0 = time.perf_counter()
    mcmc.warmup(key, init_params=init, extra_fields=fields, collect_warmup=True)
    warm = {k: np.asarray(v) for k, v in mcmc.get_extra_fields().items()}
    mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields)
    samp = {k: np.asarray(v) for k, v in mcmc.get_extra_fields().items()}
    draws = np.asarray(mcmc.get_samples())
    seconds = time.perf_counter() - t0
    return {"draws": draws, "seconds": seconds,
            "grad_evals": int(warm["num_steps"].sum() + samp["num_steps"].sum()),
            "grad_evals_warmup": int(warm["num_steps"].sum()),
            "divergences": int(samp["diverging"].sum()),
            "finite": bool(np.isfinite(draws).all())}


def run_nuts(target: HeldoutTarget, chains: int = 4, warmup: int = 1000, samples: int = 1000,
             seed: int = 0) -> dict:
    """NUTS on `target`; returns draws (chains, samples, d) and the cost/diagnostic figures."""
    namespace("jax")                          # float64 on
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(potential_fn=target.potential_jax()), num_warmup=warmup, num_samples=samples,
                num_chains=1, progress_bar=False)
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * chains + 1)
    inits = [jax.random.uniform(keys[chains + c], (target.dim,), minval=-2.0, maxval=2.0,
                                dtype=jax.numpy.float64) for c in range(chains)]
    first = _one_chain(mcmc, keys[-1], inits[0])       # compile pass, discarded
    runs = [_one_chain(mcmc, keys[c], inits[c]) for c in range(chains)]
    draws = np.stack([r["draws"] for r in runs])
    return {"draws": draws, "seconds": sum(r["seconds"] for r in runs),
            "compile_seconds": max(first["seconds"] - runs[0]["seconds"], 0.0),
            "first_pass_seconds": first["seconds"],
            "grad_evals": sum(r["grad_evals"] for r in runs),
            "grad_evals_warmup": sum(r["grad_evals_warmup"] for r in runs),
            "divergences": sum(r["divergences"] for r in runs),
            "settings": {"chains": chains, "warmup": warmup, "samples": samples, "seed": seed,
                         "init": "uniform(-2, 2)", "kernel": "numpyro NUTS defaults"}}


def nuts_summary(target: HeldoutTarget, res: dict) -> dict:
    """Errors against the reference moments (exact where known; all chains pooled), split R-hat (max over
    coordinates), and for a multimodal target the fraction of each chain's draws per mode."""
    from numpyro.diagnostics import split_gelman_rubin

    draws = res["draws"]
    pooled = draws.reshape(-1, target.dim)
    out = {k: v for k, v in res.items() if k != "draws"}
    out["errors"] = moment_errors(pooled, target.moments())
    with np.errstate(all="ignore"):
        out["rhat_max"] = float(np.nanmax(split_gelman_rubin(draws)))
    labels = target.mode_labels(pooled)
    if labels is not None:
        k = len(target.modes)
        per_chain = labels.reshape(draws.shape[0], -1)
        out["mode_fractions_per_chain"] = [np.bincount(c, minlength=k).astype(float).__truediv__(c.size).tolist()
                                           for c in per_chain]
        out["mode_fractions"] = (np.bincount(labels, minlength=k) / labels.size).tolist()
    return out
