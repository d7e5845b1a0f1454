"""A run in stages (`training.stages`): one command trains a chain of runs, each started from the one
before; the chain's energy calls add up exactly; a chain killed inside a stage resumes to the numbers
of an uninterrupted one; a bad stage is refused up front, naming the stage."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffsampler.errors import ConfigError
from diffsampler.training import read_config_file

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
PRESET = {"width": 16, "depth": 1, "time_features": 8, "batch_size": 32, "eval_samples": 200, "eval_steps": 10,
          "checkpoint_every": 1, "log_every": 1, "threads": 1, "dtype": "float64",
          "stages": [{"name": "tb", "recipe": "tb", "train_steps": 5, "iterations": 6},
                     {"name": "kl", "recipe": "pis", "train_steps": 8, "iterations": 5, "lr": 1e-4}]}


def cli(*args, fault=None):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    env.pop("DIFFSAMPLER_FAULT", None)
    if fault:
        env["DIFFSAMPLER_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "diffsampler", "train", "gmm25", *args, "-q"], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    d = tmp_path_factory.mktemp("stages")
    path = d / "preset.json"
    path.write_text(json.dumps(PRESET))
    whole = d / "whole"
    r = cli("--config", str(path), "--out", str(whole))
    assert r.returncode == 0, r.stderr
    return d, path, whole, r.stdout


def test_each_stage_starts_from_the_last_and_the_calls_add_up(preset):
    _, _, whole, stdout = preset
    first, second = (json.load(open(whole / s / "report.json")) for s in ("01-tb", "02-kl"))
    cfg = json.load(open(whole / "02-kl" / "config.json"))
    assert cfg["init_from"] == str(whole / "01-tb") and cfg["objective"] == "kl" and cfg["train_steps"] == 8
    assert json.load(open(whole / "01-tb" / "config.json"))["objective"] == "tb"
    assert first["iterations"] == 6 and second["iterations"] == 5 and first["lineage"] is None
    own = [r["energy_calls"]["search"] + r["energy_calls"]["train"] for r in (first, second)]
    assert min(own) > 0
    assert second["lineage"]["energy_calls_total"] == sum(own)
    assert second["lineage"]["runs"] == [str(whole / "01-tb")]
    table = json.load(open(whole / "stages.json"))["stages"]
    assert [r["stage"] for r in table] == ["tb", "kl"]
    assert [r["energy_calls_total"] for r in table] == [own[0], sum(own)]
    assert "calls (chain)" in stdout and f"{sum(own):,}" in stdout and "with its ancestors" in stdout


def test_eval_sample_and_report_take_the_staged_directory(preset, tmp_path):
    """eval and sample on the chain's directory act on its last stage; report shows every stage."""
    _, _, whole, _ = preset
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}

    def ds(*args):
        r = subprocess.run([sys.executable, "-m", "diffsampler", *args], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout
    rep = json.loads(ds("eval", str(whole), "-n", "100", "--steps", "8", "--json"))
    assert rep["config"]["objective"] == "kl" and rep["lineage"]["runs"] == [str(whole / "01-tb")]
    assert (whole / "02-kl" / "eval" / "report.json").exists()
    ds("sample", str(whole), "-n", "30", "-o", str(tmp_path / "s.npz"))
    assert np.load(tmp_path / "s.npz")["x"].shape == (30, 2)
    ds("report", str(whole), "-o", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert "01-tb" in html and "02-kl" in html


def test_a_chain_killed_inside_a_stage_resumes_to_the_same_numbers(preset):
    d, path, whole, _ = preset
    out = d / "killed"
    r = cli("--config", str(path), "--out", str(out), fault="iteration:8:KILL")   # stage 2, iteration 2
    assert r.returncode == -9
    assert (out / "01-tb" / "report.json").exists() and not (out / "02-kl" / "report.json").exists()
    r = cli("--config", str(path), "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    for s in ("01-tb", "02-kl"):
        got, want = (torch.load(x / s / "checkpoint.pt", weights_only=True)["sampler"] for x in (out, whole))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        rg, rw = (json.load(open(x / s / "report.json")) for x in (out, whole))
        assert rg["energy_calls"] == rw["energy_calls"] and rg["eubo_minus_elbo"] == rw["eubo_minus_elbo"]
    # without --resume a finished chain's directory is not overwritten
    r = cli("--config", str(path), "--out", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr


def test_command_line_keys_act_on_every_stage(preset):
    d, path, _, _ = preset
    out = d / "cli"
    r = cli("--config", str(path), "--out", str(out), "iterations=2", "seed=5")
    assert r.returncode == 0, r.stderr
    for s in ("01-tb", "02-kl"):
        c = json.load(open(out / s / "config.json"))
        assert c["iterations"] == 2 and c["seed"] == 5
    # init_from on the command line: the chain continues that run (its first stage starts there)
    r = cli("--config", str(path), "--out", str(d / "continued"), "iterations=2", f"init_from={out / '02-kl'}")
    assert r.returncode == 0, r.stderr
    froms = [json.load(open(d / "continued" / s / "config.json"))["init_from"] for s in ("01-tb", "02-kl")]
    assert froms == [str(out / "02-kl"), str(d / "continued" / "01-tb")]
    rep = json.load(open(d / "continued" / "02-kl" / "report.json"))
    assert rep["lineage"]["runs"] == [str(out / "01-tb"), str(out / "02-kl"), str(d / "continued" / "01-tb")]


@pytest.mark.parametrize("stages,msg", [
    ([], "non-empty list"),
    ({"name": "a"}, "non-empty list"),
    ([{"name": "a", "widht": 3}], "stage 1 (a): unknown config key 'widht'"),
    ([{"name": "a"}, {"name": "a"}], "names must be unique"),
    ([{"name": "a/b"}], "without slashes"),
    ([3], "stage 1 must be an object"),
])
def test_bad_stages_are_refused_naming_the_stage(tmp_path, stages, msg):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"width": 16, "stages": stages}))
    with pytest.raises(ConfigError) as e:
        read_config_file(str(path), "gmm25")
    assert msg in str(e.value)
    r = cli("--config", str(path), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and msg in r.stderr and not (tmp_path / "r").exists()
