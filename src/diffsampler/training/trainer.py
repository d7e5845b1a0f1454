"""The training loop. It only orchestrates: the schedule says what each iteration does, the behaviour
policy draws the batch, the learner takes the step, the rounds run the searches; the loop keeps the
budgets, metrics, checkpoints and exact resume (every component has its own state_dict)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

from ..distributed import Context
from ..errors import CheckpointError
from ..faults import fault_point, report_calls
from ..streams import make_streams
from ..targets import Target
from .behaviour import BehaviourPolicy
from .budget import check_budget, exhausted
from .checkpoint import CHECKPOINT, load_checkpoint, load_rng_state, rng_state, save_checkpoint
from .finetune import RESUME_KEYS, first_mismatch, start_from
from .in_run import in_run_metrics
from .interrupts import Interrupted, SearchTimeUp, stop_on_signals
from .learner import Learner
from ..targets.view import user_target
from .pilot_phase import standardization
from .run_dir import remove_stale_temporaries, truncate_metrics
from .rounds import SearchRounds
from .schedule import Schedule
from .sharded import ShardedSteps
from .world import World

STEP_CALLS_WINDOW = 10   # iterations whose train-call cost bounds the next one's (budget check)


class Trainer:
    """Train `target`'s sampler under `cfg`, writing to run directory `out` (or nowhere if None).

    callbacks: functions f(trainer, iteration) called after each iteration (a test may raise
    from one to simulate a kill). ctx: this process among the run's (`distributed.Context`); only
    rank 0 writes `out` (checkpoints, metrics, progress), the others join its collectives."""

    def __init__(self, target: Target, cfg, out: str | None = None, *, callbacks: list[Callable] | None = None,
                 progress: bool = True, init_weights: bool = True, ctx: Context | None = None) -> None:
        self.target, self.cfg, self.ctx = target, cfg.validate(), ctx or Context()
        self.has_dir, self.out = out is not None, out if self.ctx.is_main else None
        target.nonfinite = cfg.nonfinite_energy
        check_budget(cfg)
        self.callbacks, self.progress = callbacks or [], progress and self.ctx.is_main
        self.stream = make_streams(cfg.logger, self.out, cfg.to_dict(), target.name)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.learner = Learner(target, cfg)
        self.behaviour = BehaviourPolicy(target, cfg)
        self.rounds = SearchRounds(target, cfg, self.learner.sampler, self.ctx)
        self.schedule = Schedule(cfg)
        self.sharded = ShardedSteps(cfg, self.ctx, self.sampler.log_Z.device) if (cfg.shards or 1) > 1 else None
        self.world = World(self.ctx, target.counter)
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
        if self.sharded is not None:
            return self.sharded.step(self)
        it, s, learner = self.iteration, self.schedule, self.learner
        warm = s.in_ml_warmup(it)
        if s.warmup_ends(it):
            learner.optimizer = learner.make_optimizer()   # SGDS: the warm-up's Adam is replaced by a fresh one
        self.behaviour.prepare(it, self.sampler)
        fresh = s.is_fresh(it, bool(self.behaviour.store))
        off = s.wants_buffer_batch(it) and len(self.buffer) > 0
        if off and learner.uses_buffer_states(warm, fresh):   # the orbit estimator: buffer states, no rollout
            batch = self.behaviour.buffer_states(self.sampler, learner.orbit.needs_scores)
            return learner.orbit_step(batch, it, s.lr_factor(it), warm)
        on_policy = fresh and not off
        traj = self.behaviour.draw(self.sampler, learner, fresh, on_policy, s.exploration(it), it)
        if learner.warm_start_log_Z and not warm:   # after the ML warm-up, which does not use log Z
            learner.warm_start(self.buffer)
        if fresh and self.rounds.fits_novelty(s.round(it), on_policy):
            self.rounds.observe(traj.terminal)
        loss, leaf = learner.trajectory_loss(traj, learner.objective_for(on_policy, warm), on_policy, warm, it)
        return learner.apply(loss, it, s.lr_factor(it), warm, traj, leaf)

    def start_round(self) -> bool:
        """Round r's search and re-initialisation (`SearchRounds.start`), logged and checkpointed;
        False when the time budget ran out between the search's blocks (the checkpoint keeps them)."""
        r = self.schedule.round(self.iteration)
        try:
            row = self.rounds.start(r, self.learner, self.buffer, after_block=self._after_search_block,
                                    show=self.progress)
        except SearchTimeUp:
            return False
        self._sync()   # the search's calls of every process
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
        self._sync()   # rank 0's clock and any signal: every process takes the same decision below
        self.save()
        self._check_signal()
        if self.cfg.max_seconds is not None and self.train_seconds >= self.cfg.max_seconds:
            raise SearchTimeUp

    def _check_signal(self) -> None:
        reason = self.world.live_signal(self.stop.reason)
        if reason is not None:
            self.save()
            raise Interrupted(reason, self.iteration, self.out)

    def _sync(self) -> None:
        """Agree with the other processes on the calls, the clock and a signal (`World`)."""
        self.train_seconds, _ = self.world.sync(self.train_seconds, None if self.stop is None else self.stop.reason)

    def _clock(self) -> None:
        now = time.perf_counter()
        self.train_seconds, self._mark = self.train_seconds + now - self._mark, now
        report_calls(self.target.counter.total, self.train_seconds)

    # -- the loop ----------------------------------------------------------------------------------
    def budget_exhausted(self) -> str | None:
        return exhausted(self.cfg, self.iteration, self.train_seconds, self.target.counter.counts, self.step_calls)

    def fit(self) -> None:
        """Train until a budget is spent; SIGTERM/SIGINT stop it after a checkpoint (`Interrupted`)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, disable=not self.progress,
                   desc=f"train {self.target.name}", dynamic_ncols=True, mininterval=1.0)
        with stop_on_signals() as self.stop:
            try:
                self._sync()   # a pilot's calls (rank 0's) before the first budget check
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
                    self._clock()
                    self._sync()
                    self.step_calls = [*self.step_calls, self.target.counter.counts["train"] - before][-STEP_CALLS_WINDOW:]
                    self.iteration += 1
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
            m = self.sharded.in_run(self) if self.sharded else in_run_metrics(self.sampler, cfg, self.learner.ema)
            if m is not None:
                self._log({"iteration": it, **m, "energy_calls": self.target.counter.as_dict()})
        fault_point("iteration")
        if it % cfg.checkpoint_every == 0:
            self.save()
        for cb in self.callbacks:
            cb(self, it)

    def _log(self, row: dict) -> None:
        self.stream.log(row)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs (a collective on several processes: the shards' random states)."""
        counter = self.target.counter
        shards = {} if self.sharded is None else {"shards": self.sharded.state_dict()}
        return {**self.learner.state_dict(), **self.behaviour.state_dict(), **self.rounds.state_dict(), **shards,
                **self.schedule.state_dict(), "iteration": self.iteration, "rng": rng_state(),
                "config": self.cfg.to_dict(),
                "target": {"name": self.target.name, "dim": user_target(self.target).dim}, "energy_calls": dict(counter.counts),
                "nonfinite_calls": dict(counter.nonfinite), "train_seconds": self.train_seconds,
                "step_calls": self.step_calls, "standardization": standardization(self.target), "pilot": self.pilot,
                "lineage": self.lineage}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)
        self.iteration = int(state["iteration"])
        load_rng_state(state["rng"])
        if self.sharded is not None:
            self.sharded.load_state_dict(state["shards"])
        self.target.counter.load(state.get("energy_calls", {}), state.get("nonfinite_calls"))
        self.world.mark()
        self.behaviour.load_state_dict(state)
        self.rounds.load_state_dict(state)
        self.schedule.load_state_dict(state)
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.step_calls = [int(v) for v in state.get("step_calls", [])]
        self.pilot, self.lineage = state.get("pilot"), state.get("lineage")

    def save(self) -> None:
        """A checkpoint (rank 0 writes it; on several processes every one must call this)."""
        self._sync()
        if not self.has_dir:
            return
        state = self.state_dict()
        if self.out:
            save_checkpoint(os.path.join(self.out, CHECKPOINT), state)
            self.checkpoints_written += 1

    def resume(self, state: dict | None = None) -> None:
        """Continue from the run directory's checkpoint (or `state`, one read by rank 0)."""
        state = state or load_checkpoint(os.path.join(self.out, CHECKPOINT), target_name=self.target.name,
                                          dim=user_target(self.target).dim)
        k, have = first_mismatch(self.cfg, state, RESUME_KEYS)
        if k is not None:
            raise CheckpointError(f"cannot resume: checkpoint has {k}={have!r}, config has {getattr(self.cfg, k)!r}")
        self.load_state_dict(state)
        if self.out:
            truncate_metrics(os.path.join(self.out, "metrics.jsonl"), self.iteration)
            remove_stale_temporaries(self.out)


__all__ = ["Trainer"]
