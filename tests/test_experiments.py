"""experiments/: the shared harness, the SGDS suites (cases built from the targets' own settings,
budgets sized by the library) and the merging of their outputs; every script answers --help."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffsampler.errors import ConfigError
from diffsampler.training import TrainConfig, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import harness  # noqa: E402

SCRIPTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py")
                 if p.stem not in ("__init__", "harness", "report_screenshot"))


@pytest.fixture
def out_root(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "OUT_ROOT", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_says_what_it_measures(name, capsys):
    module = importlib.import_module(f"experiments.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"experiments/{name}.py" in text and len(module.__doc__.split("\n")[0]) > 30


def test_gpu_check_script_answers_help():
    res = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), "--help"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and "CUDA tests" in res.stdout and "experiments/chunk_speed.py" in res.stdout


def test_harness_writers(out_root):
    d = harness.out_dir("x", "runs")
    assert d == str(out_root / "x" / "runs") and os.path.isdir(d)
    harness.write_json(os.path.join(d, "a.json"), {"v": 1})
    harness.write_text(os.path.join(d, "a.md"), harness.md_table(["a", "b"], [[1, harness.fmt(None)]]))
    assert json.loads((out_root / "x" / "runs" / "a.json").read_text()) == {"v": 1}
    assert (out_root / "x" / "runs" / "a.md").read_text() == "| a | b |\n| --- | --- |\n| 1 | n/a |\n"
    assert sorted(os.listdir(d)) == ["a.json", "a.md"]          # no temporary file left behind
    assert harness.tag({"width": 512, "seed": 1}) == "_seed1_width512"
    long = harness.tag({f"key{i}": "v" * 20 for i in range(10)})
    assert len(long) == 111 and long != harness.tag({f"key{i}": "w" * 20 for i in range(10)})
    assert harness.preset("lj13_sgds_paper")["max_energy_calls"] == 370000


def test_run_case_reuses_a_finished_run_and_restarts_one_killed_before_its_checkpoint(out_root):
    keys = dict(recipe="tb", width=16, depth=1, time_features=8, batch_size=16, train_steps=4, eval_steps=8,
                eval_samples=100, iterations=6, checkpoint_every=100, log_every=2, threads=1)
    out = os.path.join(harness.out_dir("case", "runs"), "gmm25_tb")
    os.makedirs(out)
    (Path(out) / "metrics.jsonl").write_text('{"iteration": 1}\n')    # a run killed before its first checkpoint
    first = harness.run_case("gmm25", keys, out)
    assert first["iterations"] == 6 and "wall_seconds" in first and first["run_dir"] == out
    assert {"iteration": 1} not in harness.read_metrics(out)           # the stale row is gone
    again = harness.run_case("gmm25", keys, out)                       # finished: reused, not retrained
    assert "wall_seconds" not in again and again["elbo"] == first["elbo"]


def test_sgds_overrides_are_typed_alone_and_checked_against_each_full_config():
    """Keys given for several recipes at once (experiments/sgds.py --set) are typed one by one, and
    cross-key rules are checked against each recipe's full config, not against the defaults."""
    from diffsampler.training.budget import calls_per_iteration, search_calls_per_round
    from diffsampler.training.config import coerce_keys
    from experiments import sgds
    with pytest.raises(ConfigError, match="'objectve'.*objective"):
        coerce_keys({"objectve": "tb"})
    with pytest.raises(ConfigError, match="'lr'"):
        coerce_keys({"lr": "abc"})
    # needs a searcher, which the defaults lack and the SGDS recipe has: typing alone must accept it
    typed = coerce_keys(parse_overrides(["offpolicy_data=search", "time_warp=2", "iterations=3e3"]))
    assert typed == {"offpolicy_data": "search", "time_warp": 2.0, "iterations": 3000}
    with pytest.raises(ConfigError, match="'offpolicy_data'"):
        TrainConfig.from_dict(typed)
    cfg = TrainConfig.from_dict(sgds.case_keys("manywell128", "sgds", 10e6, typed))
    # the target's learner and searcher (its default recipe's), and --set iterations wins over the budget
    assert cfg.offpolicy_data == "search" and cfg.searcher == "ais" and cfg.search_chains == 4000
    assert cfg.drift == "langevin" and cfg.width == 512 and cfg.iterations == 3000
    with pytest.raises(ConfigError, match="'offpolicy_data'"):   # the TB baseline has no searcher
        TrainConfig.from_dict(sgds.case_keys("manywell128", "tb", 10e6, typed))
    with pytest.raises(SystemExit) as exit_info:   # a recipe the suite lacks is refused, not skipped silently
        sgds.main(["--suite", "mw32", "--only", "sgds_typo"])
    assert exit_info.value.code == 2
    # a recipe's own measured settings win; a baseline gets the learner of the target's default recipe
    own = TrainConfig.from_dict(sgds.case_keys("gmm40", "sgds", 12e6))
    assert (own.width, own.reinit_keep, own.search_init_std, own.max_energy_calls) == (256, 0.5, 20.0, 12_000_000)
    tb = TrainConfig.from_dict(sgds.case_keys("gmm40", "tb", 12e6))
    assert (tb.drift, tb.width, tb.searcher, tb.time_warp) == ("mlp", 256, "none", 2.0)
    # the library sizes the learner's share of the budget, for an overridden number of rounds too
    two = TrainConfig.from_dict(sgds.case_keys("manywell128", "sgds", 10e6))
    one = TrainConfig.from_dict(sgds.case_keys("manywell128", "sgds", 10e6, {"rounds": 1}))
    search = search_calls_per_round(two)
    assert search == 4000 * (1 + 50 * 10)
    assert two.iterations == int((10e6 - 2 * search) / calls_per_iteration(two))
    assert one.iterations == int((10e6 - search) / calls_per_iteration(one))
    assert two.eval_every == max(500, two.iterations // 8)
    # a budget the searches alone use up is refused with the numbers, not run with a token learner
    with pytest.raises(ConfigError, match="the search alone needs 4,008,000 calls"):
        TrainConfig.from_dict(sgds.case_keys("manywell128", "sgds", 4e6))
    with pytest.raises(SystemExit) as exit_info:
        sgds.main(["--suite", "mw128", "--only", "sgds", "--budget", "4e6"])
    assert exit_info.value.code == 2


def test_gap_vs_calls_merges_files_with_labels_and_seed_statistics(out_root):
    """experiments/gap_vs_calls.py: rows of several sgds.py JSON files on one figure; a LABEL= prefix
    renames a file's rows ({recipe} kept), and the summary gives the mean and sample sd per recipe."""
    from experiments import gap_vs_calls

    def row(recipe, gap, seed):
        return {"target": "manywell128", "recipe": recipe, "budget": 1e7, "elbo": 600.0, "eubo": 600.0 + gap,
                "eubo_minus_elbo": gap, "mode_coverage": 1.0, "train_seconds": 1.0, "config": {"seed": seed},
                "energy_calls": {"search": 4, "train": 6},
                "curve": [{"calls": 5, "elbo": 590.0, "eubo": 600.0 + 2 * gap}, {"calls": 10, "elbo": 600.0,
                                                                                 "eubo": 600.0 + gap}]}
    a, b = out_root / "a.json", out_root / "b.json"
    a.write_text(json.dumps([row("sgds", 68.0, 0), row("tb", 100.0, 0)]))
    b.write_text(json.dumps([row("sgds", 70.0, 1)]))
    out = out_root / "gap_vs_calls"
    assert gap_vs_calls.main([str(a), f"{{recipe}} (other)={b}", "--name", "m"]) == 0
    rows = json.loads((out / "m.json").read_text())
    assert [r.get("label") for r in rows] == [None, None, "sgds (other)"]
    text = (out / "m.md").read_text()
    assert "| manywell128 | sgds | 1 | 10 | 600.00 | 668.00 | 68.00 |" in text
    assert "| manywell128 | sgds (other) | 1 |" in text
    assert gap_vs_calls.main([str(a), f"sgds={b}", "--name", "m", "--only", "sgds"]) == 0
    assert "| sgds | 2 | 10 | 600.00 (0.00) | 669.00 (1.41) | 69.00 (1.41) |" in (out / "m.md").read_text()
    assert (out / "m.png").stat().st_size > 0
    (out_root / "bad.json").write_text("{}")
    for bad in (out_root / "bad.json", out_root / "missing.json"):   # not a result file: named, exit 2
        with pytest.raises(SystemExit) as exit_info:
            gap_vs_calls.main([str(bad), "--name", "m"])
        assert exit_info.value.code == 2
