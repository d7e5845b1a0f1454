"""The sections of the training config and the keys that belong to no single component.

A config has eight sections. Each holds the generic keys below plus, for the sections that name a
component, the options of the registered components (their flat aliases): the network section the
drifts' (nets/registry.py), the objective section the objectives' (objectives/), the search section
the searchers' (search/). `training/config.py` assembles them into one TrainConfig, so adding a
component with options edits neither this file nor the config module.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..components import option


@dataclass
class NetworkSection:
    """Generic keys of the network section (the drifts' own options come from nets/)."""
    drift: str = option("langevin", "drift network (nets/): langevin (NN1 + NN2(t) clip(score)) | langevin_per_dim "
                        "| mlp | egnn | egnn_langevin | optimal (the target's exact drift)")
    sigma: float | None = option(None, "reference-process std at t = 1; None: the target's own", low=0.0,
                                 low_open=True)
    coordinates: str = option("cartesian", "cartesian | internal: a molecule (OpenMM target) trained in whitened bond "
                              "lengths, angles and torsions (targets/internal_coordinates.py); samples leave as "
                              "Cartesian rows", choices=("cartesian", "internal"))
    time_warp: float = option(1.0, "every grid (train and eval) warped to t = 1 - (1 - u)^time_warp: small steps "
                              "near the target end, where the drift is stiff", low=1.0)
    compile: str = option("none", "none | default: torch.compile the drift (in place, dynamic shapes; the CPU needs "
                          "a C++ compiler)", choices=("none", "default"))


@dataclass
class ObjectiveSection:
    """Generic keys of the objective section (the objectives' own options come from objectives/)."""
    objective: str = option("tb", "objective of buffer and replayed batches (and of on-policy ones unless "
                            "objective_fwd is set): tb | vargrad | subtb | db | kl | ml | adjoint | orbit_ml")
    objective_fwd: str | None = option(None, "objective of on-policy (forward) batches (SGDS's mode_fwd); None: "
                                       "`objective`. kl: the pathwise estimator of the same expected gradient as "
                                       "on-policy TB, with far lower variance in high dimension")


@dataclass
class BehaviourSection:
    """Keys of the behaviour policy: exploration, buffer batches, replay buffer, trajectory reuse, local search."""
    behaviour: str = option("forward", "forward (on-policy + exploration) | mixed | backward (replay)",
                            choices=("forward", "mixed", "backward"))
    exploration: float = option(0.0, "extra behaviour-noise std, decayed linearly to 0 ...", low=0.0)
    exploration_until: float = option(0.5, "... at this fraction of the iterations", low=0.0, high=1.0)
    offpolicy_data: str = option("replay", "buffer content for mixed/backward: replay (own samples), search "
                                 "(searcher samples only), target_samples (not data-free)",
                                 choices=("replay", "search", "target_samples"))
    offpolicy_every: int = option(2, "behaviour=mixed: every k-th fresh batch comes from the buffer (SGDS: 2)",
                                  low=2)
    offpolicy_weight: float = option(1.0, "weight of the loss on off-policy (buffer, replayed) batches", low=0.0,
                                     low_open=True)
    buffer_size: int = option(20000, "replay buffer of terminal states for mixed/backward", low=1)
    buffer_priority: str = option("rank", "rank (weight 1/(k N + rank), low energy first) | uniform",
                                  choices=("rank", "uniform"))
    buffer_rank_k: float = option(0.01, "k of the rank priority", low=0.0, low_open=True)
    trajectory_reuse: int = option(0, "after each fresh batch of trajectories, this many iterations train on "
                                   "stored ones (states, scores, rewards kept: no energy calls)", low=0)
    trajectory_store: int = option(10, "how many recent fresh batches the trajectory store keeps", low=1)
    local_search_every: int = option(0, "TB+LS: every k iterations run MALA on buffer samples; 0: off", low=0)
    local_search_steps: int = option(200, "TB+LS: MALA steps per local search", low=1)
    local_search_batch: int = option(300, "TB+LS: buffer samples moved per local search", low=1)


@dataclass
class SearchSection:
    """Generic keys of the search section (the searchers' own options come from search/), RND, pilot."""
    searcher: str = option("none", "none, or a registered searcher (search/; listed below) run once per round "
                           "(SGDS, Kim et al. 2025)")
    search_checkpoint_calls: int = option(1_000_000, "a search whose chains are independent runs in blocks of about "
                                          "this many energy calls, with a checkpoint after each (a kill loses at "
                                          "most one block); 0: one block", low=0)
    search_energy_cut: float = option(0.0, "> 0: drop searcher states whose energy exceeds the median by more than "
                                      "this many robust sds (1.4826 MAD): chains stuck in a tail (training/"
                                      "search_phase.py; 30 for targets without settings of their own); 0: keep them",
                                      low=0.0)
    rnd_alpha: float = option(0.0, "novelty weight in E - alpha * RND(x) for rounds > 1; 0: no RND", low=0.0)
    rnd_width: int = option(256, "width of the novelty networks (MLP; particle targets: invariant EGNN)", low=1)
    rnd_lr: float = option(1e-3, "learning rate of the RND predictor", low=0.0, low_open=True)
    rnd_data: str = option("fresh", "what the RND predictor is fitted on, one step per iteration: fresh = the "
                           "terminal states of every freshly drawn batch (the learner's and, in buffer batches, "
                           "the buffer's); on_policy = the learner's own samples only, as SGDS (Kim et al. 2025)",
                           choices=("fresh", "on_policy"))
    pilot: str = option("auto", "auto | on | off: a MALA pilot finds the energy's location and scale and "
                        "training runs in standardised coordinates (auto: for targets whose scale is unknown)",
                        choices=("auto", "on", "off"))
    pilot_chains: int = option(128, "pilot MALA chains", low=1)
    pilot_steps: int = option(4000, "MALA steps per pilot chain, in 8 stages (calls: chains x steps; under max_energy_calls cut to a tenth of the budget, not below 400)", low=16)
    pilot_temperature: float = option(1.0, "the pilot's MALA samples exp(-E / T) at this T", low=0.0, low_open=True)
    pilot_margin: float = option(1.0, "the coordinates' covariance is the pilot chains' times margin^2 (> 1: a "
                                 "reference process broader than the pilot found)", low=0.0, low_open=True)
    pilot_widen: bool = option(False, "multiply the margin by the pilot's scale growth over its last two stages "
                               "where above 1 (scales still growing: the chains had not reached the target's)")
    pilot_grid: float = option(3.0, "after a pilot, train_steps rises to (c sigma sqrt(kappa))^(2 / time_warp), at most "
                               "30, with c this key and kappa the stiffness the pilot measured (training/pilot_phase.py); "
                               "0: keep train_steps", low=0.0)


@dataclass
class RoundsSection:
    """Keys of SGDS's rounds: their number and lengths, re-initialisation, the ML warm-up."""
    rounds: int = option(1, "rounds of search -> train; iterations split evenly (or by round_iterations)", low=1)
    round_iterations: str | None = option(None, "iterations of each round, comma-separated, summing to iterations "
                                          "(SGDS's --epochs); None: even split")
    reinit: bool = option(True, "re-initialise the learner (and RND predictor) between rounds")
    keep_log_Z: bool = option(True, "keep the learned log Z across a re-initialisation")
    reinit_keep: float = option(0.0, "re-initialise to keep * old + (1 - keep) * fresh weights (shrink and "
                                "perturb, Ash & Adams 2020); 0: a full re-initialisation (SGDS)", low=0.0, high=1.0,
                                high_open=True)
    log_Z_from_searcher: bool = option(True, "initialise log Z from the searcher's estimate (AIS, SMC)")
    ml_warmup: int = option(0, "per round: iterations of backward maximum likelihood first", low=0)
    lr_ml: float | None = option(None, "the warm-up's own drift learning rate (SGDS's mle_lr), with a fresh Adam; "
                                 "None: lr, one optimiser", low=0.0, low_open=True)


@dataclass
class OptimiserSection:
    """Keys of the optimiser: iterations, batch, training grid, learning rates, clipping, averaging, log Z start."""
    iterations: int | None = option(10000, "learner iterations; None: as many as fit in max_energy_calls after "
                                    "the searches (training/budget.py)", low=0)
    batch_size: int = option(300, "trajectories per batch", low=1)
    train_grid: str = option("random", "uniform | random | equidistant training time grid")
    train_steps: int = option(10, "steps of the training grid", low=1)
    lr: float = option(1e-3, "drift learning rate (Adam)", low=0.0, low_open=True)
    lr_log_Z: float = option(1e-1, "learning rate of log Z", low=0.0, low_open=True)
    lr_flow: float = option(1e-3, "learning rate of the log-flow network (DB, SubTB)", low=0.0, low_open=True)
    grad_clip: float = option(0.0, "max gradient norm; 0 disables", low=0.0)
    grad_chunk_steps: int = option(0, "> 0: back-propagate log pi_fwd this many steps at a time (same gradient, "
                                   "memory of k steps); 0: one graph through the whole path", low=0)
    lr_final: float = option(1.0, "cosine decay of every learning rate to lr_final x its value over each round; "
                             "1: constant", low=0.0, high=1.0, low_open=True)
    ema_decay: float = option(0.0, "evaluate and sample with a moving average of the weights (e.g. 0.999); "
                              "0 disables", low=0.0, high=1.0, high_open=True)
    log_Z_init: float | None = option(None, "None: warm-start from the first training batch (log_Z_warm_start)")
    log_Z_warm_start: str = option("mean", "mean (ELBO of the batch) | logmeanexp (IS estimate) | buffer (log mean "
                                   "R over the replay buffer, SGDS's start)", choices=("mean", "logmeanexp", "buffer"))
    init_from: str | None = option(None, "fine-tune: start from another run's weights, log Z and replay buffer (a "
                                   "run directory or checkpoint of the same target and network)")


@dataclass
class EvaluationSection:
    """Keys of the evaluation: grid, steps, samples, in-run evaluations."""
    eval_grid: str = option("uniform", "evaluation time grid")
    eval_steps: int = option(100, "steps of the evaluation grid", low=1)
    eval_samples: int = option(2000, "samples of the final evaluation", low=1)
    eval_every: int = option(0, "iterations between in-run evaluations; 0: only at the end", low=0)


@dataclass
class RunSection:
    """Keys of the run: seed, device, dtype, threads, budgets, checkpoints, logging, the non-finite policy."""
    seed: int = option(0, "random seed")
    device: str = option("cpu", "cpu | cuda | cuda:N | auto")
    dtype: str = option("float32", "float32 | float64", choices=("float32", "float64"))
    precision: str = option("fp32", "fp32 | bf16: the drift network's forward under bfloat16 autocast (log-densities, "
                            "energies and losses stay in dtype); needs dtype=float32", choices=("fp32", "bf16"))
    shards: int | None = option(None, "each batch is split into this many sub-batches, each with its own random "
                                "stream; the processes of a torchrun launch share them out (their number must "
                                "divide shards), so the numbers depend on shards, not on the processes "
                                "(docs/distributed.md); None: the number of processes (1 without torchrun)", low=1)
    threads: int = option(0, "torch CPU threads; 0 leaves torch's default", low=0)
    max_seconds: float | None = option(None, "wall-time budget of the pilot, searches and training (evaluation not included)", low=0.0,
                                       low_open=True)
    max_energy_calls: int | None = option(None, "search + train energy-call budget", low=0, low_open=True)
    checkpoint_every: int = option(500, "iterations between checkpoints", low=1)
    log_every: int = option(50, "iterations between metric rows", low=1)
    logger: str = option("jsonl", "where metric rows go: jsonl (RUN/metrics.jsonl, always) plus tensorboard and/or "
                         "wandb, separated by '|' or ','")
    nonfinite_energy: str = option("reject", "a NaN/inf energy or gradient: reject (zero density, bounded loss, "
                                   "counted and reported) | error (stop the run)", choices=("reject", "error"))


SECTIONS: dict[str, type] = {"network": NetworkSection, "objective": ObjectiveSection, "behaviour": BehaviourSection,
                             "search": SearchSection, "rounds": RoundsSection, "optimiser": OptimiserSection,
                             "evaluation": EvaluationSection, "run": RunSection}

__all__ = ["SECTIONS", "NetworkSection", "ObjectiveSection", "BehaviourSection", "SearchSection", "RoundsSection",
           "OptimiserSection", "EvaluationSection", "RunSection"]
