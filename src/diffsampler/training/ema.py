"""`ParameterEMA`: an exponential moving average (Polyak averaging) of a module's parameters.

After every optimiser step, theta_bar <- beta_n theta_bar + (1 - beta_n) theta with
beta_n = min(beta, (1 + n) / (10 + n)) (n = updates since the last reset), so that the average
follows the weights closely in the first few hundred steps and then averages over about 1 / (1 - beta)
steps. Evaluating a stochastic-gradient learner with averaged weights removes most of the
parameter noise that a constant learning rate leaves in the final iterate (Polyak & Juditsky 1992);
diffusion models and the DEM sampler evaluate with such an average.

The average is kept apart from the module: training always continues from the raw weights (so a
resumed run is exact), and `applied(module)` swaps the average in for evaluation or sampling.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ParameterEMA:
    """Moving average of `module`'s parameters (all of them, in their own dtype and device)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.reset(module)

    def reset(self, module: nn.Module) -> None:
        """Restart the average at the module's current weights (e.g. after a re-initialisation)."""
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters()}
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        beta = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for k, p in module.named_parameters():
            self.shadow[k].lerp_(p.detach(), 1.0 - beta)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's parameters with the average."""
        for k, p in module.named_parameters():
            p.copy_(self.shadow[k])

    @contextmanager
    def applied(self, module: nn.Module) -> Iterator[nn.Module]:
        """Within the block the module holds the averaged weights; its own are restored after."""
        saved = {k: p.detach().clone() for k, p in module.named_parameters()}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for k, p in module.named_parameters():
                    p.copy_(saved[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the module's parameters: {sorted(missing)}")
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k] = v.to(self.shadow[k])


__all__ = ["ParameterEMA"]
