"""Typed training configuration, validated at load: unknown keys and out-of-range values are
errors that name the key. Overrides come as ``key=value`` strings (the CLI) or keyword args."""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, fields

from ..errors import ConfigError
from ..objectives import OBJECTIVES
from ..sde import GRID_KINDS

BEHAVIOURS = ("forward", "mixed", "backward")


@dataclass
class TrainConfig:
    """Everything that defines a training run. See docs/CONFIG.md for the meaning of each key."""

    recipe: str = "custom"             # a named bundle of the keys below (training/recipes.py)
    # learner network
    drift: str = "langevin"            # langevin (NN1 + NN2(t) clip(score)) | langevin_per_dim | mlp | egnn(_langevin)
    width: int = 128
    depth: int = 2
    time_features: int = 64
    score_clip: float = 100.0
    sigma: float | None = None         # reference-process std; None: the target's own
    scale_by_sigma: bool = True        # MLP drifts work in units of sigma: mu = sigma NN(x / sigma, t)
    # objective and behaviour policy
    objective: str = "tb"              # tb | vargrad | subtb | db | kl | ml | adjoint
    objective_fwd: str | None = None   # objective of on-policy batches (SGDS's mode_fwd); None: `objective`.
                                       # kl: the pathwise (reparametrised) estimator of the same expected
                                       # gradient as on-policy TB, with far lower variance in high dimension
    subtb_lambda: float = 2.0
    adjoint_times: int = 4             # adjoint matching: bridge times t ~ U(adjoint_t_min, adjoint_t_max) per sample
    adjoint_t_min: float = 0.0         # adjoint matching: a narrower range of bridge times spends the regression
    adjoint_t_max: float = 1.0         # where the drift errs (the minimiser there is the same mu*)
    adjoint_weights: str = "uniform"   # adjoint matching: uniform (AS's fixed point) | importance
                                       # (self-normalised trajectory weights: regress on mu* itself)
    adjoint_kappa: float = 0.0         # adjoint matching: mix the bridge form (Y - X_t)/(1 - t) into the target,
                                       # weight 1 - 1/(1 + kappa (1 - t)); same minimiser, lower variance (0: off)
    adjoint_batch_average: bool = False  # adjoint matching: Rao-Blackwellise each bridge state's target over
                                       # the batch (posterior of the sample that generated it); no extra calls
    behaviour: str = "forward"         # forward (on-policy + exploration) | mixed | backward (replay)
    exploration: float = 0.0           # extra behaviour-noise std, decayed linearly to 0 ...
    exploration_until: float = 0.5     # ... at this fraction of the iterations
    offpolicy_data: str = "replay"     # buffer content for mixed/backward: replay (own samples), search
                                       # (searcher samples only), target_samples (not data-free)
    offpolicy_every: int = 2           # behaviour=mixed: every k-th fresh batch comes from the buffer (SGDS: 2,
                                       # alternating); the others are on-policy
    offpolicy_weight: float = 1.0      # weight of the loss on off-policy (buffer, replayed) batches; both
                                       # losses vanish at the exact sampler, so any weight keeps that optimum
    buffer_size: int = 20000           # replay buffer of terminal states for mixed/backward
    buffer_priority: str = "rank"      # rank (weight 1/(k N + rank), low energy first) | uniform
    buffer_rank_k: float = 0.01
    # searcher and SGDS rounds (Kim et al. 2025)
    searcher: str = "none"             # none | mala | ais | pt | underdamped | rmp_langevin: run each round
    rounds: int = 1                    # iterations are split evenly between rounds (or by round_iterations)
    round_iterations: str | None = None  # iterations of each round, comma-separated, summing to iterations
                                       # ("10000,20000" is SGDS's --epochs 10000 30000); None: even split
    search_chains: int = 3000
    search_steps: int = 100            # MCMC steps per chain; for AIS the number of annealing levels
    search_inner: int = 20             # AIS: MALA steps per annealing level
    search_burnin: int = 0             # MCMC steps discarded (with step-size adaptation)
    search_thin: int = 10              # keep every k-th MCMC state
    search_step_size: float = 0.01     # initial MCMC step size (adapted during burn-in)
    search_adapt_rate: float = 0.3     # MALA/PT burn-in: log h += rate * (acceptance - 0.574) per step
    search_init_std: float | None = None  # chains start at N(0, s^2 I) (AIS: its base); None: sigma
    pilot: str = "auto"                # auto | on | off: a short MALA pilot finds the energy's location and scale
                                       # and training runs in standardised coordinates (auto: for targets whose
                                       # scale is unknown, e.g. a user energy given without sigma)
    pilot_chains: int = 64
    pilot_steps: int = 400             # MALA steps per pilot chain, in 4 stages (energy calls: chains x steps)
    search_temperatures: int = 4       # parallel tempering: number of temperatures
    search_t_max: float = 10.0         # parallel tempering: highest temperature
    search_friction: float = 1.0       # underdamped / randomized-midpoint Langevin friction
    rnd_alpha: float = 0.0             # novelty weight in E - alpha * RND(x) for rounds > 1; 0: no RND
    rnd_width: int = 256               # width of the novelty networks (MLP; particle targets: invariant EGNN)
    rnd_lr: float = 1e-3
    reinit: bool = True                # re-initialise the learner (and RND predictor) between rounds
    keep_log_Z: bool = True            # keep the learned log Z across a re-initialisation
    reinit_keep: float = 0.0           # re-initialise to keep * old + (1 - keep) * fresh weights (shrink and
                                       # perturb, Ash & Adams 2020); 0: a full re-initialisation (SGDS)
    log_Z_from_searcher: bool = True   # initialise log Z from the searcher's estimate (AIS)
    ml_warmup: int = 0                 # per round: iterations of backward maximum likelihood first
    lr_ml: float | None = None         # the warm-up's own drift learning rate (SGDS's mle_lr), with a fresh Adam
                                       # for the warm-up and another after it, as SGDS; None: lr, one optimiser
    orbit_K: int = 0                   # symmetric targets: ML with the orbit Rao-Blackwell target over K
                                       # group elements (Tong et al. 2025); 0: plain ML on backward paths
    orbit_t_threshold: float | None = None  # spend group samples only where t < this (high noise)
    orbit_kappa: float = 0.0           # orbit ML: mix the score form of the drift target in (as adjoint_kappa);
                                       # each buffer row's score is computed once, when first drawn (train calls)
    trajectory_reuse: int = 0              # after each fresh batch of trajectories, this many iterations train on
                                       # stored ones (states, scores, rewards kept: no energy calls)
    trajectory_store: int = 10           # how many recent fresh batches the trajectory store keeps
    local_search_every: int = 0        # TB+LS: every k iterations run MALA on buffer samples; 0: off
    local_search_steps: int = 200
    local_search_batch: int = 300
    # optimisation
    train_grid: str = "random"         # uniform | random | equidistant
    time_warp: float = 1.0             # every grid (train and eval) warped to t = 1 - (1 - u)^time_warp:
                                       # small steps near the target end, where the drift is stiff
    train_steps: int = 10
    batch_size: int = 300
    iterations: int | None = 10000     # None: as many as fit in max_energy_calls after the searches (budget.py)
    lr: float = 1e-3
    lr_log_Z: float = 1e-1
    lr_flow: float = 1e-3
    grad_clip: float = 0.0             # max gradient norm; 0 disables
    grad_chunk_steps: int = 0          # > 0: roll out without a graph, then back-propagate log_pf this many
                                       # steps at a time (same gradient, memory of k steps instead of all;
                                       # one more drift pass). 0: one graph through the whole path
    compile: str = "none"              # none | default: torch.compile the drift (in place, dynamic shapes; the
                                       # first calls compile, ~30 s; the CPU needs a C++ compiler). LJ-13 learner:
                                       # 2.0x faster per iteration on an H200, 1.5x on one CPU core
    lr_final: float = 1.0              # cosine decay of every learning rate to lr_final x its value over each
                                       # round's iterations (restarted with every round); 1: constant
    ema_decay: float = 0.0             # evaluate and sample with a moving average of the weights (e.g. 0.999);
                                       # training continues from the raw weights; 0 disables
    log_Z_init: float | None = None    # None: warm-start from the first training batch (log_Z_warm_start)
    log_Z_warm_start: str = "mean"     # 'mean' (ELBO of the batch), 'logmeanexp' (IS estimate: robust to a
                                       # few trajectories with log w thousands of nats low) or 'buffer' (log mean
                                       # R over the replay buffer, SGDS's start; no rollout, no energy calls)
    init_from: str | None = None       # fine-tune: start from another run's weights (its averaged ones if it kept
                                       # an EMA), log Z and replay buffer; a run directory or checkpoint file of the
                                       # same target and network (an EGNN drift may be deeper: it starts at the source's function);
                                       # optimiser, iteration count and calls start anew
    # evaluation
    eval_grid: str = "uniform"
    eval_steps: int = 100
    eval_samples: int = 2000
    eval_every: int = 0                # iterations between in-run evaluations; 0: only at the end
    # run control
    seed: int = 0
    device: str = "cpu"                # cpu | cuda | cuda:N | auto
    dtype: str = "float32"             # float32 | float64
    nonfinite_energy: str = "reject"   # a NaN/inf energy or gradient: reject (zero density: searchers reject the
                                       # point, the learner sees a bounded low reward, counted and reported) |
                                       # error (stop the run, naming the point)
    threads: int = 0                   # torch CPU threads; 0 leaves torch's default
    max_seconds: float | None = None   # training wall-time budget (evaluation not included)
    max_energy_calls: int | None = None  # search + train energy calls budget
    checkpoint_every: int = 500
    log_every: int = 50
    logger: str = "jsonl"              # where metric rows go: jsonl (RUN/metrics.jsonl, always) plus tensorboard
                                       # and/or wandb, separated by '|' or ',' (streams/)

    def validate(self) -> TrainConfig:
        def need(cond: bool, key: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"config key {key!r} = {getattr(self, key)!r}: {msg}")

        from ..nets import DRIFTS
        choices = {"drift": tuple(DRIFTS), "objective": tuple(OBJECTIVES), "behaviour": BEHAVIOURS,
                   "train_grid": GRID_KINDS, "eval_grid": GRID_KINDS, "buffer_priority": ("rank", "uniform"),
                   "offpolicy_data": ("replay", "search", "target_samples"),
                   "searcher": ("none", "mala", "ais", "pt", "underdamped", "rmp_langevin"),
                   "dtype": ("float32", "float64"), "log_Z_warm_start": ("mean", "logmeanexp", "buffer"),
                   "adjoint_weights": ("uniform", "importance"),
                   "compile": ("none", "default"), "nonfinite_energy": ("reject", "error"),
                   "pilot": ("auto", "on", "off")}
        for k, opts in choices.items():
            need(getattr(self, k) in opts, k, f"must be one of {list(opts)}")
        from ..streams import parse_logger_option
        parse_logger_option(self.logger)
        need(self.objective_fwd is None or self.objective_fwd in OBJECTIVES, "objective_fwd",
             f"must be None or one of {list(OBJECTIVES)}")
        need(self.objective_fwd != "ml", "objective_fwd", "maximum likelihood needs backward trajectories")
        for k in ("width", "depth", "time_features", "train_steps", "batch_size", "eval_steps",
                  "eval_samples", "checkpoint_every", "log_every", "buffer_size", "rounds", "search_chains",
                  "search_steps", "search_inner", "search_thin", "search_temperatures", "rnd_width",
                  "local_search_steps", "local_search_batch", "trajectory_store", "adjoint_times", "pilot_chains"):
            need(getattr(self, k) >= 1, k, "must be >= 1")
        need(self.iterations >= 0, "iterations", "must be >= 0")
        need(self.pilot_steps >= 8, "pilot_steps", "must be >= 8 (4 stages of an adapting and a sampling half)")
        need(self.offpolicy_every >= 2, "offpolicy_every", "must be >= 2 (behaviour=backward: every batch off-policy)")
        for k in ("search_burnin", "ml_warmup", "local_search_every", "orbit_K", "trajectory_reuse"):
            need(getattr(self, k) >= 0, k, "must be >= 0")
        for k in ("lr", "lr_log_Z", "lr_flow", "score_clip", "subtb_lambda", "buffer_rank_k", "search_step_size",
                  "search_t_max", "search_friction", "rnd_lr", "search_adapt_rate", "offpolicy_weight"):
            need(math.isfinite(getattr(self, k)) and getattr(self, k) > 0, k, "must be a finite number > 0")
        for k in ("exploration", "grad_clip", "rnd_alpha"):
            need(math.isfinite(getattr(self, k)) and getattr(self, k) >= 0, k, "must be a finite number >= 0")
        need(math.isfinite(self.time_warp) and self.time_warp >= 1, "time_warp", "must be a finite number >= 1")
        need(0 <= self.reinit_keep < 1, "reinit_keep", "must be in [0, 1) (reinit=false keeps all the weights)")
        need(0 < self.lr_final <= 1, "lr_final", "must be in (0, 1] (1: a constant learning rate)")
        need(self.ema_decay == 0 or 0 < self.ema_decay < 1, "ema_decay", "must be 0 (off) or in (0, 1)")
        need(0 <= self.exploration_until <= 1, "exploration_until", "must be in [0, 1]")
        need(self.sigma is None or (math.isfinite(self.sigma) and self.sigma > 0), "sigma", "must be > 0")
        need(self.search_init_std is None or (math.isfinite(self.search_init_std) and self.search_init_std > 0),
             "search_init_std", "must be > 0")
        need(self.max_seconds is None or self.max_seconds > 0, "max_seconds", "must be > 0")
        need(self.max_energy_calls is None or self.max_energy_calls > 0, "max_energy_calls", "must be > 0")
        need(self.eval_every >= 0, "eval_every", "must be >= 0")
        need(self.grad_chunk_steps >= 0, "grad_chunk_steps", "must be >= 0 (0: no chunking)")
        need(not (self.grad_chunk_steps and "kl" in (self.objective, self.objective_fwd)), "grad_chunk_steps",
             "must be 0 with the KL (PIS) objective, which differentiates through the states themselves")
        need(self.threads >= 0, "threads", "must be >= 0")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
             "must be cpu, cuda, cuda:N or auto")
        need(self.log_Z_init is None or math.isfinite(self.log_Z_init), "log_Z_init", "must be finite")
        need(0 <= self.adjoint_t_min < 1, "adjoint_t_min", "must be in [0, 1)")
        need(self.adjoint_t_min < self.adjoint_t_max <= 1, "adjoint_t_max", "must be in (adjoint_t_min, 1]")
        need(math.isfinite(self.adjoint_kappa) and self.adjoint_kappa >= 0, "adjoint_kappa", "must be finite and >= 0")
        need(not (self.adjoint_kappa and self.adjoint_batch_average), "adjoint_kappa",
             "must be 0 with adjoint_batch_average=true (the two are not combined)")
        need(self.init_from is None or (isinstance(self.init_from, str) and self.init_from.strip() != ""),
             "init_from", "must be a run directory or checkpoint path")
        need(not (self.objective == "kl" and self.trajectory_reuse > 0), "trajectory_reuse",
             "the KL (PIS) objective differentiates through fresh rollouts; stored trajectories cannot serve it")
        need(not (self.objective == "kl" and self.behaviour != "forward"), "behaviour",
             "the KL (PIS) objective differentiates through forward rollouts; use behaviour=forward")
        need(not (self.offpolicy_data == "search" and self.searcher == "none"), "offpolicy_data",
             "'search' needs a searcher (set searcher=mala|ais|pt|underdamped|rmp_langevin)")
        need(self.search_t_max >= 1, "search_t_max", "must be >= 1")
        need(math.isfinite(self.orbit_kappa) and self.orbit_kappa >= 0, "orbit_kappa", "must be finite and >= 0")
        need(self.orbit_kappa == 0 or self.orbit_K > 0, "orbit_kappa", "needs orbit_K >= 1 (it mixes the orbit ML target)")
        need(self.orbit_t_threshold is None or 0 < self.orbit_t_threshold <= 1, "orbit_t_threshold",
             "must be in (0, 1]")
        need(self.iterations >= self.rounds or self.iterations == 0, "rounds", "more rounds than iterations")
        if self.round_iterations is not None:
            try:
                lengths = self.round_lengths()
            except ValueError:
                lengths = []
            need(len(lengths) == self.rounds and all(v >= 1 for v in lengths), "round_iterations",
                 f"must be {self.rounds} comma-separated integers >= 1 (one per round; rounds = {self.rounds})")
            need(sum(lengths) == self.iterations, "round_iterations",
                 f"must sum to iterations = {self.iterations} (they sum to {sum(lengths)})")
        need(self.lr_ml is None or (math.isfinite(self.lr_ml) and self.lr_ml > 0), "lr_ml",
             "must be None (use lr) or a finite number > 0")
        need(not (self.objective == "ml" and self.behaviour == "forward"), "behaviour",
             "maximum likelihood needs backward trajectories from samples; use behaviour=backward or mixed")
        return self

    def round_lengths(self) -> list[int]:
        """Iterations of each round: round_iterations read as integers, else ceil(iterations / rounds)
        each (the last round then ends at `iterations`)."""
        if self.round_iterations is not None:
            return [int(v) for v in self.round_iterations.split(",")]
        return [max(1, -(-self.iterations // self.rounds))] * self.rounds

    def round_starts(self) -> list[int]:
        """The first iteration of each round (`rounds` increasing integers, the first 0)."""
        lengths = self.round_lengths()
        return [sum(lengths[:r]) for r in range(self.rounds)]

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from keys; a 'recipe' key applies its bundle first, then the other keys."""
        if d.get("recipe") not in (None, "custom"):
            from .recipes import recipe
            d = {**recipe(d["recipe"]), **d}
        cfg = cls()
        for k, v in coerce_keys(d).items():
            setattr(cfg, k, v)
        if cfg.iterations is None:
            from .budget import size_iterations
            cfg.iterations = size_iterations(cfg, pilot=cfg.pilot == "on")
        return cfg.validate()

    def replace(self, **overrides) -> TrainConfig:
        base = self.to_dict()
        if overrides.get("recipe") not in (None, "custom", base["recipe"]):
            from .recipes import recipe
            base = {**base, **recipe(overrides["recipe"])}
        return TrainConfig.from_dict({**base, **overrides, "recipe": overrides.get("recipe", base["recipe"])})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def coerce_keys(d: dict) -> dict:
    """Each key checked and typed on its own (no checks across keys, which need the full config):
    an unknown key fails naming close matches; a value that cannot be read as its key's type fails."""
    known = {f.name for f in fields(TrainConfig)}
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {k!r}{hint}")
    return {k: _coerce(k, v, _field_type(k)) for k, v in d.items()}


def _field_type(name: str):
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def _coerce(key: str, value, typ):
    """Convert a value (possibly a string from the command line) to the field's type."""
    args = typing.get_args(typ)
    optional = (typing.get_origin(typ) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if optional else typ
    if value is None and not optional:
        raise ConfigError(f"config key {key!r} may not be None")
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
        return None
    try:
        if base is bool:
            if isinstance(value, str):
                v = value.strip().lower()
                if v in ("1", "true", "yes", "on"):
                    return True
                if v in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {base.__name__}") from None
    return value


def parse_overrides(items: list[str]) -> dict:
    """['key=value', ...] -> {key: value-string}; the types are applied by `from_dict`."""
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"expected key=value, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def read_config_file(path: str, target_name: str) -> dict:
    """Config keys from a JSON object (or a YAML mapping, for a path ending in .yaml/.yml; needs
    PyYAML): a preset (e.g. benchmarks/configs/*.json) or a run's own config.json, so that a run can
    be repeated (on another device: add device=cuda). The keys act as overrides of the target's
    default config, and command-line overrides act on top of them. A 'target' key (run directories
    write one) must name `target_name`: a config tuned for one target is not silently reused on another."""
    import json

    is_yaml = path.lower().endswith((".yaml", ".yml"))
    kind = "YAML" if is_yaml else "JSON"
    try:
        with open(path) as fh:
            if is_yaml:
                try:
                    import yaml
                except ImportError:
                    raise ConfigError(f"config file {path!r} is YAML, which needs PyYAML (pip install pyyaml); "
                                      "or write it as JSON") from None
                try:
                    d = yaml.safe_load(fh)
                except yaml.YAMLError as e:
                    raise ConfigError(f"config file {path!r} is not valid YAML ({e})") from None
            else:
                d = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path!r} is not valid {kind} ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path!r} must hold a {kind} {'mapping' if is_yaml else 'object'} of "
                          f"config keys, got {type(d).__name__}")
    written_for = d.pop("target", None)
    if written_for is not None and written_for != target_name:
        raise ConfigError(f"config file {path!r} was written for target {written_for!r}, not {target_name!r}; "
                          "remove its 'target' key to use it anyway")
    coerce_keys(d)   # unknown keys and unreadable values fail here, naming the file's key
    return d
