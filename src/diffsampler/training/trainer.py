"""The training loop: it only orchestrates (behaviour policy -> trajectories -> objective -> step),
with budgets, NaN guard, metrics, checkpoints and exact resume."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace

import torch

from ..errors import CheckpointError, ConfigError, NonFiniteError, TrainingError
from ..nets import EGNNDrift
from ..objectives import make_objective
from ..sampler import DiffusionSampler
from ..sde import Trajectories, backprop_log_pf, backward_rollout, forward_rollout, replay
from ..search import ReplayBuffer, make_rnd
from ..streams import make_streams
from ..targets import Target
from .checkpoint import load_checkpoint, save_checkpoint
from .budget import check_budget
from .config import TrainConfig
from .pilot_phase import standardization
from .ema import ParameterEMA
from .search_phase import local_search, run_search

STEP_CALLS_WINDOW = 10   # iterations whose train-call cost bounds the next one's (budget check)

CHECKPOINT = "checkpoint.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config key 'device' = {name!r}: CUDA is not available on this machine")
    return torch.device(name)


def cpu_compiler() -> str | None:
    """The C++ compiler torch.compile would use on the CPU ($CXX, g++, c++ or clang++), or None."""
    found = (shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++") if name)
    return next((path for path in found if path), None)


def build_sampler(target: Target, cfg: TrainConfig) -> DiffusionSampler:
    s = DiffusionSampler(target, drift=cfg.drift, width=cfg.width, depth=cfg.depth,
                         time_features=cfg.time_features, score_clip=cfg.score_clip, sigma=cfg.sigma,
                         flow=make_objective(cfg.objective).needs_flow, log_Z_init=cfg.log_Z_init or 0.0,
                         default_steps=cfg.eval_steps, scale_by_sigma=cfg.scale_by_sigma,
                         time_warp=cfg.time_warp)
    s = s.to(device=resolve_device(cfg.device), dtype=getattr(torch, cfg.dtype))
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


class Trainer:
    """Train `target`'s sampler under `cfg`, writing to run directory `out` (or nowhere if None).

    callbacks: functions f(trainer, iteration) called after each iteration (a test may raise
    from one to simulate a kill)."""

    def __init__(self, target: Target, cfg: TrainConfig, out: str | None = None, *,
                 callbacks: list[Callable] | None = None, progress: bool = True, init_weights: bool = True) -> None:
        self.target, self.cfg, self.out = target, cfg.validate(), out
        target.nonfinite = cfg.nonfinite_energy
        check_budget(cfg)
        self.callbacks = callbacks or []
        self.stream = make_streams(cfg.logger, out, cfg.to_dict(), target.name)
        self.progress = progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.sampler = build_sampler(target, cfg)
        flat = cfg.to_dict()
        self.objective = make_objective(cfg.objective, flat)
        # the objective of on-policy (forward) batches; `objective` serves buffer and replayed ones
        self.objective_fwd = make_objective(cfg.objective_fwd, flat) if cfg.objective_fwd else self.objective
        self.ml = make_objective("ml")
        self.orbit = None
        if cfg.orbit_K > 0:
            if getattr(target, "symmetry", None) is None:
                raise ConfigError(f"config key 'orbit_K' = {cfg.orbit_K}: target {target.name!r} declares no "
                                  "symmetry group")
            from ..objectives.orbit import OrbitMaximumLikelihood
            self.orbit = OrbitMaximumLikelihood(cfg.orbit_K, cfg.orbit_t_threshold, kappa=cfg.orbit_kappa)
        self.optimizer = self._make_optimizer()
        self.ema = ParameterEMA(self.sampler, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.buffer = ReplayBuffer(target.dim, cfg.buffer_size, cfg.buffer_priority, cfg.buffer_rank_k)
        self.rnd = None
        if cfg.rnd_alpha > 0:
            p = self.sampler.log_Z
            self.rnd = make_rnd(target, width=cfg.rnd_width, lr=cfg.rnd_lr,
                                input_scale=self.sampler.reference.sigma).to(device=p.device, dtype=p.dtype)
        self.round_starts = cfg.round_starts()
        self.searched_rounds = 0
        self.warm_start_log_Z = cfg.log_Z_init is None
        self.search_log: list[dict] = []
        self.store: list[Trajectories] = []   # recent fresh trajectories, for trajectory_reuse
        self.iteration = 0
        self.train_seconds = 0.0
        self.step_calls: list[int] = []   # train energy calls of the last STEP_CALLS_WINDOW iterations
        self.stop_reason = "iterations"
        self.last_loss = float("nan")
        self.pilot: dict | None = None   # the pilot's summary, when this run's coordinates came from one
        self.skipped_steps = 0      # steps skipped on a non-finite gradient (nonfinite_energy=reject)
        self.skipped_in_a_row = 0
        self.checkpoints_written = 0
        if cfg.init_from and init_weights:   # a resumed run takes everything from its own checkpoint instead
            self.load_weights(cfg.init_from)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        groups = [{"params": self.sampler.drift.parameters(), "lr": cfg.lr},
                  {"params": [self.sampler.log_Z], "lr": cfg.lr_log_Z}]
        if self.sampler.flow is not None:
            groups.append({"params": self.sampler.flow.parameters(), "lr": cfg.lr_flow})
        return torch.optim.Adam(groups)

    def lr_factor(self) -> float:
        """Cosine decay within the current round: with f = lr_final and u in [0, 1) the round's progress,
        every group's rate is its configured rate times f + (1 - f) (1 + cos(pi u)) / 2 (1 at each round's
        start, near f at its end). A function of the iteration alone, so a resumed run follows it exactly."""
        f = self.cfg.lr_final
        if f == 1.0:
            return 1.0
        r = self.round
        start = self.round_starts[r]
        end = self.round_starts[r + 1] if r + 1 < len(self.round_starts) else self.cfg.iterations
        length = max(1, min(end, self.cfg.iterations) - start)
        u = min(1.0, (self.iteration - start) / length)
        return f + (1 - f) * 0.5 * (1 + math.cos(math.pi * u))

    def _set_lr(self) -> None:
        cfg = self.cfg
        if cfg.lr_final == 1.0 and cfg.lr_ml is None:   # constant rates: the optimiser keeps the ones it was built with
            return
        drift_lr = cfg.lr_ml if cfg.lr_ml is not None and self.in_ml_warmup() else cfg.lr
        base = [drift_lr, cfg.lr_log_Z, cfg.lr_flow]   # the group order of _make_optimizer
        factor = self.lr_factor()
        for group, lr in zip(self.optimizer.param_groups, base):
            group["lr"] = lr * factor

    # -- rounds (SGDS): search -> buffer -> learner -> re-initialise ---------------------------
    @property
    def round(self) -> int:
        return max(r for r, start in enumerate(self.round_starts) if start <= self.iteration)

    def start_round(self) -> None:
        """At the first iteration of round r: search (on E - alpha*RND after round 1), fill the
        buffer with TRUE rewards, then (r > 0) re-initialise the learner and the RND predictor."""
        r, cfg = self.round, self.cfg
        if cfg.searcher != "none":
            p = self.sampler.log_Z
            res = run_search(cfg, self.target, self.rnd if r > 0 else None, dtype=p.dtype, device=p.device)
            stored = self.buffer.add(res.x, -res.energy)
            self.search_log.append({"round": r + 1, **res.info, "stored": stored, "log_Z_hat": res.log_Z_hat})
            self._log({"iteration": self.iteration, "search": self.search_log[-1],
                       "energy_calls": self.target.counter.as_dict()})
            if r == 0 and cfg.log_Z_from_searcher and res.log_Z_hat is not None:
                with torch.no_grad():
                    self.sampler.log_Z.fill_(res.log_Z_hat)
                self.warm_start_log_Z = False
        if r > 0 and cfg.reinit:
            fresh = build_sampler(self.target, cfg)
            keep = self.sampler.log_Z.detach().clone()
            if cfg.reinit_keep > 0:   # shrink and perturb: theta <- keep * theta + (1 - keep) * theta_fresh
                with torch.no_grad():
                    for p_new, p_old in zip(fresh.parameters(), self.sampler.parameters()):
                        p_new.lerp_(p_old, cfg.reinit_keep)
            self.sampler.load_state_dict(fresh.state_dict())
            if cfg.keep_log_Z:
                with torch.no_grad():
                    self.sampler.log_Z.copy_(keep)
            else:
                self.warm_start_log_Z = cfg.log_Z_init is None
            self.optimizer = self._make_optimizer()
            if self.ema is not None:
                self.ema.reset(self.sampler)
            if self.rnd is not None:
                self.rnd.reset()
        self.searched_rounds = r + 1
        if cfg.searcher != "none" or r > 0:
            self.save()  # keep the search's work (and a re-initialisation) across a kill

    # -- one iteration -----------------------------------------------------------------------
    def exploration(self) -> float:
        cfg = self.cfg
        end = cfg.exploration_until * cfg.iterations
        if cfg.exploration == 0 or end <= 0:
            return 0.0
        return cfg.exploration * max(0.0, 1.0 - self.iteration / end)

    def in_ml_warmup(self) -> bool:
        return self.iteration - self.round_starts[self.round] < self.cfg.ml_warmup

    def is_fresh(self) -> bool:
        """Whether this iteration draws new trajectories (else it trains on stored ones)."""
        return self.iteration % (1 + self.cfg.trajectory_reuse) == 0 or not self.store

    def backward_batch(self) -> bool:
        """Whether a fresh iteration trains on backward trajectories from buffer samples (else on
        forward, on-policy ones): always for behaviour=backward and in the ML warm-up, on every
        `offpolicy_every`-th fresh iteration for mixed; never while the buffer is empty."""
        cfg = self.cfg
        fresh_index = self.iteration // (1 + cfg.trajectory_reuse)
        use_backward = (cfg.behaviour == "backward" or self.in_ml_warmup()
                        or (cfg.behaviour == "mixed" and fresh_index % cfg.offpolicy_every == cfg.offpolicy_every - 1))
        return use_backward and len(self.buffer) > 0

    @property
    def replays_as_drawn(self) -> bool:
        """Whether stored batches are replayed as drawn (an objective that never differentiates
        log_pf: adjoint matching) rather than with log_pf recomputed under the current drift."""
        return not getattr(self.objective, "differentiates_rollout", True)

    def trajectories(self) -> tuple[Trajectories, bool]:
        """This iteration's batch and whether it is on-policy (fresh forward trajectories of the
        learner): fresh trajectories of the behaviour policy (forward, or backward from the buffer
        on odd fresh iterations of `mixed`), or, with trajectory_reuse = R, on R of every R + 1
        iterations a batch from the store of recent fresh ones with log_pf recomputed under the
        current drift (no energy calls)."""
        cfg, s = self.cfg, self.sampler
        if not self.is_fresh():
            stored = self.store[int(torch.randint(len(self.store), ()))]
            if self.replays_as_drawn:
                # adjoint matching regresses on the stored terminal states, gradients and log-weights
                # as they were drawn (the weights of the policy that drew them: the right importance
                # weights for that sample); no drift pass over the path, no energy call at Y
                return stored, False
            return replay(s, stored), False
        p = s.log_Z
        grid = s.make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
        on_policy = not self.backward_batch()
        if not on_policy:
            x, log_r = self.buffer.sample(cfg.batch_size)
            tr = backward_rollout(s, x.to(p), grid, log_r=log_r.to(p), need_step_rewards=self.objective.needs_flow)
        else:
            # an objective that never differentiates log_pf (adjoint matching) needs no graph; duck-typed
            # objectives without the flag keep it, unless the caller disabled autograd (grad_chunk_steps)
            graph = getattr(self.objective_fwd, "differentiates_rollout", True) and torch.is_grad_enabled()
            with torch.set_grad_enabled(graph):
                tr = forward_rollout(s, grid, explore=self.exploration(), pathwise=self.objective_fwd.pathwise,
                                     need_step_rewards=self.objective_fwd.needs_flow or self.objective.needs_flow,
                                     need_terminal_score=getattr(self.objective_fwd, "needs_terminal_score", False))
            if cfg.behaviour != "forward" and cfg.offpolicy_data == "replay":
                self.buffer.add(tr.terminal.detach(), tr.log_r.detach())
        if cfg.trajectory_reuse:
            # a replay recomputes log_pf under the current drift, unless the objective never
            # differentiates it (adjoint matching), which keeps the drawing policy's log_pf and the
            # terminal gradient
            self.store.append(Trajectories(tr.x.detach(), tr.t,
                                           tr.log_pf.detach() if self.replays_as_drawn else tr.log_pf.new_empty(0),
                                           tr.log_pb.detach(), tr.log_r.detach(),
                                           None if tr.log_r_steps is None else tr.log_r_steps.detach(),
                                           tr.score, None if tr.terminal_score is None else tr.terminal_score.detach()))
            del self.store[:-cfg.trajectory_store]
        return tr, on_policy

    def fill_buffer_from_target(self) -> None:
        """offpolicy_data=target_samples: fill the buffer with the target's own samples and their
        true log R (counted as 'search' energy calls). Not data-free: for amortisation studies."""
        if not self.target.has_samples:
            raise ConfigError(f"config key 'offpolicy_data' = 'target_samples': target "
                              f"{self.target.name!r} has no samples")
        x = self.target.from_user(self.target.sample(self.cfg.buffer_size).to(self.sampler.log_Z))
        with torch.no_grad(), self.target.counter.use("search"):
            log_r = torch.cat([self.target.log_prob(c) for c in x.split(4096)])
        self.buffer.add(x, log_r)

    def step(self) -> float:
        cfg = self.cfg
        if self.iteration == 0 and cfg.behaviour != "forward" and cfg.offpolicy_data == "target_samples":
            self.fill_buffer_from_target()
        if cfg.lr_ml is not None and cfg.ml_warmup and self.iteration - self.round_starts[self.round] == cfg.ml_warmup:
            self.optimizer = self._make_optimizer()   # SGDS: the warm-up's Adam (at lr_ml) is replaced by a fresh one
        if cfg.local_search_every and self.iteration % cfg.local_search_every == 0 and len(self.buffer):
            x0, _ = self.buffer.sample(cfg.local_search_batch)
            x, e = local_search(cfg, self.target, x0.to(self.sampler.log_Z))
            self.buffer.add(x, -e)
        # the orbit estimator replaces maximum likelihood on buffer batches only: in a mixed recipe
        # (e.g. sgds_jeffreys) the on-policy iterations keep their own objective
        if self.orbit is not None and self.backward_batch() and (
                self.in_ml_warmup() or (cfg.objective == "ml" and self.is_fresh())):
            return self._orbit_step()
        fresh = self.is_fresh()
        chunk = cfg.grad_chunk_steps
        with self.target.counter.use("train"), torch.no_grad() if chunk else nullcontext():
            try:
                traj, on_policy = self.trajectories()
            except NonFiniteError as e:
                raise TrainingError(f"iteration {self.iteration}: non-finite energy during rollout: {e}") from None
        if not torch.isfinite(traj.log_r).any():
            raise TrainingError(f"iteration {self.iteration}: the energy is non-finite at all {traj.log_r.shape[0]} "
                                "end points of the batch (NaN/inf everywhere the sampler goes): nothing to learn "
                                "from; check the energy, or give the target a scale (sigma) that reaches its domain")
        if self.warm_start_log_Z and not self.in_ml_warmup():
            # the ML warm-up does not use log Z: start it from the warmed-up sampler, not the untrained one
            self.warm_start()
        if self.rnd is not None and fresh:
            self.rnd.fit(traj.terminal.detach(), steps=1)
        objective = self.ml if self.in_ml_warmup() else (self.objective_fwd if on_policy else self.objective)
        leaf = None   # grad_chunk_steps: the loss sees log_pf as a leaf; its gradient is pushed through
        if chunk and getattr(objective, "differentiates_rollout", True):   # the drift slice by slice below
            leaf = traj.log_pf.detach().requires_grad_(True)
        with self.target.counter.use("train"):   # adjoint matching evaluates the energy inside its loss
            loss = objective(traj if leaf is None else replace(traj, log_pf=leaf), self.sampler)
        if not on_policy and self.cfg.offpolicy_weight != 1.0 and not self.in_ml_warmup():
            loss = self.cfg.offpolicy_weight * loss
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {self.iteration}: non-finite loss ({loss.item()}); "
                                f"cause: {self._diagnose(traj)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if leaf is not None and leaf.grad is not None:
            backprop_log_pf(self.sampler, traj, leaf.grad, chunk)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        if not torch.isfinite(norm):
            return self._skip_step(norm, loss)
        self.skipped_in_a_row = 0
        self._set_lr()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.sampler)
        return loss.item()

    MAX_SKIPPED_IN_A_ROW = 20

    def _skip_step(self, norm: torch.Tensor, loss: torch.Tensor) -> float:
        """A non-finite gradient norm: with nonfinite_energy=reject (a user energy whose gradient
        overflows far in its tails) the step is skipped and counted, and the run stops only after
        MAX_SKIPPED_IN_A_ROW in a row; with nonfinite_energy=error it stops at once."""
        msg = f"iteration {self.iteration}: non-finite gradient norm ({norm.item()})"
        self.skipped_in_a_row += 1
        if self.cfg.nonfinite_energy == "error" or self.skipped_in_a_row > self.MAX_SKIPPED_IN_A_ROW:
            extra = f" in {self.skipped_in_a_row} steps in a row" if self.skipped_in_a_row > 1 else ""
            raise TrainingError(msg + extra)
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        return loss.item()

    def warm_start(self) -> None:
        """Initialise log Z from one on-policy batch of log-weights w_i, so early TB gradients are
        not dominated by a log Z hundreds of nats off: 'mean' sets log Z = mean_i log w_i (an ELBO
        estimate); 'logmeanexp' sets log Z = log (1/B) sum_i w_i (the IS estimate, still a lower
        bound in expectation, but set by the best trajectories instead of dragged down by a few
        with log w thousands of nats low, e.g. overlapping particles). On-policy (no exploration):
        explored trajectories have log w far below the policy's. Costs one rollout's energy calls
        ('train'). 'buffer' sets log Z = log (1/N) sum_i R(x_i) over the replay buffer's stored
        rewards (the searcher's samples), as the SGDS code does (Kim et al. 2025): no rollout and
        no energy call, and on the scale of log Z where an untrained sampler's batch is
        catastrophic (LJ-13: mean log w ~ -5e4 at the start)."""
        cfg = self.cfg
        if cfg.log_Z_warm_start == "buffer":
            if len(self.buffer) == 0:
                raise TrainingError("log_Z_warm_start='buffer': the replay buffer is empty at the first "
                                    "TB iteration (use a searcher, offpolicy_data=target_samples, or 'logmeanexp')")
            lr = self.buffer.log_r.to(self.sampler.log_Z)
            with torch.no_grad():
                self.sampler.log_Z.copy_(torch.logsumexp(lr, 0) - math.log(lr.numel()))
            self.warm_start_log_Z = False
            return
        grid = self.sampler.make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
        with torch.no_grad(), self.target.counter.use("train"):
            lw = forward_rollout(self.sampler, grid).log_w
        lw = lw[torch.isfinite(lw)]
        if lw.numel() == 0:
            raise TrainingError("log Z warm start: every log-weight of the first batch is non-finite")
        with torch.no_grad():
            if cfg.log_Z_warm_start == "logmeanexp":
                self.sampler.log_Z.copy_(torch.logsumexp(lw, 0) - math.log(lw.numel()))
            else:
                self.sampler.log_Z.copy_(lw.mean())
        self.warm_start_log_Z = False

    def _orbit_step(self) -> float:
        """One maximum-likelihood step with the orbit Rao-Blackwell target on buffer samples
        (no rollout: the loss draws its own bridge states; no energy calls, except with orbit_kappa > 0
        one score call per buffer row the first time it is drawn, counted as train)."""
        cfg, p = self.cfg, self.sampler.log_Z
        idx = self.buffer.sample_index(cfg.batch_size)
        y, score = self.buffer.x[idx], None
        if self.orbit.kappa > 0:
            todo = self.buffer.missing_scores(idx)
            if todo.numel():
                with torch.no_grad(), self.target.counter.use("train"):
                    _, s = self.target.log_reward_and_score(self.buffer.x[todo].to(p))
                self.buffer.set_scores(todo, s)
            score = self.buffer.score[idx].to(p)
        grid = self.sampler.make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
        loss = self.orbit.loss(self.sampler, y.to(p), grid, score)
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {self.iteration}: non-finite orbit ML loss ({loss.item()})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.sampler.parameters(), cfg.grad_clip)
        self._set_lr()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.sampler)
        return loss.item()

    @staticmethod
    def _diagnose(traj) -> str:
        parts = []
        for name in ("log_r", "log_pf", "log_pb"):
            v = getattr(traj, name)
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                parts.append(f"{bad} non-finite values in {name}")
        if not torch.isfinite(traj.x).all():
            parts.append("non-finite states (the SDE diverged)")
        return "; ".join(parts) or "overflow in the loss (residuals too large)"

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"sampler": self.sampler.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "rng": rng, "config": self.cfg.to_dict(),
                "target": {"name": self.target.name, "dim": self.target.dim},
                "energy_calls": dict(self.target.counter.counts), "buffer": self.buffer.state_dict(),
                "nonfinite_calls": dict(self.target.counter.nonfinite), "skipped_steps": self.skipped_steps,
                "standardization": standardization(self.target), "pilot": self.pilot,
                "train_seconds": self.train_seconds, "searched_rounds": self.searched_rounds,
                "step_calls": self.step_calls,
                "warm_start_log_Z": self.warm_start_log_Z, "search_log": self.search_log,
                "store": [vars(tr) for tr in self.store],
                "ema": None if self.ema is None else self.ema.state_dict(),
                "rnd": None if self.rnd is None else {"net": self.rnd.state_dict(),
                                                      "optimizer": self.rnd.optimizer.state_dict()}}

    def load_state_dict(self, state: dict) -> None:
        try:
            self.sampler.load_state_dict(state["sampler"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint does not match this model/config: {e}") from None
        self.iteration = int(state["iteration"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.target.counter.load(state.get("energy_calls", {}), state.get("nonfinite_calls"))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.pilot = state.get("pilot")
        self.buffer.load_state_dict(state["buffer"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.step_calls = [int(v) for v in state.get("step_calls", [])]
        self.searched_rounds = int(state.get("searched_rounds", 0))
        self.warm_start_log_Z = bool(state.get("warm_start_log_Z", False))
        self.search_log = list(state.get("search_log", []))
        self.store = [Trajectories(**tr) for tr in state.get("store", [])]
        if self.ema is not None:
            if state.get("ema") is None:
                self.ema.reset(self.sampler)   # a checkpoint from a run without EMA: start it here
            else:
                try:
                    self.ema.load_state_dict(state["ema"])
                except KeyError as e:
                    raise CheckpointError(f"checkpoint does not match this model/config: {e}") from None
        if self.rnd is not None and state.get("rnd") is not None:
            self.rnd.load_state_dict(state["rnd"]["net"])
            self.rnd.optimizer.load_state_dict(state["rnd"]["optimizer"])

    def _first_mismatch(self, state: dict, keys: tuple[str, ...]) -> tuple[str | None, object]:
        """The first of `keys` on which a checkpoint's config (keys added since: their defaults)
        differs from this run's, with the checkpoint's value; (None, None) if none does."""
        saved = {**TrainConfig().to_dict(), **state["config"]}
        for k in keys:
            if saved.get(k) != getattr(self.cfg, k):
                return k, saved.get(k)
        return None, None

    ARCHITECTURE_KEYS = ("drift", "width", "depth", "time_features", "sigma", "scale_by_sigma", "time_warp")

    def load_weights(self, source: str) -> None:
        """Fine-tuning start: copy another run's network weights, log Z and replay buffer into this one.

        `source` is a run directory or a checkpoint file of the same target. The source's averaged
        weights are taken when it kept an EMA (they are the weights it reported and sampled with).
        The network must have the same architecture keys; a flow network (SubTB/DB) that only one
        side has is left as initialised. The RND novelty networks (SGDS) are carried too when both
        runs have them with the same shapes, so a continued search still knows what was visited.
        Optimiser states, iteration, energy-call counts and RNG start anew, so this run's budgets
        count its own work only."""
        path = os.path.join(source, CHECKPOINT) if os.path.isdir(source) else source
        state = load_checkpoint(path, target_name=self.target.name, dim=self.target.dim)
        k, have = self._first_mismatch(state, tuple(a for a in self.ARCHITECTURE_KEYS if a != "depth"))
        if k is not None:
            raise CheckpointError(f"config key 'init_from': {path} has {k}={have!r}, this config has "
                                  f"{getattr(self.cfg, k)!r} (the network must match)")
        weights = dict(state["sampler"])
        if state.get("ema") is not None:
            weights.update(state["ema"]["shadow"])
        _, source_depth = self._first_mismatch(state, ("depth",))
        if source_depth is not None:
            weights = self._deepened(weights, int(source_depth), path)
        mine = self.sampler.state_dict()
        mismatched = sorted(k for k in set(mine) ^ set(weights) if not k.startswith("flow."))
        if mismatched:
            raise CheckpointError(f"config key 'init_from': {path} does not match this network: {mismatched}")
        try:
            self.sampler.load_state_dict({k: v for k, v in weights.items() if k in mine}, strict=False)
        except RuntimeError as e:
            raise CheckpointError(f"config key 'init_from': {path} does not match this network: {e}") from None
        if state.get("buffer") is not None:
            self.buffer.add(state["buffer"]["x"], state["buffer"]["log_r"])
        rnd = (state.get("rnd") or {}).get("net")
        if self.rnd is not None and rnd is not None:
            mine = self.rnd.state_dict()
            if set(mine) == set(rnd) and all(mine[k].shape == rnd[k].shape for k in mine):
                self.rnd.load_state_dict(rnd)
        self.warm_start_log_Z = False
        if self.ema is not None:
            self.ema.reset(self.sampler)

    def _deepened(self, weights: dict, source_depth: int, path: str) -> dict:
        """`weights` of a shallower EGNN drift rewritten for this deeper one, computing the same
        function (`EGNNDrift.load_shallower`); any other depth change is an error."""
        drift = self.sampler.drift
        if not (isinstance(drift, EGNNDrift) and source_depth < self.cfg.depth):
            raise CheckpointError(f"config key 'init_from': {path} has depth={source_depth}, this config has "
                                  f"depth={self.cfg.depth} (only an EGNN drift can start from a shallower one)")
        try:
            drift.load_shallower({k[len("drift."):]: v for k, v in weights.items() if k.startswith("drift.")},
                                 source_depth)
        except RuntimeError as e:
            raise CheckpointError(f"config key 'init_from': {path} does not match this network: {e}") from None
        grown = {f"drift.{k}": v for k, v in drift.state_dict().items()}
        return {**{k: v for k, v in weights.items() if not k.startswith("drift.")}, **grown}

    def save(self) -> None:
        if self.out:
            save_checkpoint(os.path.join(self.out, CHECKPOINT), self.state_dict())
            self.checkpoints_written += 1

    def resume(self) -> None:
        state = load_checkpoint(os.path.join(self.out, CHECKPOINT), target_name=self.target.name,
                                dim=self.target.dim)
        k, have = self._first_mismatch(state, ("drift", "width", "depth", "time_features", "objective", "dtype",
                                               "time_warp"))
        if k is not None:
            raise CheckpointError(f"cannot resume: checkpoint has {k}={have!r}, config has {getattr(self.cfg, k)!r}")
        self.load_state_dict(state)
        _truncate_metrics(os.path.join(self.out, "metrics.jsonl"), self.iteration)

    # -- loop ------------------------------------------------------------------------------------
    def _log(self, row: dict) -> None:
        self.stream.log(row)

    def budget_exhausted(self) -> str | None:
        cfg, c = self.cfg, self.target.counter.counts
        if self.iteration >= cfg.iterations:
            return "iterations"
        if cfg.max_seconds is not None and self.train_seconds >= cfg.max_seconds:
            return "max_seconds"
        # stop before an iteration that could overrun the call budget: the next one is assumed to
        # cost as much as the dearest of the last few (on-policy and buffer iterations alternate)
        next_cost = max(self.step_calls, default=0)
        used = c["search"] + c["train"]
        if cfg.max_energy_calls is not None and (used >= cfg.max_energy_calls
                                                 or used + next_cost > cfg.max_energy_calls):
            return "max_energy_calls"
        return None

    def in_run_metrics(self) -> dict:
        """A quick evaluation (at most 1000 samples) of the weights the run would report: the
        moving average when `ema_decay` is set (then also the raw weights, keys prefixed 'raw_')."""
        from ..evaluation import evaluate

        cfg = self.cfg
        keep = ("elbo", "eubo", "log_Z_is", "ess", "w2", "mode_coverage")
        particle = ("energy_w1", "energy_w2", "equivariant_w2")   # particle targets with reference samples

        def metrics() -> dict:
            m = evaluate(self.sampler, n=min(cfg.eval_samples, 1000), steps=cfg.eval_steps, grid=cfg.eval_grid).metrics
            return {**{k: m.get(k) for k in keep}, **{k: m[k] for k in particle if k in m}}
        if self.ema is None:
            return metrics()
        raw = metrics()
        with self.ema.applied(self.sampler):
            return {**metrics(), **{f"raw_{k}": v for k, v in raw.items()}}

    def fit(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not self.progress,
                   desc=f"train {self.target.name}", dynamic_ncols=True, mininterval=1.0)
        try:
            while (reason := self.budget_exhausted()) is None:
                t0 = time.perf_counter()
                if self.round >= self.searched_rounds:
                    self.start_round()
                    if (reason := self.budget_exhausted()) is not None:
                        break
                before = self.target.counter.counts["train"]
                loss = self.step()
                self.step_calls = [*self.step_calls, self.target.counter.counts["train"] - before][-STEP_CALLS_WINDOW:]
                self.iteration += 1
                self.train_seconds += time.perf_counter() - t0
                self.last_loss = loss
                bar.update(1)
                if self.iteration % cfg.log_every == 0 or self.iteration == 1:
                    bar.set_postfix(loss=f"{loss:.3g}", logZ=f"{self.sampler.log_Z.item():.2f}")
                    self._log({"iteration": self.iteration, "loss": loss, "log_Z": self.sampler.log_Z.item(),
                               "energy_calls": self.target.counter.as_dict(),
                               "train_seconds": round(self.train_seconds, 3)})
                if cfg.eval_every and self.iteration % cfg.eval_every == 0:
                    self._log({"iteration": self.iteration, **self.in_run_metrics(),
                               "energy_calls": self.target.counter.as_dict()})
                if self.iteration % cfg.checkpoint_every == 0:
                    self.save()
                for cb in self.callbacks:
                    cb(self, self.iteration)
            self.stop_reason = reason
        finally:
            bar.close()
        self.save()


def _truncate_metrics(path: str, iteration: int) -> None:
    """Drop metric rows written after the checkpoint's iteration (they will be recomputed)."""
    if not os.path.exists(path):
        return
    rows = [line for line in open(path) if line.strip() and json.loads(line).get("iteration", 0) <= iteration]
    with open(path, "w") as f:
        f.writelines(rows)


def prepare_run_dir(out: str, resume: bool) -> bool:
    """Create the run directory; returns True when this call created it."""
    if resume:
        if not os.path.isdir(out):
            raise CheckpointError(f"cannot resume: run directory {out} does not exist")
        return False
    if os.path.exists(out) and os.listdir(out):
        raise ConfigError(f"run directory {out} already exists and is not empty "
                          "(use --resume to continue it, or choose another --out)")
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    return created


def cleanup_failed_run(out: str, created: bool, trainer: Trainer | None) -> None:
    """Remove a run directory that never got a checkpoint (so nothing half-written stays)."""
    if out and created and (trainer is None or trainer.checkpoints_written == 0):
        shutil.rmtree(out, ignore_errors=True)


__all__ = ["Trainer", "build_sampler", "cpu_compiler", "resolve_device", "prepare_run_dir", "cleanup_failed_run"]
