"""A run directory written by an earlier release (tests/data/run_v0: config.json, checkpoint.pt,
metrics.jsonl, report.json of a 12-iteration SGDS run on gmm25, written at commit ad43156) still
loads, evaluates, samples and resumes."""
import os
import shutil

import numpy as np
import torch

import diffsampler as ds
from diffsampler.cli import main
from diffsampler.training import load_run

OLD = os.path.join(os.path.dirname(__file__), "data", "run_v0")


def test_an_old_run_directory_evaluates_and_samples(tmp_path):
    run = load_run(OLD)
    assert run.config.recipe == "sgds" and run.report["iterations"] == 12
    x, log_w = run.sampler.sample(50, steps=8)
    assert x.shape == (50, 2) and torch.isfinite(log_w).all()
    out = tmp_path / "s.npz"
    assert main(["sample", OLD, "-n", "40", "--steps", "8", "-o", str(out)]) == 0
    assert np.load(out)["x"].shape == (40, 2)
    rep = run.evaluate(steps=8, n=64, save=False)
    assert np.isfinite(rep["elbo"]) and rep["target"] == "gmm25"


def test_an_old_run_directory_resumes(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(OLD, d)
    run = ds.train("gmm25", out=str(d), resume=True, progress=False, iterations=16)
    assert run.report["iterations"] == 16
    assert run.report["energy_calls"]["search"] > 0      # the old run's search calls are carried over
