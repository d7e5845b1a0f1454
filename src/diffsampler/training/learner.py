"""The learner: the sampler, its objectives, optimiser and weight average, and one optimisation step.

Which objective a batch gets: in the maximum-likelihood warm-up of a round the warm-up objective
(`ml`, or the orbit estimator when orbit_K >= 1); otherwise on-policy batches get `objective_fwd`
(default: `objective`) and buffer or replayed batches `objective`. The orbit Rao-Blackwell estimator
is an objective over buffer states (`batch = "buffer_states"`); `objective=ml` with orbit_K >= 1
selects it for fresh buffer batches, and replays keep plain maximum likelihood on their stored paths.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..errors import ConfigError, TrainingError
from ..objectives import make_objective
from ..sde import Trajectories, backprop_log_pf, forward_rollout
from .build import build_sampler
from .ema import ParameterEMA

MAX_SKIPPED_IN_A_ROW = 20


class Learner:
    """The sampler of `target` under `cfg` and how it learns (see module)."""

    def __init__(self, target, cfg) -> None:
        self.target, self.cfg = target, cfg
        self.sampler = build_sampler(target, cfg)
        flat = cfg.to_dict()
        main = "ml" if cfg.objective == "orbit_ml" else cfg.objective
        self.objective = make_objective(main, flat)
        self.objective_fwd = make_objective(cfg.objective_fwd, flat) if cfg.objective_fwd else self.objective
        self.ml = make_objective("ml")
        self.orbit = None
        if cfg.orbit_K > 0 or cfg.objective == "orbit_ml":
            if target.symmetry is None:
                raise ConfigError(f"config key 'orbit_K' = {cfg.orbit_K}: target {target.name!r} declares no "
                                  "symmetry group")
            self.orbit = make_objective("orbit_ml", flat)
        self.optimizer = self.make_optimizer()
        self.ema = ParameterEMA(self.sampler, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.warm_start_log_Z = cfg.log_Z_init is None
        self.skipped_steps = 0      # steps skipped on a non-finite gradient (nonfinite_energy=reject)
        self.skipped_in_a_row = 0

    # -- which objective ---------------------------------------------------------------------------
    def uses_buffer_states(self, warmup: bool, fresh: bool) -> bool:
        """Whether a buffer batch of this iteration is a batch of buffer states (the orbit estimator)."""
        return self.orbit is not None and (warmup or (self.objective.name == "ml" and fresh))

    def objective_for(self, on_policy: bool, warmup: bool):
        return self.ml if warmup else (self.objective_fwd if on_policy else self.objective)

    @property
    def replays_as_drawn(self) -> bool:
        """Whether stored batches are replayed as drawn (an objective that never differentiates
        log_pf: adjoint matching) rather than with log_pf recomputed under the current drift."""
        return not self.objective.differentiates_rollout

    # -- optimiser ---------------------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = [{"params": self.sampler.drift.parameters(), "lr": cfg.lr},
                  {"params": [self.sampler.log_Z], "lr": cfg.lr_log_Z}]
        if self.sampler.flow is not None:
            groups.append({"params": self.sampler.flow.parameters(), "lr": cfg.lr_flow})
        return torch.optim.Adam(groups)

    def set_lr(self, factor: float, warmup: bool) -> None:
        cfg = self.cfg
        if cfg.lr_final == 1.0 and cfg.lr_ml is None:   # constant rates: the optimiser keeps its own
            return
        drift_lr = cfg.lr_ml if cfg.lr_ml is not None and warmup else cfg.lr
        for group, lr in zip(self.optimizer.param_groups, [drift_lr, cfg.lr_log_Z, cfg.lr_flow]):
            group["lr"] = lr * factor

    # -- one step ----------------------------------------------------------------------------------
    def trajectory_loss(self, traj: Trajectories, objective, on_policy: bool, warmup: bool, it: int):
        """(loss, leaf): the objective on the batch; with grad_chunk_steps the loss sees log_pf as a
        leaf, whose gradient `apply` pushes through the drift slice by slice."""
        chunk, leaf = self.cfg.grad_chunk_steps, None
        if chunk and objective.differentiates_rollout:
            leaf = traj.log_pf.detach().requires_grad_(True)
        with self.target.counter.use("train"):   # adjoint matching evaluates the energy inside its loss
            loss = objective(traj if leaf is None else replace(traj, log_pf=leaf), self.sampler)
        if not on_policy and self.cfg.offpolicy_weight != 1.0 and not warmup:
            loss = self.cfg.offpolicy_weight * loss
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {it}: non-finite loss ({loss.item()}); cause: {diagnose(traj)}")
        return loss, leaf

    def apply(self, loss: torch.Tensor, it: int, lr_factor: float, warmup: bool, traj=None, leaf=None) -> float:
        """Back-propagate `loss` and take an optimiser step (skipped on a non-finite gradient norm under
        nonfinite_energy=reject, see `_skip`); returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(loss, traj, leaf)
        return self.step(loss.item(), it, lr_factor, warmup)

    def orbit_step(self, batch, it: int, lr_factor: float, warmup: bool) -> float:
        """One step of the objective over buffer states (the orbit estimator) on `batch`
        (`BehaviourPolicy.buffer_states`: energy calls only for rows whose score is drawn first)."""
        loss = self.orbit.loss(self.sampler, batch.y, batch.grid, batch.score)
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {it}: non-finite orbit ML loss ({loss.item()})")
        return self.apply(loss, it, lr_factor, warmup)

    def backward(self, loss: torch.Tensor, traj=None, leaf=None) -> None:
        """Accumulate the gradient of `loss` (with grad_chunk_steps, pushed through the drift from
        the log_pf leaf slice by slice)."""
        loss.backward()
        if leaf is not None and leaf.grad is not None:
            backprop_log_pf(self.sampler, traj, leaf.grad, self.cfg.grad_chunk_steps)

    def parameters_with_grad(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    def step(self, loss: float, it: int, lr_factor: float, warmup: bool) -> float:
        """One optimiser step on the accumulated gradients: clipping (or the norm alone), the
        non-finite check, the learning rate, the step and the weight average; returns `loss`."""
        params = self.parameters_with_grad()
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        if not torch.isfinite(norm):
            return self._skip(norm, loss, it)
        self.skipped_in_a_row = 0
        self.set_lr(lr_factor, warmup)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.sampler)
        return loss

    def _skip(self, norm: torch.Tensor, loss: float, it: int) -> float:
        """A non-finite gradient norm: with nonfinite_energy=reject (a user energy whose gradient
        overflows far in its tails) the step is skipped and counted, and the run stops only after
        MAX_SKIPPED_IN_A_ROW in a row; with nonfinite_energy=error it stops at once."""
        msg = f"iteration {it}: non-finite gradient norm ({norm.item()})"
        self.skipped_in_a_row += 1
        if self.cfg.nonfinite_energy == "error" or self.skipped_in_a_row > MAX_SKIPPED_IN_A_ROW:
            extra = f" in {self.skipped_in_a_row} steps in a row" if self.skipped_in_a_row > 1 else ""
            raise TrainingError(msg + extra)
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        return loss

    # -- log Z --------------------------------------------------------------------------------------
    def warm_start(self, buffer) -> None:
        """Initialise log Z (SGDS-style starts, so early TB gradients are not dominated by a log Z
        hundreds of nats off): 'mean' sets it to the mean log-weight of one on-policy batch (an ELBO),
        'logmeanexp' to its IS estimate (robust to a few trajectories thousands of nats low), both
        at the cost of one rollout ('train' calls); 'buffer' to log (1/N) sum_i R(x_i) over the replay
        buffer's stored rewards, as the SGDS code does (Kim et al. 2025), with no call."""
        cfg, s = self.cfg, self.sampler
        if cfg.log_Z_warm_start == "buffer":
            if len(buffer) == 0:
                raise TrainingError("log_Z_warm_start='buffer': the replay buffer is empty at the first "
                                    "TB iteration (use a searcher, offpolicy_data=target_samples, or 'logmeanexp')")
            lw = buffer.log_r.to(s.log_Z)
        else:
            grid = s.make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
            with torch.no_grad(), self.target.counter.use("train"):
                lw = forward_rollout(s, grid).log_w
            lw = lw[torch.isfinite(lw)]
            if lw.numel() == 0:
                raise TrainingError("log Z warm start: every log-weight of the first batch is non-finite")
        with torch.no_grad():
            if cfg.log_Z_warm_start in ("logmeanexp", "buffer"):
                s.log_Z.copy_(torch.logsumexp(lw, 0) - math.log(lw.numel()))
            else:
                s.log_Z.copy_(lw.mean())
        self.warm_start_log_Z = False

    # -- rounds ------------------------------------------------------------------------------------
    def reinitialise(self) -> None:
        """SGDS's re-initialisation between rounds: fresh weights (or keep * old + (1 - keep) * fresh,
        shrink and perturb), log Z kept unless keep_log_Z=false, a fresh optimiser and average."""
        cfg = self.cfg
        fresh = build_sampler(self.target, cfg)
        keep = self.sampler.log_Z.detach().clone()
        if cfg.reinit_keep > 0:
            with torch.no_grad():
                for p_new, p_old in zip(fresh.parameters(), self.sampler.parameters()):
                    p_new.lerp_(p_old, cfg.reinit_keep)
        self.sampler.load_state_dict(fresh.state_dict())
        if cfg.keep_log_Z:
            with torch.no_grad():
                self.sampler.log_Z.copy_(keep)
        else:
            self.warm_start_log_Z = cfg.log_Z_init is None
        self.optimizer = self.make_optimizer()
        if self.ema is not None:
            self.ema.reset(self.sampler)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "warm_start_log_Z": self.warm_start_log_Z, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        from ..errors import CheckpointError
        try:
            self.sampler.load_state_dict(state["sampler"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint does not match this model/config: {e}") from None
        self.warm_start_log_Z = bool(state.get("warm_start_log_Z", False))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        if self.ema is None:
            return
        if state.get("ema") is None:
            self.ema.reset(self.sampler)   # a checkpoint from a run without EMA: start it here
            return
        try:
            self.ema.load_state_dict(state["ema"])
        except KeyError as e:
            raise CheckpointError(f"checkpoint does not match this model/config: {e}") from None


def diagnose(traj) -> str:
    """Which parts of a batch were non-finite (for the non-finite-loss message)."""
    parts = []
    for name in ("log_r", "log_pf", "log_pb"):
        bad = int((~torch.isfinite(getattr(traj, name))).sum())
        if bad:
            parts.append(f"{bad} non-finite values in {name}")
    if not torch.isfinite(traj.x).all():
        parts.append("non-finite states (the SDE diverged)")
    return "; ".join(parts) or "overflow in the loss (residuals too large)"


__all__ = ["Learner", "diagnose", "MAX_SKIPPED_IN_A_ROW"]
