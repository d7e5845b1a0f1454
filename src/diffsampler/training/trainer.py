"""The training loop. It only orchestrates: the schedule says what each iteration does, the behaviour
policy draws the batch, the learner takes the step, the rounds run the searches; the loop keeps the
budgets, metrics, checkpoints and exact resume (every component has its own state_dict)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from ..errors import CheckpointError, NonFiniteError, TrainingError
from ..faults import fault_point, report_calls
from ..streams import make_streams
from ..targets import Target
from .behaviour import BehaviourPolicy
from .budget import check_budget
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .finetune import RESUME_KEYS, first_mismatch, start_from
from .in_run import in_run_metrics
from .interrupts import Interrupted, SearchTimeUp, stop_on_signals
from .learner import Learner
from .pilot_phase import standardization
from .run_dir import remove_stale_temporaries, truncate_metrics
from .rounds import SearchRounds
from .schedule import Schedule

STEP_CALLS_WINDOW = 10   # iterations whose train-call cost bounds the next one's (budget check)


class Trainer:
    """Train `target`'s sampler under `cfg`, writing to run directory `out` (or nowhere if None).

    callbacks: functions f(trainer, iteration) called after each iteration (a test may raise
    from one to simulate a kill)."""

    def __init__(self, target: Target, cfg, out: str | None = None, *, callbacks: list[Callable] | None = None,
                 progress: bool = True, init_weights: bool = True) -> None:
        self.target, self.cfg, self.out = target, cfg.validate(), out
        target.nonfinite = cfg.nonfinite_energy
        check_budget(cfg)
        self.callbacks, self.progress = callbacks or [], progress
        self.stream = make_streams(cfg.logger, out, cfg.to_dict(), target.name)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.learner = Learner(target, cfg)
        self.behaviour = BehaviourPolicy(target, cfg)
        self.rounds = SearchRounds(target, cfg, self.learner.sampler)
        self.schedule = Schedule(cfg)
        self.iteration, self.train_seconds, self.checkpoints_written = 0, 0.0, 0
        self.step_calls: list[int] = []   # train energy calls of the last STEP_CALLS_WINDOW iterations
        self.stop_reason, self.last_loss = "iterations", float("nan")
        self.stop, self._mark = None, time.perf_counter()
        self.pilot: dict | None = None    # the pilot's summary, when this run's coordinates came from one
        self.lineage: dict | None = None  # the ancestors' totals, for a run started from another
        if cfg.init_from and init_weights:   # a resumed run takes everything from its own checkpoint instead
            self.lineage = start_from(cfg.init_from, target, cfg, self.learner, self.behaviour, self.rounds)

    @property
    def sampler(self):
        return self.learner.sampler

    @property
    def buffer(self):
        return self.behaviour.buffer

    # -- one iteration -----------------------------------------------------------------------------
    def step(self) -> float:
        it, s, learner = self.iteration, self.schedule, self.learner
        warm = s.in_ml_warmup(it)
        if s.warmup_ends(it):
            learner.optimizer = learner.make_optimizer()   # SGDS: the warm-up's Adam is replaced by a fresh one
        self.behaviour.prepare(it, self.sampler)
        fresh = s.is_fresh(it, bool(self.behaviour.store))
        off = s.wants_buffer_batch(it) and len(self.buffer) > 0
        if off and learner.uses_buffer_states(warm, fresh):
            return self._buffer_state_step(it, warm)
        on_policy = fresh and not off
        chunk = self.cfg.grad_chunk_steps
        with self.target.counter.use("train"), torch.no_grad() if chunk else nullcontext():
            try:
                traj = self.behaviour.trajectories(self.sampler, learner, fresh, on_policy, s.exploration(it))
            except NonFiniteError as e:
                raise TrainingError(f"iteration {it}: non-finite energy during rollout: {e}") from None
        if not torch.isfinite(traj.log_r).any():
            raise TrainingError(f"iteration {it}: the energy is non-finite at all {traj.log_r.shape[0]} end points "
                                "of the batch (NaN/inf everywhere the sampler goes): nothing to learn from; check "
                                "the energy, or give the target a scale (sigma) that reaches its domain")
        if learner.warm_start_log_Z and not warm:   # after the ML warm-up, which does not use log Z
            learner.warm_start(self.buffer)
        if fresh:
            self.rounds.observe(traj.terminal)
        loss, leaf = learner.trajectory_loss(traj, learner.objective_for(on_policy, warm), on_policy, warm, it)
        return learner.apply(loss, it, s.lr_factor(it), warm, traj, leaf)

    def _buffer_state_step(self, it: int, warm: bool) -> float:
        """One step of an objective over buffer states (the orbit estimator): no rollout; energy calls
        only for the scores of buffer rows drawn for the first time (orbit_kappa > 0)."""
        orbit = self.learner.orbit
        batch = self.behaviour.buffer_states(self.sampler, orbit.needs_scores)
        loss = orbit.loss(self.sampler, batch.y, batch.grid, batch.score)
        if not torch.isfinite(loss):
            raise TrainingError(f"iteration {it}: non-finite orbit ML loss ({loss.item()})")
        return self.learner.apply(loss, it, self.schedule.lr_factor(it), warm)

    def start_round(self) -> bool:
        """Round r's search and re-initialisation (`SearchRounds.start`), logged and checkpointed;
        False when the time budget ran out between the search's blocks (the checkpoint keeps them)."""
        r = self.schedule.round(self.iteration)
        try:
            row = self.rounds.start(r, self.learner, self.buffer, after_block=self._after_search_block,
                                    show=self.progress)
        except SearchTimeUp:
            return False
        if row is not None:
            self._log({"iteration": self.iteration, "search": row, "energy_calls": self.target.counter.as_dict()})
        self.schedule.searched_rounds = r + 1
        if self.cfg.searcher != "none" or r > 0:
            self.save()  # keep the search's work (and a re-initialisation) across a kill
        return True

    def _after_search_block(self, progress) -> None:
        """Between a search's blocks: a checkpoint, then a signal or the time budget may stop the run."""
        self._clock()
        fault_point("search_block")
        self.save()
        self._check_signal()
        if self.cfg.max_seconds is not None and self.train_seconds >= self.cfg.max_seconds:
            raise SearchTimeUp

    def _check_signal(self) -> None:
        if self.stop.reason is not None:
            self.save()
            raise Interrupted(self.stop.reason, self.iteration, self.out)

    def _clock(self) -> None:
        now = time.perf_counter()
        self.train_seconds, self._mark = self.train_seconds + now - self._mark, now
        report_calls(self.target.counter.total, self.train_seconds)

    # -- the loop ----------------------------------------------------------------------------------
    def budget_exhausted(self) -> str | None:
        cfg, c = self.cfg, self.target.counter.counts
        if self.iteration >= cfg.iterations:
            return "iterations"
        if cfg.max_seconds is not None and self.train_seconds >= cfg.max_seconds:
            return "max_seconds"
        # stop before an iteration that could overrun the call budget: the next one is assumed to
        # cost as much as the dearest of the last few (on-policy and buffer iterations alternate)
        used, next_cost = c["search"] + c["train"], max(self.step_calls, default=0)
        if cfg.max_energy_calls is not None and (used >= cfg.max_energy_calls
                                                 or used + next_cost > cfg.max_energy_calls):
            return "max_energy_calls"
        return None

    def fit(self) -> None:
        """Train until a budget is spent; SIGTERM/SIGINT stop it after a checkpoint (`Interrupted`)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, disable=not self.progress,
                   desc=f"train {self.target.name}", dynamic_ncols=True, mininterval=1.0)
        with stop_on_signals() as self.stop:
            try:
                while (reason := self.budget_exhausted()) is None:
                    self._mark = time.perf_counter()
                    if self.schedule.needs_search(self.iteration):
                        if not self.start_round():
                            reason = "max_seconds"
                            break
                        if (reason := self.budget_exhausted()) is not None:
                            break
                    self.target.counter.iteration = self.iteration
                    before = self.target.counter.counts["train"]
                    self.last_loss = self.step()
                    self.step_calls = [*self.step_calls, self.target.counter.counts["train"] - before][-STEP_CALLS_WINDOW:]
                    self.iteration += 1
                    self._clock()
                    bar.update(1)
                    self._after_step(bar)
                    self._check_signal()
                self.stop_reason = reason
            finally:
                bar.close()
                self.target.counter.iteration = None
        self.save()

    def _after_step(self, bar) -> None:
        """Metric rows, in-run evaluations, checkpoints and callbacks after an iteration."""
        cfg, it = self.cfg, self.iteration
        if it % cfg.log_every == 0 or it == 1:
            bar.set_postfix(loss=f"{self.last_loss:.3g}", logZ=f"{self.sampler.log_Z.item():.2f}")
            self._log({"iteration": it, "loss": self.last_loss, "log_Z": self.sampler.log_Z.item(),
                       "energy_calls": self.target.counter.as_dict(), "train_seconds": round(self.train_seconds, 3)})
        if cfg.eval_every and it % cfg.eval_every == 0:
            self._log({"iteration": it, **in_run_metrics(self.sampler, cfg, self.learner.ema),
                       "energy_calls": self.target.counter.as_dict()})
        if it % cfg.checkpoint_every == 0:
            self.save()
        for cb in self.callbacks:
            cb(self, it)

    def _log(self, row: dict) -> None:
        self.stream.log(row)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        counter = self.target.counter
        return {**self.learner.state_dict(), **self.behaviour.state_dict(), **self.rounds.state_dict(),
                **self.schedule.state_dict(), "iteration": self.iteration, "rng": rng, "config": self.cfg.to_dict(),
                "target": {"name": self.target.name, "dim": self.target.dim}, "energy_calls": dict(counter.counts),
                "nonfinite_calls": dict(counter.nonfinite), "train_seconds": self.train_seconds,
                "step_calls": self.step_calls, "standardization": standardization(self.target), "pilot": self.pilot,
                "lineage": self.lineage}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)
        self.iteration = int(state["iteration"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.target.counter.load(state.get("energy_calls", {}), state.get("nonfinite_calls"))
        self.behaviour.load_state_dict(state)
        self.rounds.load_state_dict(state)
        self.schedule.load_state_dict(state)
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.step_calls = [int(v) for v in state.get("step_calls", [])]
        self.pilot, self.lineage = state.get("pilot"), state.get("lineage")

    def save(self) -> None:
        if self.out:
            save_checkpoint(os.path.join(self.out, CHECKPOINT), self.state_dict())
            self.checkpoints_written += 1

    def resume(self) -> None:
        state = load_checkpoint(os.path.join(self.out, CHECKPOINT), target_name=self.target.name,
                                dim=self.target.dim)
        k, have = first_mismatch(self.cfg, state, RESUME_KEYS)
        if k is not None:
            raise CheckpointError(f"cannot resume: checkpoint has {k}={have!r}, config has {getattr(self.cfg, k)!r}")
        self.load_state_dict(state)
        truncate_metrics(os.path.join(self.out, "metrics.jsonl"), self.iteration)
        remove_stale_temporaries(self.out)


__all__ = ["Trainer"]
