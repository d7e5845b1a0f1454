"""The behaviour policy: where each iteration's batch comes from.

A batch is one of: fresh forward trajectories of the learner (on-policy, with exploration noise in
the behaviour only); backward trajectories from replay-buffer samples along the reference bridge
(off-policy; the stored true reward is reused, no energy call at the end point); a stored batch
replayed under the current drift (`trajectory_reuse`; no energy call); or, for an objective over
buffer states (the orbit estimator), the buffer states themselves with a time grid. The policy owns
the replay buffer and the trajectory store, and the two things that fill the buffer besides the
searcher: the learner's own terminal states (`offpolicy_data=replay`), local search (TB + LS), and
the target's own samples (`offpolicy_data=target_samples`, not data-free).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..errors import ConfigError, NonFiniteError, TrainingError
from ..sde import Trajectories, backward_rollout, forward_rollout, replay
from ..search import ReplayBuffer
from .search_phase import local_search


@dataclass
class BufferStates:
    """A batch for an objective over buffer states: y (B, d), their scores (B, d) or None, a grid."""

    y: torch.Tensor
    score: torch.Tensor | None
    grid: torch.Tensor


class BehaviourPolicy:
    """The batches of `cfg`'s behaviour on `target` (see module)."""

    def __init__(self, target, cfg) -> None:
        self.target, self.cfg = target, cfg
        self.buffer = ReplayBuffer(target.dim, cfg.buffer_size, cfg.buffer_priority, cfg.buffer_rank_k)
        self.store: list[Trajectories] = []   # recent fresh trajectories, for trajectory_reuse
        self.batch_size = cfg.batch_size // (cfg.shards or 1)   # one shard's batch (shards: training/sharded.py)
        self.pending: list | None = None      # a sharded step's own terminal states, added after all shards

    # -- filling the buffer ------------------------------------------------------------------------
    def prepare(self, it: int, sampler) -> None:
        """Before iteration `it`: the target's samples at the start (offpolicy_data=target_samples),
        and TB + LS's local search every `local_search_every` iterations."""
        cfg = self.cfg
        if it == 0 and cfg.behaviour != "forward" and cfg.offpolicy_data == "target_samples":
            self.fill_from_target(sampler)
        if cfg.local_search_every and it % cfg.local_search_every == 0 and len(self.buffer):
            x0, _ = self.buffer.sample(cfg.local_search_batch)
            x, e = local_search(cfg, self.target, x0.to(sampler.log_Z))
            self.buffer.add(x, -e)

    def fill_from_target(self, sampler) -> None:
        """The target's own samples and their true log R (counted as 'search' calls)."""
        self.buffer.add(*self.target_rows(sampler))

    def target_rows(self, sampler) -> tuple[torch.Tensor, torch.Tensor]:
        """buffer_size of the target's own samples and their true log R (counted as 'search' calls)."""
        if not self.target.has_samples:
            raise ConfigError(f"config key 'offpolicy_data' = 'target_samples': target "
                              f"{self.target.name!r} has no samples")
        x = self.target.from_user(self.target.sample(self.cfg.buffer_size).to(sampler.log_Z))
        with torch.no_grad(), self.target.counter.use("search"):
            log_r = torch.cat([self.target.log_prob(c) for c in x.split(4096)])
        return x, log_r

    # -- batches -----------------------------------------------------------------------------------
    def buffer_states(self, sampler, need_scores: bool) -> BufferStates:
        """Buffer states by the buffer's priority, their scores when needed (each row's computed once,
        when first drawn: a counted train call), and a training grid."""
        cfg, p = self.cfg, sampler.log_Z
        idx = self.buffer.sample_index(cfg.batch_size)
        score = None
        if need_scores:
            todo = self.buffer.missing_scores(idx)
            if todo.numel():
                with torch.no_grad(), self.target.counter.use("train"):
                    _, s = self.target.log_reward_and_score(self.buffer.x[todo].to(p))
                self.buffer.set_scores(todo, s)
            score = self.buffer.score[idx].to(p)
        grid = sampler.make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
        return BufferStates(self.buffer.x[idx].to(p), score, grid)

    def draw(self, sampler, learner, fresh: bool, on_policy: bool, explore: float, it: int) -> Trajectories:
        """`trajectories` with the train-phase counter, without a graph under grad_chunk_steps, and the
        iteration's errors: a non-finite energy during the rollout, or a batch with no finite end point."""
        with self.target.counter.use("train"), torch.no_grad() if self.cfg.grad_chunk_steps else nullcontext():
            try:
                traj = self.trajectories(sampler, learner, fresh, on_policy, explore)
            except NonFiniteError as e:
                raise TrainingError(f"iteration {it}: non-finite energy during rollout: {e}") from None
        if not torch.isfinite(traj.log_r).any():
            raise TrainingError(f"iteration {it}: the energy is non-finite at all {traj.log_r.shape[0]} end points "
                                "of the batch (NaN/inf everywhere the sampler goes): nothing to learn from; check "
                                "the energy, or give the target a scale (sigma) that reaches its domain")
        return traj

    def trajectories(self, sampler, learner, fresh: bool, on_policy: bool, explore: float) -> Trajectories:
        """This iteration's trajectories: a replayed stored batch (not fresh), backward trajectories
        from the buffer, or forward rollouts of the learner (on-policy); fresh ones are stored when
        trajectory_reuse is on."""
        cfg = self.cfg
        if not fresh:
            stored = self.store[int(torch.randint(len(self.store), ()))]
            return stored if learner.replays_as_drawn else replay(sampler, stored)
        grid = sampler.make_grid(cfg.train_grid, self.batch_size, cfg.train_steps)
        if not on_policy:
            x, log_r = self.buffer.sample(self.batch_size)
            tr = backward_rollout(sampler, x.to(sampler.log_Z), grid, log_r=log_r.to(sampler.log_Z),
                                  need_step_rewards=learner.objective.needs_flow)
        else:
            tr = self._rollout(sampler, learner, grid, explore)
        if cfg.trajectory_reuse:
            self._keep(tr, learner.replays_as_drawn)
        return tr

    def _rollout(self, sampler, learner, grid: torch.Tensor, explore: float) -> Trajectories:
        # an objective that never differentiates log_pf (adjoint matching) needs no graph; none is
        # kept either when the caller disabled autograd (grad_chunk_steps)
        fwd, main = learner.objective_fwd, learner.objective
        with torch.set_grad_enabled(fwd.differentiates_rollout and torch.is_grad_enabled()):
            tr = forward_rollout(sampler, grid, explore=explore, pathwise=fwd.pathwise,
                                 need_step_rewards=fwd.needs_flow or main.needs_flow,
                                 need_terminal_score=fwd.needs_terminal_score)
        if self.cfg.behaviour != "forward" and self.cfg.offpolicy_data == "replay":
            if self.pending is None:
                self.buffer.add(tr.terminal.detach(), tr.log_r.detach())
            else:
                self.pending.append((tr.terminal.detach(), tr.log_r.detach()))
        return tr

    def _keep(self, tr: Trajectories, as_drawn: bool) -> None:
        """Store a fresh batch for replay: states, grid, rewards, scores; log_pf only when the batch is
        replayed as drawn (it is recomputed under the current drift otherwise)."""
        self.store.append(Trajectories(tr.x.detach(), tr.t, tr.log_pf.detach() if as_drawn else tr.log_pf.new_empty(0),
                                       tr.log_pb.detach(), tr.log_r.detach(),
                                       None if tr.log_r_steps is None else tr.log_r_steps.detach(),
                                       tr.score, None if tr.terminal_score is None else tr.terminal_score.detach()))
        del self.store[:-self.cfg.trajectory_store]

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"buffer": self.buffer.state_dict(), "store": [vars(tr) for tr in self.store]}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.store = [Trajectories(**tr) for tr in state.get("store", [])]


__all__ = ["BehaviourPolicy", "BufferStates"]
