"""Kill a run at the four fault points (a search block, a checkpoint write, a metrics append, the final
evaluation) with SIGKILL, and at three with SIGTERM, resuming after each: the finished run equals an
uninterrupted one bit for bit (experiments/fault_injection.py in its short form)."""
import importlib.util
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("fault_injection", os.path.join(ROOT, "experiments", "fault_injection.py"))
fi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fi)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    cfg = os.path.join(work, "config.json")
    fi.harness.write_json(cfg, fi.SMALL)
    r = fi.launch(cfg, os.path.join(work, "reference"), False, None)
    assert r.returncode == 0, r.stderr[-800:]
    return work, cfg, fi.fingerprint(os.path.join(work, "reference"))


@pytest.mark.parametrize("faults", [
    ["search_block:1:KILL", "checkpoint_write:2:KILL", "metrics_append:3:KILL", "evaluation:1:KILL"],
    ["search_block:2:TERM", "metrics_append:2:TERM", "evaluation:1:TERM"],
])
def test_a_run_killed_and_resumed_ends_exactly_as_an_uninterrupted_one(reference, faults):
    work, cfg, ref = reference
    out = os.path.join(work, faults[0].split(":")[-1])
    records, identical = fi.lineage(cfg, out, faults, ref)
    assert [r["reached"] for r in records] == [True] * len(faults), records
    assert {r["point"] for r in records} == {f.split(":")[0] for f in faults}
    term = faults[0].endswith("TERM")
    assert all(r["returncode"] == (143 if term else -9) for r in records), records
    if term:   # SIGTERM finishes the step and writes a checkpoint: nothing is lost, and it says how to resume
        assert all(r["calls_lost"] == 0 and "--resume" in r["message"] for r in records)
    assert identical
    shutil.rmtree(out, ignore_errors=True)
