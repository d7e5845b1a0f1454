"""Building a run's sampler: the device it lives on, its dtype, and the compiled drift."""
from __future__ import annotations

import os
import shutil

import torch

from ..errors import ConfigError
from ..objectives import objective_class
from ..sampler import DiffusionSampler
from ..targets import Target


def resolve_device(name: str) -> torch.device:
    """A torch.device from 'cpu', 'cuda', 'cuda:N' or 'auto' (ConfigError when CUDA is missing)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' = {name!r}: CUDA is not available on this machine")
    return torch.device(name)


def cpu_compiler() -> str | None:
    """The C++ compiler torch.compile would use on the CPU ($CXX, g++, c++ or clang++), or None."""
    found = (shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++") if name)
    return next((path for path in found if path), None)


def build_sampler(target: Target, cfg) -> DiffusionSampler:
    """The DiffusionSampler of `cfg` on `target`: its drift, log Z (and flow), on cfg.device in
    cfg.dtype, compiled when cfg.compile says so."""
    s = DiffusionSampler(target, drift=cfg.drift, width=cfg.width, depth=cfg.depth,
                         time_features=cfg.time_features, score_clip=cfg.score_clip, sigma=cfg.sigma,
                         flow=objective_class(cfg.objective).needs_flow, log_Z_init=cfg.log_Z_init or 0.0,
                         default_steps=cfg.eval_steps, scale_by_sigma=cfg.scale_by_sigma,
                         time_warp=cfg.time_warp)
    s = s.to(device=resolve_device(cfg.device), dtype=getattr(torch, cfg.dtype))
    if getattr(cfg, "precision", "fp32") == "bf16":
        autocast_bf16(s.drift)
    if cfg.compile != "none":
        if next(s.parameters()).device.type == "cpu" and cpu_compiler() is None:
            raise ConfigError(f"config key 'compile' = {cfg.compile!r}: torch.compile on the CPU needs a C++ "
                              "compiler ($CXX, g++, c++ or clang++), and none was found; use compile=none")
        # in place (nn.Module.compile): the state dict keeps its keys, so checkpoints do not change;
        # dynamic shapes: one compiled graph serves the rollout's batch, the chunked backward's
        # B k rows and the evaluation's batches. (mode='reduce-overhead', i.e. CUDA graphs, fails in
        # the chunked backward on torch 2.11: a later chunk's replay overwrites saved outputs.)
        s.drift.compile(dynamic=True)
    return s


def _cast(out, dtype: torch.dtype):
    if isinstance(out, tuple):
        return tuple(_cast(o, dtype) for o in out)
    return out.to(dtype)


def autocast_bf16(drift: torch.nn.Module) -> None:
    """precision=bf16: the drift's forward (and its time context, which a rollout computes for all
    steps at once) run under bfloat16 autocast, their outputs cast back to the parameters' dtype,
    so log-densities, energies, scores and losses stay in float32. In place: the state dict keeps
    its keys and dtype (the weights themselves stay float32; autocast casts them per call)."""
    device_type = next(drift.parameters()).device.type
    for name in ("forward", "time_context"):
        fn = getattr(drift, name, None)
        if fn is None:
            continue

        def run(*args, _fn=fn, **kwargs):
            dtype = next(drift.parameters()).dtype
            with torch.autocast(device_type, dtype=torch.bfloat16):
                out = _fn(*args, **kwargs)
            return _cast(out, dtype)
        setattr(drift, name, run)


__all__ = ["build_sampler", "resolve_device", "cpu_compiler", "autocast_bf16"]
