"""Every bad input ends in one clear message: a non-zero exit status (2 for bad input), words that name
the problem, no traceback, and nothing left behind in the working directory."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import diffsampler as ds
from diffsampler.cli import main
from diffsampler.errors import CheckpointError, ConfigError, ShapeError, TargetSpecError

TINY = ["recipe=tb", "iterations=3", "batch_size=16", "width=8", "depth=1", "time_features=4", "eval_samples=20",
        "eval_steps=4", "train_steps=4", "threads=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "gmm25", *TINY, "--out", str(d), "-q"]) == 0
    return d


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "energy.py").write_text("import torch\n\ndef fn(x):\n    return 0.5 * (x ** 2).sum(-1)\n")
    np.save(tmp_path / "bad_shape.npy", np.zeros((3, 5)))
    np.save(tmp_path / "nan.npy", np.array([[0.0] * 32, [np.nan] * 32]))
    (tmp_path / "not_npy.txt").write_text("hello")
    (tmp_path / "bad.json").write_text("{ not json")
    (tmp_path / "for_gmm40.json").write_text(json.dumps({"target": "gmm40", "width": 8}))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "something").write_text("x")
    return tmp_path


CLI_CASES = [   # (arguments, words of the message); RUN is the trained run directory
    (["sample", "RUN", "-n", "0", "-o", "s.npz"], "must be >= 1"),
    (["sample", "RUN", "-n", "-5", "-o", "s.npz"], "must be >= 1"),
    (["sample", "RUN", "-n", "10", "--steps", "0", "-o", "s.npz"], "must be >= 1"),
    (["sample", "RUN", "-n", "ten", "-o", "s.npz"], "integer"),
    (["sample", "RUN", "-n", "10", "--integrator", "bogus", "-o", "s.npz"], "invalid choice"),
    (["sample", "RUN", "-n", "10", "--format", "pdb", "-o", "s.npz"], "molecular target"),
    (["eval", "RUN", "--steps", "0"], "must be >= 1"),
    (["eval", "nonexistent_run"], "not a run directory"),
    (["train", "gmm25", *TINY, "--out", "a_file"], "is a file"),
    (["train", "gmm25", *TINY, "--out", "nonempty"], "already exists and is not empty"),
    (["train", "gmm25", *TINY, "--resume"], "--resume needs --out"),
    (["train", "gmm25", *TINY, "--out", "missing", "--resume"], "does not exist"),
    (["train", "nonexistent_target", *TINY, "--out", "r"], "unknown target"),
    (["train", "manywell33", *TINY, "--out", "r"], "even dimension"),
    (["train", "gmm25", "width=abc", "--out", "r"], "cannot read 'abc' as int"),
    (["train", "gmm25", "widht=3", "--out", "r"], "did you mean width"),
    (["train", "gmm25", "batch_size=-3", "--out", "r"], "'batch_size'"),
    (["train", "gmm25", "recipe=nonexistent", "--out", "r"], "'recipe'"),
    (["train", "gmm25", "objective_fwd=ml", "--out", "r"], "objective_fwd"),
    (["train", "gmm25", "device=tpu", "--out", "r"], "'device'"),
    (["train", "gmm25", "logger=tensorbord", "--out", "r"], "did you mean tensorboard"),
    (["train", "gmm25", "recipe=sgds", "max_energy_calls=1000", "--out", "r"], "the search alone needs"),
    (["train", "gmm25", "rounds=2", "iterations=12", "round_iterations=5,5", "--out", "r"], "must sum to"),
    (["train", "gmm25", "--config", "missing.json", "--out", "r"], "does not exist"),
    (["train", "gmm25", "--config", "bad.json", "--out", "r"], "not valid JSON"),
    (["train", "gmm25", "--config", "for_gmm40.json", "--out", "r"], "written for target 'gmm40'"),
    (["train", "energy.py:missing_fn", "dim=2", "--out", "r"], "missing_fn"),
    (["train", "energy.py:fn", "--out", "r"], "dim"),
    (["train", "nowhere.py:fn", "dim=2", "--out", "r"], "nowhere.py"),
    (["energy", "manywell32", "bad_shape.npy", "-o", "e.npy"], "expected an array of shape"),
    (["energy", "manywell32", "nan.npy", "-o", "e.npy"], "NaN"),
    (["energy", "manywell32", "not_npy.txt", "-o", "e.npy"], "cannot read"),
]


@pytest.mark.parametrize("args,words", CLI_CASES, ids=[" ".join(a[:3]) + f" [{w}]" for a, w in CLI_CASES])
def test_bad_command_lines_fail_with_a_clear_message(cwd, run_dir, capsys, args, words):
    before = sorted(os.listdir(cwd))
    args = [str(run_dir) if a == "RUN" else a for a in args]
    try:
        code = main(args)
    except SystemExit as e:          # argparse's own errors (usage line + message), exit status 2
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err, err
    assert "Traceback" not in err
    assert sorted(os.listdir(cwd)) == before      # nothing half-written left behind


def test_a_bad_command_line_prints_no_traceback_in_a_fresh_process(cwd):
    r = subprocess.run([sys.executable, "-m", "diffsampler", "train", "gmm25", "width=abc"], capture_output=True,
                       text=True, cwd=cwd)
    assert r.returncode == 2 and "cannot read 'abc'" in r.stderr and "Traceback" not in r.stderr


def test_a_checkpoint_that_needs_pickled_code_is_refused(tmp_path, run_dir):
    import shutil
    d = tmp_path / "evil"
    shutil.copytree(run_dir, d)
    state = torch.load(d / "checkpoint.pt", weights_only=True)
    state["payload"] = pickle.loads(pickle.dumps(np.random.default_rng(0)))   # any object beyond plain data
    torch.save(state, d / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="needs pickled code"):
        ds.training.load_run(str(d))


API_CASES = [
    (lambda: ds.targets.get("manywell33"), ds.errors.UnknownTargetError, "even dimension"),
    (lambda: ds.targets.from_energy(lambda x: x.sum(-1), dim=0), ValueError, "dim must be >= 1"),
    (lambda: ds.targets.from_energy(lambda x: x.sum(-1), dim=2, samples=np.zeros((5, 3))), ShapeError, "(N, 2)"),
    (lambda: ds.targets.from_energy(lambda x: x.sum(-1), dim=2, sigma=-1.0), ValueError, "sigma must be > 0"),
    (lambda: ds.targets.get("gmm25").energy(torch.zeros(3, 5)), ShapeError, "(B, 2)"),
    (lambda: ds.train("gmm25", batch_size=0, progress=False), ConfigError, "'batch_size'"),
    (lambda: ds.training.load_run("nonexistent_run"), CheckpointError, "not a run directory"),
    (lambda: ds.training.TrainConfig.from_dict({"pilot": "sometimes"}), ConfigError, "'pilot'"),
    (lambda: ds.targets.spec.resolve_target("nowhere.py:fn", {"dim": "2"}), TargetSpecError, "nowhere.py"),
]


@pytest.mark.parametrize("call,error,words", API_CASES, ids=[w for _, _, w in API_CASES])
def test_bad_python_calls_raise_errors_that_name_the_problem(call, error, words):
    with pytest.raises(error, match=None) as info:
        call()
    assert words in str(info.value)


def test_sampling_zero_points_is_an_error_not_an_empty_concatenation(run_dir):
    run = ds.training.load_run(str(run_dir))
    with pytest.raises(ValueError, match="n >= 1"):
        run.sampler.sample(0, steps=4)
