"""The objective interface and its registry.

An objective is a loss on a batch. It declares once what it needs from the training loop, so the
loop never asks by name:
    batch               "trajectories" (a batch of forward or backward trajectories) or
                        "buffer_states" (states drawn from the replay buffer, no rollout: the orbit
                        estimator draws its own bridge states);
    pathwise            needs reparametrised forward rollouts (the gradient flows through the states);
    on_policy_only      only fresh forward rollouts of the learner serve it (KL);
    off_policy_only     only backward trajectories from samples serve it (maximum likelihood);
    needs_flow          needs the learned log-flow and log R at every state (DB, SubTB);
    needs_terminal_score  wants grad log R at the terminal states with the rollout's reward call;
    differentiates_rollout  False: the loss never differentiates log pi_fwd (no graph is kept);
    fits_log_Z          training moves sampler.log_Z toward log Z (the balance losses);
    sets_log_Z          the loss writes sampler.log_Z itself, with no gradient (VarGrad's batch
                        estimate); a sharded step (`shards` > 1) then sets it to the mean over shards.
Its options are its own dataclass, registered with it (`components.Registry`).
"""
from __future__ import annotations

import torch

from ..components import Registry
from ..sde import Trajectories

OBJECTIVES = Registry("objective")


class Objective:
    """Loss on a batch (see module for the declarations)."""

    name = "objective"
    batch = "trajectories"
    pathwise = False
    on_policy_only = False
    off_policy_only = False
    needs_flow = False
    needs_terminal_score = False
    differentiates_rollout = True
    fits_log_Z = True
    sets_log_Z = False

    def __call__(self, traj: Trajectories, sampler) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


__all__ = ["Objective", "OBJECTIVES"]
