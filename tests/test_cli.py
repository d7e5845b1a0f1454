"""The command line: interfaces users' scripts rely on, and clear errors on bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def cli(*args, ok=True):
    r = subprocess.run([sys.executable, "-m", "diffsampler", *args], capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_targets_json():
    rows = json.loads(cli("targets", "--json").stdout)
    by = {r["name"]: r for r in rows}
    assert by["manywell32"]["dim"] == 32 and abs(by["manywell32"]["log_Z"] - 164.6957) < 1e-3
    assert by["gmm40"]["has_samples"] is True


def test_energy_command(tmp_path):
    np.save(tmp_path / "x.npy", np.stack([np.zeros(32), np.ones(32)]).astype(np.float32))
    cli("energy", "manywell32", str(tmp_path / "x.npy"), "-o", str(tmp_path / "e.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), [0.0, -80.0], atol=1e-6)


@pytest.mark.parametrize("array,msg", [
    (np.zeros((3, 31)), "shape"),
    (np.array([[np.nan] * 32]), "NaN"),
])
def test_energy_bad_input(tmp_path, array, msg):
    np.save(tmp_path / "x.npy", array)
    r = cli("energy", "manywell32", str(tmp_path / "x.npy"), "-o", str(tmp_path / "e.npy"), ok=False)
    assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr


def test_unknown_target_and_bad_config(tmp_path):
    r = cli("train", "manywel32", "--out", str(tmp_path / "a"), ok=False)
    assert r.returncode == 2 and "unknown target 'manywel32'" in r.stderr and "manywell32" in r.stderr
    r = cli("train", "gmm25", "batchsize=3", "--out", str(tmp_path / "b"), ok=False)
    assert r.returncode == 2 and "'batchsize'" in r.stderr and "batch_size" in r.stderr
    r = cli("train", "gmm25", "lr=-1", "--out", str(tmp_path / "c"), ok=False)
    assert r.returncode == 2 and "'lr'" in r.stderr
    assert not any((tmp_path / d).exists() for d in "abc")


def test_train_eval_sample_roundtrip(tmp_path):
    run = str(tmp_path / "run")
    small = ["recipe=tb", "width=16", "depth=1", "time_features=8", "batch_size=32", "train_steps=5", "eval_steps=10",
             "eval_samples=300", "iterations=30", "threads=1"]
    out = cli("train", "gmm25", *small, "max_seconds=500", "--max-seconds", "600", "--out", run, "-q").stdout
    assert "ELBO" in out and "EUBO" in out
    assert json.load(open(tmp_path / "run" / "config.json"))["max_seconds"] == 600   # the flag wins
    rep = json.loads(cli("eval", run, "--steps", "12", "-n", "200", "--json").stdout)
    assert rep["eval_steps"] == 12 and rep["nfe"] == 12 and rep["target"] == "gmm25"
    cli("sample", run, "-n", "50", "--steps", "8", "-o", str(tmp_path / "s.npz"))
    z = np.load(tmp_path / "s.npz")
    assert z["x"].shape == (50, 2) and z["log_w"].shape == (50,) and np.isfinite(z["log_w"]).all()
    cli("sample", run, "-n", "40", "--steps", "6", "--integrator", "randomized_midpoint", "-o", str(tmp_path / "m.npz"))
    z = np.load(tmp_path / "m.npz")
    assert z["x"].shape == (40, 2) and int(z["nfe"]) == 12 and str(z["integrator"]) == "randomized_midpoint"
    rep = json.loads(cli("eval", run, "--steps", "6", "-n", "100", "--integrator", "exponential", "--json").stdout)
    assert rep["integrator"] == "exponential" and rep["nfe"] == 6 and rep["eubo"] is None
    r = cli("train", "gmm25", *small, "--out", run, ok=False)  # refuses to overwrite a run
    assert r.returncode == 2 and "--resume" in r.stderr
    # --config: a run's own config.json repeats it; key=value overrides apply on top of the file's keys
    cli("train", "gmm25", "--config", f"{run}/config.json", "iterations=10", "--out", str(tmp_path / "again"), "-q")
    first, again = (json.load(open(f"{d}/config.json")) for d in (run, tmp_path / "again"))
    assert again.pop("iterations") == 10 and first.pop("iterations") == 30 and again == first


def test_config_file_errors_name_the_problem(tmp_path):
    (tmp_path / "ok.json").write_text(json.dumps({"width": 16, "target": "gmm25"}))
    (tmp_path / "typo.json").write_text(json.dumps({"widht": 16}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{width: 16")
    cases = [("ok.json", "manywell32", "written for target 'gmm25'"), ("typo.json", "gmm25", "'widht'"),
             ("list.json", "gmm25", "JSON object"), ("broken.json", "gmm25", "not valid JSON"),
             ("missing.json", "gmm25", "does not exist")]
    for name, target, msg in cases:
        r = cli("train", target, "--config", str(tmp_path / name), "--out", str(tmp_path / "r"), ok=False)
        assert r.returncode == 2 and msg in r.stderr, (name, r.stderr)
        assert not (tmp_path / "r").exists()


def test_yaml_config_file_reads_the_same_keys_as_json(tmp_path):
    pytest.importorskip("yaml")
    from diffsampler.errors import ConfigError
    from diffsampler.training import read_config_file

    keys = {"recipe": "sgds_jeffreys", "width": 16, "sigma": 1.0, "init_from": None, "ema_decay": 0.999}
    (tmp_path / "c.json").write_text(json.dumps(keys))
    (tmp_path / "c.yaml").write_text("# a preset\nrecipe: sgds_jeffreys\nwidth: 16\nsigma: 1.0\n"
                                     "init_from: null\nema_decay: 0.999\n")
    assert read_config_file(str(tmp_path / "c.yaml"), "dw4") == read_config_file(str(tmp_path / "c.json"), "dw4") == keys
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("width: [16\n")
    (tmp_path / "typo.yaml").write_text("widht: 16\n")
    for name, msg in (("list.yml", "YAML mapping"), ("broken.yaml", "not valid YAML"), ("typo.yaml", "'widht'")):
        with pytest.raises(ConfigError, match=msg):
            read_config_file(str(tmp_path / name), "dw4")


@pytest.mark.parametrize("preset", sorted(p.name for p in (Path(__file__).parents[1] / "experiments" / "configs").glob("*.json")))
def test_presets_are_valid_configs_for_their_target(preset):
    from diffsampler.targets import get
    from diffsampler.training import default_config, read_config_file

    target = preset.split("_")[0]
    keys = read_config_file(str(Path(__file__).parents[1] / "experiments" / "configs" / preset), target)
    stages = keys.pop("stages", None)
    for stage_keys in [keys] if stages is None else [{**keys, **s.keys} for s in stages]:
        cfg = default_config(get(target), stage_keys.get("recipe")).replace(**stage_keys)
        # every key of the preset survives the recipe bundle and the target's defaults, with its type
        assert {k: getattr(cfg, k) for k in stage_keys} == stage_keys and cfg.max_energy_calls is not None


def test_config_reference_is_current():
    """docs/CONFIG.md is what docs/gen_config_doc.py renders from today's definitions (a new key or
    component shows up in the reference, or this fails: run `python docs/gen_config_doc.py`)."""
    import importlib.util
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("gen_config_doc", root / "docs" / "gen_config_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (root / "docs" / "CONFIG.md").read_text() == gen.render(), "docs/CONFIG.md is stale"
