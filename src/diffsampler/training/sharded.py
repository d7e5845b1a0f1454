"""One learner step over shards (config key `shards` = S > 1), on one process or several.

The batch of B trajectories is S sub-batches of B / S, and shard k draws its own from its own random
stream (`distributed.ShardRNG`), so the numbers are the same whichever process draws it. For each
shard this process owns: its batch (the behaviour policy, as for one batch), its loss scaled by
1/S, the backward pass (the gradients accumulate). One all-reduce then sums the gradients and the
losses over the processes, and the learner's step (clipping, optimiser, average) runs on every
process on the same gradient, so the parameters stay equal. A non-separable objective (VarGrad's
batch mean, adjoint matching's importance weights) is computed per shard: its statistics are a
shard's, on any number of processes. The logged loss is the sum of the shards' scaled losses.

What every process must see alike: the terminal states of all shards, gathered in shard order, fit
the novelty predictor and (offpolicy_data=replay) enter the replay buffer; the log Z warm start,
the target's samples (offpolicy_data=target_samples) and in-run evaluations are computed on rank 0
alone, each on a stream seeded from (seed, what, iteration), and the first two are broadcast.
"""
from __future__ import annotations

import torch

from ..distributed import ShardRNG, Tag, derive_seed, rng_fork
from .in_run import in_run_metrics


class ShardedSteps:
    """The learner steps of a run with cfg.shards > 1 on the processes of `ctx` (see module)."""

    def __init__(self, cfg, ctx, device: torch.device) -> None:
        self.cfg, self.ctx, self.device = cfg, ctx, torch.device(device)
        self.rng = ShardRNG(cfg.seed, cfg.shards, ctx, self.device)

    def step(self, trainer) -> float:
        """Iteration trainer.iteration over all shards; returns the loss (equal on every process)."""
        it, s, learner, behaviour = trainer.iteration, trainer.schedule, trainer.learner, trainer.behaviour
        warm = s.in_ml_warmup(it)
        if s.warmup_ends(it):
            learner.optimizer = learner.make_optimizer()   # SGDS: the warm-up's Adam is replaced by a fresh one
        self._target_samples(trainer, it)
        on_policy = not (s.wants_buffer_batch(it) and len(behaviour.buffer) > 0)
        if learner.warm_start_log_Z and not warm:
            self._warm_start(trainer, it)
        objective = learner.objective_for(on_policy, warm)
        learner.optimizer.zero_grad(set_to_none=True)
        behaviour.pending, loss, ends, log_Z = [], None, [], []
        try:
            for k in self.rng.owned:
                with self.rng.fork(k):
                    part, traj = self._shard(trainer, objective, on_policy, warm, it)
                loss = part if loss is None else loss + part
                ends.append((traj.terminal.detach(), traj.log_r.detach()))
                log_Z.append(learner.sampler.log_Z.detach().clone())
            replayed = bool(behaviour.pending)
        finally:
            behaviour.pending = None
        total = reduce_gradients(self.ctx, learner, loss)
        self._share_ends(trainer, ends, replayed, trainer.rounds.fits_novelty(s.round(it), on_policy))
        if objective.sets_log_Z:   # VarGrad's estimate: the mean of the shards' (the whole batch's mean)
            with torch.no_grad():
                learner.sampler.log_Z.copy_(self.in_shard_order([v.reshape(1) for v in log_Z]).mean())
        return learner.step(total, it, s.lr_factor(it), warm)

    def _shard(self, trainer, objective, on_policy: bool, warm: bool, it: int):
        """One shard's batch, loss / S and backward pass: (the scaled loss, detached; the batch)."""
        learner = trainer.learner
        traj = trainer.behaviour.draw(trainer.sampler, learner, True, on_policy, trainer.schedule.exploration(it), it)
        loss, leaf = learner.trajectory_loss(traj, objective, on_policy, warm, it)
        scaled = loss / self.cfg.shards
        learner.backward(scaled, traj, leaf)
        return scaled.detach(), traj

    def _share_ends(self, trainer, ends: list, replayed: bool, observe: bool) -> None:
        """All shards' terminal states in shard order: the novelty's fit (where `observe`, see the
        config key rnd_data), and the buffer's own samples."""
        if not observe and not replayed:
            return
        x = self.in_shard_order([e[0] for e in ends])
        if observe:
            trainer.rounds.observe(x)
        if replayed:
            trainer.buffer.add(x, self.in_shard_order([e[1] for e in ends]))

    def in_shard_order(self, local: list[torch.Tensor]) -> torch.Tensor:
        """This process's per-shard tensors (one shape) of every process, concatenated in shard order."""
        parts = self.ctx.all_gather(torch.stack(local))
        W = self.ctx.world
        return torch.cat([parts[k % W][k // W] for k in range(self.cfg.shards)])

    def _target_samples(self, trainer, it: int) -> None:
        """offpolicy_data=target_samples: rank 0 draws them at the start, every process stores them."""
        cfg, behaviour = self.cfg, trainer.behaviour
        if not (it == 0 and cfg.behaviour != "forward" and cfg.offpolicy_data == "target_samples"):
            return

        def draw():
            with rng_fork(self.device, seed=derive_seed(cfg.seed, Tag.TARGET_SAMPLES)):
                x, log_r = behaviour.target_rows(trainer.sampler)
            return x.cpu(), log_r.cpu()
        behaviour.buffer.add(*self.ctx.from_main(draw))

    def _warm_start(self, trainer, it: int) -> None:
        """The log Z warm start (Learner.warm_start) on rank 0, from a full batch, broadcast."""
        learner = trainer.learner

        def compute() -> float:
            with rng_fork(self.device, seed=derive_seed(self.cfg.seed, Tag.WARM_START, it)):
                learner.warm_start(trainer.buffer)
            return learner.sampler.log_Z.item()
        value = self.ctx.from_main(compute)
        with torch.no_grad():
            learner.sampler.log_Z.fill_(value)
        learner.warm_start_log_Z = False

    def in_run(self, trainer) -> dict | None:
        """An in-run evaluation on rank 0 (None elsewhere), on a stream of its own."""
        if not self.ctx.is_main:
            return None
        with rng_fork(self.device, seed=derive_seed(self.cfg.seed, Tag.IN_RUN_EVAL, trainer.iteration)):
            return in_run_metrics(trainer.sampler, self.cfg, trainer.learner.ema)

    def state_dict(self) -> list[dict]:
        return self.rng.state_dict()

    def load_state_dict(self, states: list[dict]) -> None:
        self.rng.load_state_dict(states)


def reduce_gradients(ctx, learner, loss: torch.Tensor) -> float:
    """Sum the accumulated gradients and `loss` over the processes (one all-reduce), in place; a
    parameter that no shard reached keeps no gradient, as on one process. Returns the summed loss."""
    if not ctx.active:
        return loss.item()
    params = [p for g in learner.optimizer.param_groups for p in g["params"]]
    flags = torch.tensor([p.grad is not None for p in params], dtype=loss.dtype, device=loss.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [flags, loss.reshape(1)])
    ctx.all_reduce_sum(flat)
    at = 0
    for i, p in enumerate(params):
        n = p.numel()
        p.grad = flat[at:at + n].view_as(p) if flat[-1 - len(params) + i] > 0 else None
        at += n
    return flat[-1].item()


__all__ = ["ShardedSteps", "reduce_gradients"]
