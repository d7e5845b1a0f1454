"""Trainer: config validation, exact resume, NaN guard, run directories, reports."""
import json
import math
import os

import numpy as np
import pytest
import torch

import diffsampler as ds
from diffsampler.errors import CheckpointError, ConfigError, TrainingError
from diffsampler.training import REPORT_KEYS, TrainConfig, load_run, parse_overrides
from diffsampler.training.build import build_sampler

SMALL = dict(recipe="tb", width=16, depth=1, time_features=8, batch_size=32, train_steps=5, eval_steps=10,
             eval_samples=200, checkpoint_every=5, log_every=5, threads=1)


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="'objectve'.*objective"):
        TrainConfig.from_dict({"objectve": "tb"})
    with pytest.raises(ConfigError, match="'batch_size'"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ConfigError, match="'train_grid'"):
        TrainConfig.from_dict({"train_grid": "fancy"})
    with pytest.raises(ConfigError, match="'lr'"):
        TrainConfig.from_dict(parse_overrides(["lr=abc"]))
    with pytest.raises(ConfigError, match="'iterations'"):
        TrainConfig.from_dict(parse_overrides(["iterations=1.5"]))
    cfg = TrainConfig.from_dict(parse_overrides(["max_energy_calls=2e6", "sigma=none", "objective=subtb"]))
    assert cfg.max_energy_calls == 2_000_000 and cfg.sigma is None and cfg.objective == "subtb"


def _params(sampler):
    return torch.cat([p.detach().flatten() for p in sampler.parameters()])


@pytest.mark.parametrize("behaviour,reuse,ema,lr_final", [("forward", 0, 0.0, 1.0), ("mixed", 0, 0.0, 1.0),
                                                           ("mixed", 2, 0.0, 1.0), ("forward", 0, 0.9, 0.1)])
def test_resume_after_kill_gives_identical_parameters(tmp_path, behaviour, reuse, ema, lr_final):
    cfg = dict(SMALL, iterations=20, behaviour=behaviour, exploration=0.3, trajectory_reuse=reuse, ema_decay=ema,
               lr_final=lr_final)
    full = ds.train("gmm25", out=str(tmp_path / "full"), progress=False, **cfg)

    class Killed(Exception):
        pass

    def kill(trainer, it):
        if it == 13:  # the last checkpoint is at 10: iterations 11-13 are lost, as in a real kill
            raise Killed

    with pytest.raises(Killed):
        ds.train("gmm25", out=str(tmp_path / "cut"), progress=False, callbacks=[kill], **cfg)
    assert os.path.exists(tmp_path / "cut" / "checkpoint.pt")
    resumed = ds.train("gmm25", out=str(tmp_path / "cut"), resume=True, progress=False, **cfg)
    assert torch.equal(_params(full.sampler), _params(resumed.sampler))
    assert resumed.report["energy_calls"]["train"] == full.report["energy_calls"]["train"]
    its = [json.loads(line)["iteration"] for line in open(tmp_path / "cut" / "metrics.jsonl")]
    assert its == sorted(set(its))  # no duplicated rows after the resume


def test_run_directory_contents_and_report(tmp_path):
    run = ds.train("gmm25", out=str(tmp_path / "r"), progress=False, **dict(SMALL, iterations=10))
    for f in ("config.json", "metrics.jsonl", "checkpoint.pt", "report.json", "samples.png",
              "marginals.png", "training_curves.png"):
        assert (tmp_path / "r" / f).exists(), f
    rep = json.load(open(tmp_path / "r" / "report.json"))
    assert set(REPORT_KEYS) <= set(rep)
    assert rep["iterations"] == 10 and rep["log_Z_true"] == 0.0 and rep["target"] == "gmm25"
    assert rep["log_Z_learned"] == pytest.approx(run.sampler.log_Z.item())   # TB trains log Z
    assert rep["energy_calls"]["total"] == sum(rep["energy_calls"][k] for k in ("search", "train", "eval"))
    run2 = load_run(str(tmp_path / "r"))
    assert torch.equal(_params(run.sampler), _params(run2.sampler))
    x, lw = run2.sampler.sample(7, steps=4)
    assert x.shape == (7, 2) and lw.shape == (7,)


def test_budgets_stop_the_run():
    run = ds.train("gmm25", progress=False, **dict(SMALL, iterations=10_000, max_energy_calls=1000))
    assert run.report["stop_reason"] == "max_energy_calls"
    # forward TB with the Langevin drift costs 1 + (N-1) B + B calls per iteration, and the log Z
    # warm start one more on-policy rollout of the same cost
    per_it = 1 + 4 * 32 + 32
    train, its = run.report["energy_calls"]["train"], run.report["iterations"]
    assert train == (its + 1) * per_it
    # the budget is never overrun: the run stops before an iteration that could cost more than is
    # left, judged by the dearest of the last iterations (the first, with the warm start: 2 per_it)
    assert train <= 1000 and train + 2 * per_it > 1000, (train, its)
    assert its == 4


def test_a_call_budget_given_alone_sizes_the_iterations_and_places_the_rounds():
    """Where the defaults carry an iteration count but no call budget (a kind's defaults, or a recipe
    a target has no settings for), max_energy_calls given alone sizes the iterations to it, so that
    a two-round recipe reaches its second round inside the budget; with iterations also given, or
    with a target's own measured (budget, iterations) pair, nothing is resized."""
    from diffsampler.training.budget import size_iterations
    from diffsampler.training.run import _config

    target = ds.targets.get("manywell64")
    cfg = _config(target, None, None, {"recipe": "sgds", "max_energy_calls": 4_000_000})
    assert cfg.rounds == 2 and cfg.iterations == size_iterations(cfg) and 1000 < cfg.iterations < 20000
    assert _config(target, None, None, {"recipe": "sgds"}).iterations == 20000
    assert _config(target, None, None, {"recipe": "sgds", "max_energy_calls": 4e6, "iterations": 900}).iterations == 900
    # too small a budget is refused up front, with the numbers
    with pytest.raises(ConfigError, match="the search alone needs 602,000 calls"):
        _config(target, None, None, {"recipe": "sgds", "max_energy_calls": 400_000})
    with pytest.raises(ConfigError, match="learner iterations"):
        _config(target, None, None, {"recipe": "sgds", "max_energy_calls": 610_000})


def test_a_call_budget_picks_the_settings_measured_at_the_largest_budget_it_reaches():
    """Targets measured at several budgets carry one setting per budget: the default is the first,
    a budget gets the one measured at the largest budget it reaches, and the 20M setting of
    Manywell-64 is the config of the command its results row was measured with."""
    from diffsampler.targets.base import settings_for_budget
    from diffsampler.targets.manywell import _MW64_JEFFREYS
    from diffsampler.training.budget import size_iterations
    from diffsampler.training.run import _config

    tiers = [{"max_energy_calls": 4, "w": "small"}, {"max_energy_calls": 20, "w": "large"}]
    assert settings_for_budget(tiers)["w"] == "small"
    assert [settings_for_budget(tiers, b)["w"] for b in (1, 4, 19, 20, 1e9)] == ["small", "small", "small",
                                                                                "large", "large"]
    assert settings_for_budget({"w": "one"}, 1e9) == {"w": "one"} and settings_for_budget([], 5) == {}

    mw64 = ds.targets.get("manywell64")
    default, at10m, at20m = (_config(mw64, None, None, dict(b)) for b in
                             ({}, {"max_energy_calls": "10e6"}, {"max_energy_calls": "20e6"}))
    assert (default.width, default.train_steps, default.max_energy_calls) == (512, 5, 4_000_000)
    assert (at10m.width, at10m.train_steps, at10m.max_energy_calls) == (512, 5, 10_000_000)
    measured = TrainConfig.from_dict({"recipe": "sgds_jeffreys", **_MW64_JEFFREYS, "width": 256, "train_steps": 10,
                                      "time_warp": 2, "lr": 1e-3, "rounds": 2, "search_chains": 4000,
                                      "max_energy_calls": 20e6})
    assert at20m == measured and at20m.iterations == size_iterations(at20m)   # sized to the budget, as measured
    # Manywell-32 at 20M: the measured iteration count is kept at its own budget, resized at another
    mw32 = ds.targets.get("manywell32")
    assert _config(mw32, None, None, {"max_energy_calls": 20e6}).iterations == 53333
    at30m = _config(mw32, None, None, {"max_energy_calls": 30e6})
    assert at30m.rounds == 2 and at30m.iterations > 53333
    # a recipe given with the budget picks among that recipe's settings only
    assert _config(mw32, None, None, {"recipe": "sgds", "max_energy_calls": 20e6}).width == 64


def test_trajectory_reuse_costs_energy_calls_only_on_fresh_iterations():
    """trajectory_reuse = R: of every R + 1 iterations one draws fresh trajectories (and pays their
    energy calls); the other R replay stored ones (states, scores, rewards kept) for free."""
    per_it = 1 + 4 * 32 + 32                            # Langevin drift, forward TB (test above)
    for reuse in (0, 3):
        run = ds.train("gmm25", progress=False, **dict(SMALL, iterations=12, trajectory_reuse=reuse))
        fresh = -(-12 // (reuse + 1))
        assert run.report["energy_calls"]["train"] == (fresh + 1) * per_it   # + the log Z warm start


@pytest.mark.parametrize("drift", ["mlp", "langevin"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_replay_recomputes_log_pf_of_stored_trajectories(drift, direction):
    """A replay under the same drift reproduces the rollout's log_pf exactly (and log_pb, log R);
    under a changed drift it equals log pi_fwd of the new drift along the same states."""
    from diffsampler.sde import backward_rollout, forward_rollout, make_grid, replay
    torch.manual_seed(0)
    target = ds.targets.get("manywell4")
    s = ds.DiffusionSampler(target, drift=drift, width=16, time_features=8).double()
    for p in s.parameters():
        torch.nn.init.normal_(p, std=0.3)
    g = make_grid("random", 50, 6, dtype=torch.float64)
    if direction == "forward":
        tr = forward_rollout(s, g)
    else:
        tr = backward_rollout(s, target.sample(50).double(), g)
    calls = target.counter.total
    rep = replay(s, tr)
    assert target.counter.total == calls                 # no energy call
    torch.testing.assert_close(rep.log_pf, tr.log_pf, rtol=1e-12, atol=1e-10)
    assert rep.log_pb is tr.log_pb and rep.log_r is tr.log_r
    with torch.no_grad():
        for p in s.drift.parameters():
            p.add_(0.1)
    rep2 = replay(s, tr)
    mu = s.drift(tr.x[:, :-1].reshape(-1, 4), g[:, :-1].reshape(-1), None if tr.score is None else
                 tr.score.reshape(-1, 4)).view(50, 6, 4)
    dt = g.diff(dim=1)
    expected = -0.5 * ((tr.x[:, 1:] - tr.x[:, :-1] - mu * dt[..., None]) ** 2).sum(-1) / dt \
        - 2 * torch.log(2 * math.pi * dt)
    torch.testing.assert_close(rep2.log_pf, expected, rtol=1e-10, atol=1e-8)


def test_nan_energy_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    state = {"calls": 0}

    def energy(x):
        state["calls"] += 1
        e = 0.5 * (x ** 2).sum(-1)
        return e * float("nan") if state["calls"] > 120 else e

    for policy, message in [("error", r"iteration \d+: non-finite energy"),
                            ("reject", r"iteration \d+: the energy is non-finite at all 32 end points")]:
        state["calls"] = 0
        t = ds.targets.from_energy(energy, dim=2, name="breaks_later", sigma=1.0)
        with pytest.raises(TrainingError, match=message):
            ds.train(t, out=str(tmp_path / policy), progress=False,
                     **dict(SMALL, iterations=100, nonfinite_energy=policy))
        st = torch.load(tmp_path / policy / "checkpoint.pt", weights_only=False)
        assert st["iteration"] % 5 == 0 and st["iteration"] > 0
        assert all(torch.isfinite(v).all() for v in st["sampler"].values())


def test_failure_before_first_checkpoint_leaves_no_run_dir(tmp_path):
    t = ds.targets.from_energy(lambda x: x.sum(-1) * float("nan"), dim=2, name="always_nan", sigma=1.0)
    with pytest.raises(TrainingError):
        ds.train(t, out=str(tmp_path / "gone"), progress=False, **dict(SMALL, iterations=10))
    assert not (tmp_path / "gone").exists()
    with pytest.raises(ConfigError):
        ds.train("gmm25", out=str(tmp_path / "bad"), progress=False, batch_size=-3)
    assert not (tmp_path / "bad").exists()


def test_corrupt_and_mismatched_checkpoints(tmp_path):
    ds.train("gmm25", out=str(tmp_path / "r"), progress=False, **dict(SMALL, iterations=5))
    ck = tmp_path / "r" / "checkpoint.pt"
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(str(tmp_path / "r"))
    ck.write_bytes(data)
    with pytest.raises(CheckpointError, match="width"):
        ds.train("gmm25", out=str(tmp_path / "r"), resume=True, progress=False, **dict(SMALL, width=32))
    cfg = json.load(open(tmp_path / "r" / "config.json"))
    cfg["target"] = "gmm40"
    json.dump(cfg, open(tmp_path / "r" / "config.json", "w"))
    with pytest.raises(CheckpointError, match="gmm25"):
        load_run(str(tmp_path / "r"))


def test_default_recipe_is_sgds_and_runs_its_rounds(tmp_path):
    run = ds.train("gmm25", out=str(tmp_path / "sgds"), progress=False,
                   **dict(SMALL, recipe=None, iterations=20, search_chains=64, search_steps=5, search_inner=2,
                          buffer_size=500))
    cfg = run.config
    assert cfg.recipe == "sgds" and cfg.searcher == "mala" and cfg.rounds == 2 and cfg.behaviour == "mixed"
    rows = [json.loads(line) for line in open(tmp_path / "sgds" / "metrics.jsonl")]
    searches = [r["search"] for r in rows if "search" in r]
    assert [s["round"] for s in searches] == [1, 2]
    # MALA: 64 chains evaluated at initialisation + (100 burn-in + 5) steps x 64 chains, per round
    assert all(s["energy_calls"] == 64 * (1 + cfg.search_burnin + 5) for s in searches)
    assert run.report["energy_calls"]["search"] == 2 * 64 * (1 + cfg.search_burnin + 5)


def test_user_energy_trains_through_the_api(tmp_path):
    u = ds.targets.from_energy(lambda x: 0.5 * (x ** 2).sum(-1), dim=3, log_Z=1.5 * np.log(2 * np.pi),
                               name="gauss3", samples=np.random.randn(1000, 3))
    run = ds.train(u, progress=False, **dict(SMALL, iterations=200, batch_size=64, lr=3e-3))
    assert set(REPORT_KEYS) <= set(run.report)
    assert abs(run.report["elbo"] - u.log_Z) < 0.5
    assert run.report["eubo"] >= run.report["elbo"] - 0.05


@pytest.mark.parametrize("mode", ["mean", "logmeanexp"])
def test_log_Z_warm_start_uses_the_first_batch(mode):
    """log Z <- mean log w ('mean', an ELBO estimate) or log mean w ('logmeanexp', the IS estimate)
    of one on-policy batch; the IS choice is >= the mean (Jensen) and ignores very low outliers."""
    from diffsampler.sde import forward_rollout, make_grid
    from diffsampler.training import Trainer
    cfg = TrainConfig.from_dict(dict(SMALL, log_Z_warm_start=mode))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    state = torch.get_rng_state()
    tr.learner.warm_start(tr.buffer)
    torch.set_rng_state(state)
    grid = make_grid(cfg.train_grid, cfg.batch_size, cfg.train_steps)
    with torch.no_grad():
        lw = forward_rollout(tr.sampler, grid).log_w
    want = lw.mean() if mode == "mean" else torch.logsumexp(lw, 0) - math.log(lw.numel())
    assert torch.allclose(tr.sampler.log_Z.detach(), want, atol=1e-5)
    assert not tr.learner.warm_start_log_Z
    if mode == "logmeanexp":
        assert tr.sampler.log_Z.item() >= lw.mean().item()
    with pytest.raises(ConfigError, match="'log_Z_warm_start'"):
        TrainConfig.from_dict({"log_Z_warm_start": "median"})


def test_log_Z_warm_start_from_the_buffer_is_the_log_mean_reward_of_its_samples():
    """'buffer' (SGDS's start): log Z <- log (1/N) sum_i R(x_i) over the replay buffer's stored
    rewards, at the first TB iteration after the ML warm-up, with no energy call of its own; an
    empty buffer is an error naming the key."""
    from diffsampler.training import Trainer
    from diffsampler.errors import TrainingError
    cfg = TrainConfig.from_dict(dict(SMALL, behaviour="mixed", offpolicy_data="target_samples", ml_warmup=2,
                                     iterations=6, log_Z_warm_start="buffer"))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    tr.behaviour.fill_from_target(tr.sampler)
    lr = tr.buffer.log_r.double()
    want = torch.logsumexp(lr, 0) - math.log(lr.numel())
    before = tr.target.counter.total
    tr.learner.warm_start(tr.buffer)
    assert tr.target.counter.total == before and not tr.learner.warm_start_log_Z
    assert abs(tr.sampler.log_Z.item() - want.item()) < 1e-4
    # log mean R over (near-)target samples is log Z + log E_p[p(x)]: below log Z for a spread target
    assert tr.sampler.log_Z.item() < ds.targets.get("gmm25").log_Z + 1e-6
    empty = Trainer(ds.targets.get("gmm25"), TrainConfig.from_dict(dict(SMALL, log_Z_warm_start="buffer")),
                    progress=False)
    with pytest.raises(TrainingError, match="log_Z_warm_start='buffer'"):
        empty.step()


def test_log_Z_warm_start_waits_for_the_end_of_the_ml_warmup():
    """The ML warm-up does not train log Z, so the warm start must use the warmed-up sampler:
    it runs once, at the first TB iteration (iteration == ml_warmup), not at iteration 0."""
    from diffsampler.training import Trainer
    cfg = TrainConfig.from_dict(dict(SMALL, behaviour="mixed", offpolicy_data="target_samples", ml_warmup=3,
                                     iterations=6))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    calls, original = [], tr.learner.warm_start
    tr.learner.warm_start = lambda buffer: (calls.append(tr.iteration), original(buffer))
    log_Z0 = tr.sampler.log_Z.item()
    for _ in range(3):
        tr.step()
        tr.iteration += 1
    assert calls == [] and tr.learner.warm_start_log_Z and tr.sampler.log_Z.item() == log_Z0
    tr.step()
    assert calls == [3] and not tr.learner.warm_start_log_Z and tr.sampler.log_Z.item() != log_Z0


def test_optimal_drift_runs_as_an_untrained_sampler():
    """drift=optimal (the target's exact Föllmer drift, no parameters) with iterations=0 reports the
    discretisation floor of the evaluation grid: on GMM-40 at 100 uniform steps EUBO - ELBO is about
    0.5, with the default time warp 2 about 0.2 (benchmarks/grid_floor.py: 0.51 and 0.21), far below
    any learned sampler's; no training energy calls."""
    gaps = {}
    for warp in (1.0, 2.0):
        rep = ds.train("gmm40", progress=False, drift="optimal", iterations=0, eval_samples=1000, threads=1,
                       time_warp=warp).report
        assert rep["energy_calls"]["train"] == 0 and rep["mode_coverage"] == 1.0
        gaps[warp] = rep["eubo"] - rep["elbo"]
        assert rep["delta_elbo"] < 0.5
    assert 0.3 < gaps[1.0] < 0.75 and 0.1 < gaps[2.0] < 0.35


def test_objective_fwd_serves_on_policy_batches_only():
    """objective_fwd=kl with behaviour=mixed: on-policy batches are pathwise rollouts scored by the KL
    objective, buffer batches by `objective` (TB)."""
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer
    cfg = TrainConfig.from_dict(dict(SMALL, iterations=6, behaviour="mixed", offpolicy_data="replay",
                                     objective_fwd="kl", drift="mlp"))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    seen = []

    class Spy:
        def __init__(self, obj):
            self.obj = obj

        def __getattr__(self, name):           # the objective's declarations
            return getattr(self.obj, name)

        def __call__(self, traj, sampler):
            seen.append((self.name, traj.x.requires_grad))
            return self.obj(traj, sampler)

    tr.learner.objective, tr.learner.objective_fwd = Spy(tr.learner.objective), Spy(tr.learner.objective_fwd)
    for _ in range(6):
        tr.step()
        tr.iteration += 1
    # on-policy on even iterations (iteration 0 fills the buffer), buffer batches on odd ones
    assert [n for n, _ in seen] == ["kl", "tb", "kl", "tb", "kl", "tb"]
    assert all(g for n, g in seen if n == "kl") and not any(g for n, g in seen if n == "tb")
    with pytest.raises(ConfigError, match="objective_fwd"):
        TrainConfig.from_dict({"objective_fwd": "ml"})


def test_offpolicy_every_and_weight_shape_the_mixed_schedule():
    """offpolicy_every=k: one buffer batch in every k fresh ones; offpolicy_weight scales the loss of
    buffer batches only (the returned loss is the weighted one)."""
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer
    cfg = TrainConfig.from_dict(dict(SMALL, iterations=6, behaviour="mixed", offpolicy_data="replay",
                                     offpolicy_every=3, offpolicy_weight=0.25, drift="mlp"))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    kinds, raw = [], []
    draw, obj = tr.behaviour.trajectories, tr.learner.objective

    def trajectories(sampler, learner, fresh, on_policy, explore):
        kinds.append("fwd" if on_policy else "bwd")
        return draw(sampler, learner, fresh, on_policy, explore)

    class Spy:
        def __getattr__(self, name):           # the objective's declarations
            return getattr(obj, name)

        def __call__(self, traj, sampler):
            v = obj(traj, sampler)
            raw.append(v.item())
            return v

    tr.behaviour.trajectories, tr.learner.objective = trajectories, Spy()
    tr.learner.objective_fwd = tr.learner.objective
    losses = []
    for _ in range(6):
        losses.append(tr.step())
        tr.iteration += 1
    assert kinds == ["fwd", "fwd", "bwd", "fwd", "fwd", "bwd"]
    for k, l, r in zip(kinds, losses, raw):
        assert l == pytest.approx(0.25 * r if k == "bwd" else r, rel=1e-5)
    with pytest.raises(ConfigError, match="offpolicy_every"):
        TrainConfig.from_dict({"offpolicy_every": 1})


def test_ema_reports_the_moving_average_of_the_weights(tmp_path):
    """ema_decay = beta: the reported sampler holds theta_bar_n = b_n theta_bar_{n-1} + (1 - b_n) theta_n,
    b_n = min(beta, (1 + n) / (10 + n)), started at the initial weights and recomputed here by hand
    from the raw weights after every step; eval/sample (load_run) use the same average."""
    beta, seen = 0.8, []

    def record(trainer, it):
        seen.append(_params(trainer.sampler).double())

    cfg = dict(SMALL, iterations=12, ema_decay=beta, log_Z_init=0.0)
    torch.manual_seed(0)   # the trainer's seed: the same initial weights
    init = _params(build_sampler(ds.targets.get("gmm25"), TrainConfig.from_dict(cfg))).double()
    run = ds.train("gmm25", out=str(tmp_path / "r"), progress=False, callbacks=[record], **cfg)
    avg = init
    for n, theta in enumerate(seen):
        b = min(beta, (1 + n) / (10 + n))
        avg = b * avg + (1 - b) * theta
    assert len(seen) == 12
    assert torch.allclose(_params(run.sampler).double(), avg, atol=1e-6)
    assert not torch.allclose(_params(run.sampler).double(), seen[-1], atol=1e-4)   # not the raw weights
    assert torch.equal(_params(load_run(str(tmp_path / "r")).sampler), _params(run.sampler))
    raw = json.load(open(tmp_path / "r" / "report.json"))["raw_weights"]
    assert set(raw) >= {"elbo", "eubo", "eubo_minus_elbo"} and math.isfinite(raw["elbo"])
    from diffsampler.training import summary_table
    assert f"{raw['eubo_minus_elbo']:.3f}" in summary_table(run.report).split("last iterate)")[1].splitlines()[0]
    with pytest.raises(ConfigError, match="'ema_decay'"):
        TrainConfig.from_dict({"ema_decay": 1.0})


def test_reinit_keep_blends_old_and_fresh_weights():
    """reinit_keep = k: at a round's re-initialisation theta <- k theta_old + (1 - k) theta_fresh
    (k = 0: the fresh network, SGDS); the learned log Z is kept either way."""
    from diffsampler.training.trainer import Trainer

    def round_two(keep):
        cfg = TrainConfig.from_dict(dict(SMALL, recipe="custom", rounds=2, iterations=4, reinit_keep=keep))
        tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
        with torch.no_grad():
            tr.sampler.log_Z.fill_(1.25)
        old = {k: p.detach().clone() for k, p in tr.sampler.named_parameters()}
        tr.iteration, tr.schedule.searched_rounds = 2, 1   # the first iteration of round 2
        tr.start_round()
        return old, dict(tr.sampler.named_parameters())

    old, fresh = round_two(0.0)
    _, blended = round_two(0.3)
    changed = 0
    for k, p in blended.items():
        if k == "log_Z":
            assert p.item() == 1.25 and fresh[k].item() == 1.25
            continue
        assert torch.allclose(p, 0.3 * old[k] + 0.7 * fresh[k], atol=1e-6), k
        changed += int(not torch.equal(fresh[k], old[k]))
    assert changed > 0   # the fresh network differs from the old one
    with pytest.raises(ConfigError, match="'reinit_keep'"):
        TrainConfig.from_dict({"reinit_keep": 1.0})


def test_lr_final_decays_each_round_on_a_cosine():
    """lr_final = f: the step at iteration i of a round of L iterations uses every configured rate times
    f + (1 - f) (1 + cos(pi i / L)) / 2; the schedule restarts with the round (and the re-initialisation)."""
    f, seen = 0.1, []

    def record(trainer, it):
        seen.append([g["lr"] for g in trainer.learner.optimizer.param_groups])

    cfg = dict(SMALL, recipe="custom", rounds=2, iterations=10, lr=2e-3, lr_log_Z=0.05, lr_final=f)
    ds.train("gmm25", progress=False, callbacks=[record], **cfg)
    assert len(seen) == 10
    for i, (lr, lr_log_Z) in enumerate(seen):
        factor = f + (1 - f) * 0.5 * (1 + math.cos(math.pi * (i % 5) / 5))
        assert lr == pytest.approx(2e-3 * factor, rel=1e-12)
        assert lr_log_Z == pytest.approx(0.05 * factor, rel=1e-12)
    assert seen[4][0] < 0.2 * 2e-3 and seen[5][0] == pytest.approx(2e-3)   # decayed, then restarted
    with pytest.raises(ConfigError, match="'lr_final'"):
        TrainConfig.from_dict({"lr_final": 0.0})


def test_jeffreys_recipe_keeps_the_light_mode_that_reverse_kl_drops():
    """recipe=sgds_jeffreys minimises both path-space KLs (on-policy pathwise KL + maximum likelihood
    on the searcher's samples), so it is mass-covering; plain PIS (reverse KL only) is mode-seeking.
    Target: two unit Gaussians at (+-4, 0) with weights 0.8 / 0.2 (log Z = log 2 pi). After the same
    300 iterations PIS puts > 97% of its samples in the heavy mode; the Jeffreys recipe is within 0.1
    of the true 0.8."""
    def energy(x):
        heavy = -0.5 * ((x - torch.tensor([4.0, 0.0], dtype=x.dtype)) ** 2).sum(-1) + math.log(0.8)
        light = -0.5 * ((x + torch.tensor([4.0, 0.0], dtype=x.dtype)) ** 2).sum(-1) + math.log(0.2)
        return -torch.logaddexp(heavy, light)

    u = ds.targets.from_energy(energy, dim=2, log_Z=math.log(2 * math.pi), name="two_modes", sigma=1.0)
    cfg = TrainConfig.from_dict({"recipe": "sgds_jeffreys"})
    assert (cfg.objective, cfg.objective_fwd, cfg.offpolicy_data, cfg.rnd_alpha, cfg.reinit) == \
        ("ml", "kl", "search", 0.0, False)
    heavy = {}
    for recipe in ("pis", "sgds_jeffreys"):
        keys = dict(SMALL, recipe=recipe, width=32, depth=2, iterations=300, batch_size=64, lr=3e-3,
                    eval_steps=20, eval_samples=500, checkpoint_every=1000, log_every=100, seed=1)
        if recipe != "pis":
            keys.update(searcher="ais", search_chains=256, search_steps=10, search_inner=2, buffer_size=2000)
        run = ds.train(u, progress=False, **keys)
        x, _ = run.sampler.sample(4000, steps=20)
        heavy[recipe] = (x[:, 0] > 0).double().mean().item()
        assert run.report["log_Z_learned"] is None   # neither KL nor ML trains log Z: no stale number
    assert heavy["pis"] > 0.97, heavy
    assert abs(heavy["sgds_jeffreys"] - 0.8) < 0.1, heavy


def test_init_from_starts_from_another_runs_averaged_weights_and_buffer(tmp_path):
    """init_from=RUN: the new run's first weights are the source's reported (EMA-averaged) ones, its
    buffer holds the source's buffer, and its optimiser, iteration and energy calls start at zero; a
    different network, target or a missing path is an error naming the problem."""
    src = tmp_path / "src"
    base = dict(SMALL, recipe="custom", objective="tb", behaviour="mixed", offpolicy_data="replay",
                buffer_size=400, ema_decay=0.9, time_warp=2.0)
    first = ds.train("gmm25", out=str(src), progress=False, **dict(base, iterations=12))
    ref = _params(first.sampler)   # the averaged weights the source reports
    state = torch.load(src / "checkpoint.pt", weights_only=False)
    assert not torch.equal(ref, torch.cat([v.flatten() for k, v in state["sampler"].items()
                                           if k in dict(first.sampler.named_parameters())]))

    seen = []
    tr = ds.training.trainer.Trainer(ds.targets.get("gmm25"), TrainConfig.from_dict(
        dict(base, iterations=4, seed=3, init_from=str(src))), progress=False)
    assert torch.equal(_params(tr.sampler), ref)
    assert torch.equal(tr.buffer.x, state["buffer"]["x"]) and torch.equal(tr.buffer.log_r, state["buffer"]["log_r"])
    assert tr.iteration == 0 and tr.target.counter.total == 0 and not tr.learner.warm_start_log_Z
    assert torch.equal(tr.sampler.log_Z.detach(), first.sampler.log_Z.detach())
    # through train(): the run continues from those weights (checkpoint file given directly)
    run = ds.train("gmm25", out=str(tmp_path / "ft"), progress=False,
                   callbacks=[lambda t, it: seen.append(it)],
                   **dict(base, iterations=4, init_from=str(src / "checkpoint.pt")))
    assert run.report["iterations"] == 4 and seen == [1, 2, 3, 4]
    assert run.report["energy_calls"]["train"] < first.report["energy_calls"]["train"]
    assert json.load(open(tmp_path / "ft" / "config.json"))["init_from"] == str(src / "checkpoint.pt")
    # a resumed fine-tune takes everything from its own checkpoint: the source is no longer needed
    (src / "checkpoint.pt").rename(tmp_path / "moved.pt")
    assert ds.train("gmm25", out=str(tmp_path / "ft"), resume=True, progress=False,
                    iterations=6).report["iterations"] == 6
    (tmp_path / "moved.pt").rename(src / "checkpoint.pt")

    with pytest.raises(CheckpointError, match="width"):
        ds.train("gmm25", progress=False, **dict(base, width=32, iterations=2, init_from=str(src)))
    with pytest.raises(CheckpointError, match="gmm25"):
        ds.train("gmm40", progress=False, **dict(base, iterations=2, init_from=str(src)))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ds.train("gmm25", progress=False, **dict(base, iterations=2, init_from=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="'init_from'"):
        TrainConfig.from_dict({"init_from": " "})


def test_init_from_a_shallower_egnn_deepens_it_without_changing_the_function(tmp_path):
    """init_from a depth-2 EGNN run into depth 4: the inserted layers start as the identity, so the
    new drift equals the source's at any (x, t, score), and training then moves them; a deeper
    source, or another depth change for a non-EGNN drift, is an error naming depth."""
    base = dict(SMALL, recipe="pis", drift="egnn_langevin", width=16, time_features=8, batch_size=16,
                train_steps=4, ema_decay=0.0)
    src = tmp_path / "src"
    first = ds.train("dw4", out=str(src), progress=False, **dict(base, depth=2, iterations=3))
    target = ds.targets.get("dw4")
    cfg = ds.training.default_config(target, "pis").replace(
        **{**{k: v for k, v in base.items() if k != "recipe"}, "depth": 4, "iterations": 2, "init_from": str(src)})
    tr = ds.training.trainer.Trainer(target, cfg, progress=False)
    g = torch.Generator().manual_seed(0)
    x, t, score = torch.randn(64, 8, generator=g) * 2, torch.rand(64, generator=g), torch.randn(64, 8, generator=g)
    deep, shallow = tr.sampler.drift, first.sampler.drift
    assert len(deep.layers) == 4 and len(shallow.layers) == 2
    with torch.no_grad():
        assert torch.allclose(deep(x, t, score), shallow(x, t, score), atol=1e-6)
        assert shallow(x, t, score).abs().max() > 1e-3          # the source is not the zero drift
    inserted = torch.cat([p.flatten() for p in deep.layers[1].parameters()])
    tr.step()
    assert not torch.equal(torch.cat([p.flatten() for p in deep.layers[1].parameters()]), inserted)
    with pytest.raises(CheckpointError, match="depth"):
        ds.train("dw4", progress=False, **dict(base, depth=1, iterations=1, init_from=str(src)))
    mlp_src = tmp_path / "mlp"
    ds.train("gmm25", out=str(mlp_src), progress=False, **dict(SMALL, iterations=2))
    with pytest.raises(CheckpointError, match="depth"):
        ds.train("gmm25", progress=False, **dict(SMALL, depth=2, iterations=1, init_from=str(mlp_src)))


def test_in_run_evaluations_are_logged_every_eval_every_iterations(tmp_path):
    """eval_every=k: rows at iterations k, 2k, ... with ELBO <= log Z (IS) and a finite EUBO for the
    averaged weights and, with an EMA, the raw weights ('raw_' keys); particle targets with reference
    samples add the energy W1/W2 and equivariant W2 of the same samples; their energy calls count
    as 'eval', never against the training budget."""
    dw4 = ds.targets.get("dw4")
    if not dw4.has_samples:   # a clone without ../shared/data: any configurations serve as the reference
        square = torch.tensor([0.0, 0, 4, 0, 0, 4, 4, 4])
        dw4.use_reference_samples(square + 0.3 * torch.randn(500, 8, dtype=torch.float64), source="test")
    for name, extra in (("gmm25", {}), ("dw4", dict(drift="egnn", width=16, depth=1))):
        out = tmp_path / name
        run = ds.train(dw4 if name == "dw4" else name, out=str(out), progress=False,
                       **dict(SMALL, iterations=4, eval_every=2, eval_samples=64, ema_decay=0.9, **extra))
        rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
        evals = [r for r in rows if "eubo" in r]
        assert [r["iteration"] for r in evals] == [2, 4]
        particle = {"energy_w1", "energy_w2", "equivariant_w2"}
        for r in evals:
            assert r["elbo"] <= r["log_Z_is"] + 1e-9 and r["raw_elbo"] <= r["raw_log_Z_is"] + 1e-9
            assert math.isfinite(r["eubo"]) and math.isfinite(r["raw_eubo"])
            if name == "dw4":
                assert all(r[k] >= 0 and r[f"raw_{k}"] >= 0 for k in particle)
            else:
                assert not particle & set(r)
            assert r["energy_calls"]["eval"] > 0
        assert run.report["energy_calls"]["eval"] >= evals[-1]["energy_calls"]["eval"]
        assert evals[-1]["energy_calls"]["train"] == run.report["energy_calls"]["train"]


def test_adjoint_matching_trains_a_sampler_with_exactly_counted_calls():
    """objective=adjoint (reciprocal adjoint matching) learns N(1, 2^2 I) in 3-D from the pinned
    Brownian of sigma 1 (the drift must move and widen): the untrained sampler's KL of 1.33 nat falls
    below 0.3 nat (ELBO on 50 steps; TB and KL reach about 0.2 at the same cost). With a plain MLP drift
    (no score along the rollout or at the bridge states) each iteration costs B calls: log R and its
    gradient at the rollout's terminal states, in one call; the log Z warm start adds one B."""
    u = ds.targets.from_energy(lambda x: 0.125 * ((x - 1) ** 2).sum(-1), dim=3, log_Z=1.5 * np.log(8 * np.pi),
                               name="gauss3wide", sigma=1.0)
    it, B, N = 300, 64, 5
    run = ds.train(u, progress=False, **dict(SMALL, recipe="custom", objective="adjoint", drift="mlp", width=32,
                                             iterations=it, batch_size=B, train_steps=N, lr=3e-3,
                                             eval_samples=2000, eval_steps=50))
    assert abs(run.report["elbo"] - u.log_Z) < 0.3
    assert abs(run.report["log_Z_is"] - u.log_Z) < 0.15
    assert run.report["energy_calls"]["train"] == it * B + B
    with pytest.raises(ConfigError, match="'adjoint_weights'"):
        TrainConfig.from_dict({"adjoint_weights": "snis"})
    with pytest.raises(ConfigError, match="'adjoint_times'"):
        TrainConfig.from_dict({"adjoint_times": 0})


def test_adjoint_matching_replays_stored_terminal_states_without_energy_calls():
    """trajectory_reuse = R with objective=adjoint (Adjoint Sampling's reuse of each energy call for
    several updates): a replay regresses on a stored batch's terminal states, gradients and the
    log-weights of the policy that drew them, as drawn: no energy call and no drift pass over the path.
    The fresh iterations pay B each (plain drift), plus B for the log Z warm start."""
    from diffsampler.training.trainer import Trainer
    u = ds.targets.from_energy(lambda x: 0.125 * ((x - 1) ** 2).sum(-1), dim=3, log_Z=1.5 * np.log(8 * np.pi),
                               name="gauss3wide", sigma=1.0)
    B, R = 32, 3
    cfg = TrainConfig.from_dict(dict(SMALL, recipe="custom", objective="adjoint", drift="mlp", batch_size=B,
                                     adjoint_weights="importance", trajectory_reuse=R, iterations=9))
    tr = Trainer(u, cfg)
    tr.fit()
    assert u.counter.counts["train"] == (-(-9 // (R + 1)) + 1) * B
    stored = tr.behaviour.store[-1]
    assert stored.terminal_score is not None and stored.log_pf.shape == stored.log_pb.shape
    tr.behaviour.store = [stored]                        # a replay (not fresh): the stored batch itself
    replayed = tr.behaviour.trajectories(tr.sampler, tr.learner, fresh=False, on_policy=False, explore=0.0)
    assert replayed is stored and not tr.schedule.is_fresh(1, have_store=True)
    assert u.counter.counts["train"] == (-(-9 // (R + 1)) + 1) * B
    assert torch.allclose(stored.terminal_score, u.score(stored.terminal))


@pytest.mark.parametrize("target,keys", [
    ("gmm25", dict(objective="tb", behaviour="forward")),                       # on-policy TB, Langevin drift
    ("gmm25", dict(objective="subtb", behaviour="mixed", offpolicy_data="target_samples", offpolicy_every=2)),
    ("gmm25", dict(objective="vargrad", trajectory_reuse=1)),                   # a replayed batch
    ("dw4", dict(objective="tb", drift="egnn", width=16, depth=2, behaviour="mixed",
                 offpolicy_data="replay")),                                      # backward paths, EGNN
])
def test_grad_chunk_steps_gives_the_same_gradient_as_one_backward(target, keys):
    """grad_chunk_steps = k rolls out without a graph and back-propagates log_pf k steps at a time;
    the states are constants, so the parameter gradient (drift, log Z, flow) must equal the one of a
    single backward through all steps, iteration by iteration (float64, same random numbers)."""
    from diffsampler.training import Trainer
    t = ds.targets.get(target)
    if keys.get("offpolicy_data") == "target_samples" and not t.has_samples:
        pytest.skip("needs the target's reference samples")
    grads = {}
    for chunk in (0, 3):
        cfg = TrainConfig.from_dict(dict(SMALL, train_steps=8, iterations=4, dtype="float64", grad_chunk_steps=chunk,
                                         **keys))
        tr = Trainer(t, cfg, progress=False)
        grads[chunk] = []
        for _ in range(3):
            tr.step()
            grads[chunk].append([p.grad.clone() for p in tr.sampler.parameters() if p.grad is not None])
            tr.iteration += 1
        if chunk:   # as step() draws them, the batches keep no graph (the point: memory of k steps, not N)
            with torch.no_grad():
                assert not any(tr.behaviour.trajectories(tr.sampler, tr.learner, True, on, 0.0).log_pf.requires_grad
                               for on in (True, False) if on or len(tr.buffer))
    for g0, g3 in zip(grads[0], grads[3]):
        assert len(g0) == len(g3) > 0
        for a, b in zip(g0, g3):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError, match="grad_chunk_steps"):
        TrainConfig.from_dict(dict(SMALL, objective="kl", grad_chunk_steps=4))
    with pytest.raises(ConfigError, match="grad_chunk_steps"):
        TrainConfig.from_dict(dict(SMALL, grad_chunk_steps=-1))


def test_policy_log_pf_without_autograd_evaluates_the_drift_in_row_chunks(monkeypatch):
    """Without autograd (evaluation, EUBO), log_pf over B N states is computed in row chunks sized
    by the drift's activation size; the values equal the one-pass ones."""
    from diffsampler.sde import backward_rollout, trajectories
    t = ds.targets.get("dw4")
    s = build_sampler(t, TrainConfig.from_dict(dict(SMALL, drift="egnn", width=16, depth=2)))
    grid = s.make_grid("uniform", 6, 7)
    x = t.project(torch.randn(6, t.dim))
    whole = backward_rollout(s, x, grid)
    assert whole.log_pf.requires_grad
    calls = []
    drift_forward = s.drift.forward
    monkeypatch.setattr(s.drift, "forward", lambda *a, **k: (calls.append(a[0].shape[0]), drift_forward(*a, **k))[1])
    monkeypatch.setattr(trajectories, "NO_GRAD_ACTIVATION_BUDGET", 10 * s.drift.activation_elems_per_row)
    with torch.no_grad():
        chunked = trajectories.policy_log_pf(s, whole.x, whole.t, None)
    assert calls == [10, 10, 10, 10, 2]
    torch.testing.assert_close(chunked, whole.log_pf.detach(), rtol=1e-6, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without a GPU")
def test_a_cuda_run_loads_on_the_cpu_where_no_gpu_is_present(tmp_path):
    """A run directory whose config says device=cuda (trained on a GPU) loads on a CPU-only machine,
    with a warning, and gives the same weights; asking for CUDA explicitly is an error naming it."""
    run = ds.train("gmm25", out=str(tmp_path / "r"), progress=False, **dict(SMALL, iterations=3))
    path = tmp_path / "r" / "config.json"
    cfg = json.load(open(path))
    cfg["device"] = "cuda"
    json.dump(cfg, open(path, "w"))
    with pytest.warns(UserWarning, match="trained on cuda"):
        back = load_run(str(tmp_path / "r"))
    for p, q in zip(run.sampler.parameters(), back.sampler.parameters()):
        assert q.device.type == "cpu" and torch.equal(p.detach(), q.detach())
    with pytest.raises(ConfigError, match="'device'"):
        load_run(str(tmp_path / "r"), device="cuda")


def test_round_iterations_and_the_ml_warmups_own_learning_rate_follow_sgds():
    """round_iterations='3,7' (SGDS's --epochs 3 10): the second round (search, re-initialisation)
    starts at iteration 3, not 5; each round opens with ml_warmup=2 ML iterations at lr_ml (SGDS's
    mle_lr) with their own Adam, replaced by a fresh one at lr when the warm-up ends."""
    seen = []

    def record(trainer, it):   # after an iteration: the rounds searched, the drift's rate, the Adam step count
        g = trainer.learner.optimizer.param_groups[0]
        steps = [s["step"] for s in (trainer.learner.optimizer.state.get(p, {}) for p in g["params"]) if "step" in s]
        seen.append((trainer.schedule.searched_rounds, g["lr"], int(max(steps))))

    cfg = dict(SMALL, recipe="custom", behaviour="mixed", offpolicy_data="target_samples", rounds=2, iterations=10,
               round_iterations="3,7", ml_warmup=2, lr=2e-3, lr_ml=5e-4)
    ds.train("gmm25", progress=False, callbacks=[record], **cfg)
    assert [r for r, _, _ in seen] == [1] * 3 + [2] * 7   # the second round's work began at iteration 3
    assert [lr for _, lr, _ in seen] == [5e-4, 5e-4, 2e-3, 5e-4, 5e-4] + [2e-3] * 5
    # Adam's step count restarts at the end of each warm-up and at the round's re-initialisation
    assert [n for _, _, n in seen] == [1, 2, 1, 1, 2, 1, 2, 3, 4, 5]
    assert len(seen) == 10
    for bad, key in (({"round_iterations": "3,8"}, "round_iterations"), ({"round_iterations": "3"}, "round_iterations"),
                     ({"round_iterations": "3,x"}, "round_iterations"), ({"lr_ml": -1.0}, "lr_ml")):
        with pytest.raises(ConfigError, match=repr(key)):
            TrainConfig.from_dict(dict(cfg, **bad))


def test_a_compiled_drift_trains_like_the_eager_one():
    """compile=default (torch.compile of the drift, in place, dynamic shapes) changes how the drift
    is computed, not what: three EGNN iterations (rollout at batch 16, chunked backward on 16 x 2
    rows, ML batch) give the eager run's parameters in float64, and the checkpoint keeps its keys."""
    from diffsampler.training import Trainer
    torch._dynamo.reset()
    params, keys = {}, {}
    for mode in ("none", "default"):
        cfg = TrainConfig.from_dict(dict(SMALL, drift="egnn", width=8, depth=2, batch_size=16, train_steps=4,
                                         iterations=3, dtype="float64", grad_chunk_steps=2, behaviour="mixed",
                                         offpolicy_data="replay", compile=mode))
        tr = Trainer(ds.targets.get("dw4"), cfg, progress=False)
        for _ in range(3):
            tr.step()
            tr.iteration += 1
        params[mode] = [p.detach().clone() for p in tr.sampler.parameters()]
        keys[mode] = list(tr.sampler.state_dict())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1   # it did compile, not fall back
    assert keys["default"] == keys["none"]
    for a, b in zip(params["none"], params["default"]):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError, match="'compile'"):
        TrainConfig.from_dict({"compile": "max"})


def test_training_curves_plot_negative_maximum_likelihood_losses(tmp_path):
    """An ML warm-up's loss (a negative log-likelihood of continuous states) can be negative: the
    curve is drawn on a symmetric-log axis instead of warning that log scale has no positive data."""
    import warnings
    from diffsampler.evaluation.plots import plot_training_curves
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps({"iteration": i, "loss": -4e4 + i}) for i in range(5)) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_training_curves(str(path), str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_init_from_carries_the_rnd_novelty_networks_when_their_shapes_match(tmp_path):
    """SGDS's novelty (RND) networks come with init_from when both runs have them with the same
    shapes (a continued search still knows what was visited); with another width they start fresh."""
    from diffsampler.training.trainer import Trainer
    base = dict(SMALL, recipe="custom", objective="tb", behaviour="mixed", offpolicy_data="replay",
                rnd_alpha=1.0, rnd_width=16, time_warp=2.0)
    ds.train("gmm25", out=str(tmp_path / "src"), progress=False, **dict(base, iterations=6))
    saved = torch.load(tmp_path / "src" / "checkpoint.pt", weights_only=False)["rnd"]["net"]
    tr = Trainer(ds.targets.get("gmm25"), TrainConfig.from_dict(dict(base, iterations=2, seed=5,
                                                                      init_from=str(tmp_path / "src"))), progress=False)
    for k, v in tr.rounds.rnd.state_dict().items():
        assert torch.equal(v, saved[k]), k
    fresh = Trainer(ds.targets.get("gmm25"), TrainConfig.from_dict(dict(base, iterations=2, seed=5, rnd_width=8,
                                                                         init_from=str(tmp_path / "src"))), progress=False)
    assert not any(k in saved and v.shape == saved[k].shape and torch.equal(v, saved[k])
                   for k, v in fresh.rounds.rnd.state_dict().items() if v.numel() > 1)


def test_compile_without_a_cpu_compiler_is_an_error_naming_the_key_and_loads_uncompiled(tmp_path, monkeypatch):
    """compile=default on the CPU needs a C++ compiler: without one, training fails at once naming
    the key (not deep inside the first rollout), and a compiled run's directory still loads and
    evaluates, uncompiled, with a warning."""
    import shutil
    run = ds.train("gmm25", out=str(tmp_path / "r"), progress=False, **dict(SMALL, iterations=2))
    path = tmp_path / "r" / "config.json"
    cfg = json.load(open(path))
    cfg["compile"] = "default"
    json.dump(cfg, open(path, "w"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ConfigError, match="'compile'.*C\\+\\+ compiler"):
        build_sampler(ds.targets.get("gmm25"), TrainConfig.from_dict(dict(SMALL, compile="default")))
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler"):
        loaded = load_run(str(tmp_path / "r"))
    assert loaded.config.compile == "none"
    for a, b in zip(loaded.sampler.parameters(), run.sampler.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rnd_data", ["fresh", "on_policy"])
def test_the_novelty_is_fitted_on_what_rnd_data_names_and_not_in_the_last_round(rnd_data):
    """rnd_data=on_policy fits the RND predictor on the learner's own samples only (SGDS): a buffer
    batch leaves it unchanged; rnd_data=fresh fits it on every fresh batch. In the last round no
    later search uses the predictor, so it is not fitted there."""
    from diffsampler.training import Trainer
    cfg = TrainConfig.from_dict(dict(SMALL, recipe="sgds", drift="mlp", rnd_alpha=1.0, rnd_data=rnd_data,
                                     iterations=8, round_iterations="4,4", search_chains=16, search_steps=3,
                                     search_burnin=2, search_thin=1, buffer_size=200, ml_warmup=0, offpolicy_every=2))
    tr = Trainer(ds.targets.get("gmm25"), cfg, progress=False)
    assert cfg.rounds == 2
    tr.start_round()
    assert len(tr.buffer) > 0
    predictor = tr.rounds.rnd.predictor

    def step_changes_predictor() -> bool:
        before = [p.detach().clone() for p in predictor.parameters()]
        on_policy = not tr.schedule.wants_buffer_batch(tr.iteration)
        tr.step()
        tr.iteration += 1
        changed = any(not torch.equal(a, b) for a, b in zip(before, predictor.parameters()))
        return on_policy, changed
    round1 = [step_changes_predictor() for _ in range(4)]
    assert {on for on, _ in round1} == {True, False}       # both kinds of batch were drawn
    for on_policy, changed in round1:
        assert changed == (on_policy or rnd_data == "fresh")
    tr.start_round()   # round 2: the last, whose fits no search would use
    assert tr.schedule.round(tr.iteration) == 1
    assert not any(changed for _, changed in [step_changes_predictor() for _ in range(4)])


def test_a_local_search_never_overruns_the_budget():
    """TB+LS spends B (S + 1) calls on a local search every k iterations: the budget check counts the
    one the next iteration starts with, so search + train calls never exceed max_energy_calls."""
    keys = dict(SMALL, recipe="tb_ls", drift="mlp", iterations=10_000, local_search_every=5, local_search_steps=30,
                local_search_batch=16, max_energy_calls=1000)
    run = ds.train("gmm25", progress=False, **keys)
    calls = run.report["energy_calls"]
    assert run.report["stop_reason"] == "max_energy_calls"
    assert calls["search"] > 0 and calls["search"] % (16 * 31) == 0      # whole local searches only
    assert calls["search"] + calls["train"] <= 1000, calls


def test_a_new_run_counts_its_own_calls_on_a_used_target(tmp_path):
    """The same target object trained twice (a script's loop): the second run's report and budget
    count its own calls only, not the first run's."""
    target = ds.targets.get("gmm25")
    keys = dict(SMALL, drift="mlp", iterations=3)
    first = ds.train(target, progress=False, **keys).report["energy_calls"]
    second = ds.train(target, progress=False, **keys).report["energy_calls"]
    assert first == second and first["total"] > 0
