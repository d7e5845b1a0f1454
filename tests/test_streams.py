"""Metric streams: rows like the trainer's reach metrics.jsonl, TensorBoard event files (read back
with TensorBoard's own event reader) and an offline W&B run, against iterations and energy calls."""
import glob
import json
import os
import struct
import sys
import time

import pytest

from diffsampler.errors import ConfigError
from diffsampler.streams import (BY_CALLS, STREAM_NAMES, MetricStream, flatten, make_streams, parse_logger_option,
                                 scalar_sets)


def calls(search, train, eval_=0):
    return {"search": search, "train": train, "eval": eval_, "total": search + train + eval_}


# rows shaped as Trainer._log writes them: a search round, training rows, an in-run evaluation
ROWS = [
    {"iteration": 0, "search": {"round": 1, "acceptance": 0.9, "kernel": "mala", "stored": 50, "log_Z_hat": -1.2},
     "energy_calls": calls(10050, 0)},
    *[{"iteration": i, "loss": 10.0 / i, "log_Z": 0.1 * i, "energy_calls": calls(10050, 320 * i),
       "train_seconds": 0.05 * i} for i in range(1, 11)],
    {"iteration": 10, "elbo": -3.0, "eubo": 2.5, "log_Z_is": -0.5, "ess": 0.2, "w2": None, "mode_coverage": 0.5,
     "energy_calls": calls(10050, 3200, 4004)},
]


def test_parse_logger_option():
    assert parse_logger_option("jsonl") == ["jsonl"]
    assert parse_logger_option("tensorboard|wandb") == ["jsonl", "tensorboard", "wandb"]
    assert parse_logger_option(" TensorBoard , jsonl ") == ["jsonl", "tensorboard"]
    assert parse_logger_option("") == parse_logger_option(None) == ["jsonl"]
    assert parse_logger_option(["wandb", "wandb"]) == ["jsonl", "wandb"]
    assert set(STREAM_NAMES) == {"jsonl", "tensorboard", "wandb"}
    with pytest.raises(ConfigError, match="'logger'.*'tensorbord'.*did you mean tensorboard"):
        parse_logger_option("tensorbord")


def test_flatten_and_the_two_x_axes():
    assert flatten({"a": {"b": 1, "c": {"d": 2.5}}, "s": "text", "n": None, "f": True}) == {
        "a/b": 1.0, "a/c/d": 2.5, "f": 1.0}
    by_step, by_calls = scalar_sets(ROWS[0])
    assert by_step["search/log_Z_hat"] == -1.2 and "search/kernel" not in by_step and "iteration" not in by_step
    assert by_calls[BY_CALLS + "search/log_Z_hat"] == -1.2 and BY_CALLS + "energy_calls/total" not in by_calls
    assert scalar_sets({"iteration": 3, "loss": 1.0})[1] == {}     # no energy_calls: no calls axis


def test_jsonl_writes_what_the_trainer_wrote(tmp_path):
    s = make_streams(["jsonl"], str(tmp_path), {}, "run")
    for r in ROWS:
        s.log(r)
    s.finish(str(tmp_path))
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(json.dumps(r) + "\n" for r in ROWS)
    assert type(make_streams(["jsonl"], None, {}, "run")) is MetricStream     # in-memory run: nothing


def write_png(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, dpi=40)
    plt.close(fig)


def accumulator(path):
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_against_iterations_and_calls(tmp_path):
    pytest.importorskip("tensorboard")
    write_png(tmp_path / "samples.png")
    s = make_streams("tensorboard", str(tmp_path), {"lr": 0.001, "recipe": "sgds"}, "gmm25")
    for r in ROWS:
        s.log(r)
    s.finish(str(tmp_path))
    it = accumulator(tmp_path / "tensorboard" / "by_iteration")
    tags = set(it.Tags()["scalars"])
    assert {"loss", "log_Z", "train_seconds", "energy_calls/total", "energy_calls/search", "search/log_Z_hat",
            "search/acceptance", "elbo", "eubo", "ess"} <= tags
    assert "search/kernel" not in tags and "w2" not in tags         # strings and None are left out
    assert [(e.step, round(e.value, 6)) for e in it.Scalars("loss")] == [(i, round(10.0 / i, 6)) for i in range(1, 11)]
    assert it.Tags()["images"] == ["plots/samples"] and "config/text_summary" in it.Tags()["tensors"]
    by_calls = accumulator(tmp_path / "tensorboard" / "by_calls")
    assert {BY_CALLS + "loss", BY_CALLS + "elbo", BY_CALLS + "search/log_Z_hat"} <= set(by_calls.Tags()["scalars"])
    assert [e.step for e in by_calls.Scalars(BY_CALLS + "loss")] == [10050 + 320 * i for i in range(1, 11)]
    assert [e.step for e in by_calls.Scalars(BY_CALLS + "elbo")] == [10050 + 3200 + 4004]
    assert (tmp_path / "metrics.jsonl").exists()                    # jsonl is always on


def test_tensorboard_resume_replaces_the_recomputed_rows(tmp_path):
    """A resumed run logs again from its checkpoint: the rows past it, logged before the kill, are
    purged on both axes, so no step shows twice."""
    pytest.importorskip("tensorboard")
    train_rows = ROWS[1:11]
    s = make_streams("tensorboard", str(tmp_path), {}, "r")
    for r in train_rows[:8]:
        s.log(r)
    s.close()                                           # killed after iteration 8, checkpoint at 5
    s = make_streams("tensorboard", str(tmp_path), {}, "r")
    for r in train_rows[5:]:
        s.log({**r, "loss": -1.0})
    s.close()
    it = accumulator(tmp_path / "tensorboard" / "by_iteration")
    assert [(e.step, e.value) for e in it.Scalars("loss")][4:] == [(5, 2.0), *[(i, -1.0) for i in range(6, 11)]]
    by_calls = accumulator(tmp_path / "tensorboard" / "by_calls")
    assert [e.step for e in by_calls.Scalars(BY_CALLS + "loss")] == [10050 + 320 * i for i in range(1, 11)]


def wandb_records(path, block=32768):
    """Records of an offline W&B transaction log (.wandb): a 7-byte header, then LevelDB-log chunks
    (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:      # zero padding to the end of a block
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec
            buf = b""


def finished_records(path, timeout=60.0):
    """The records of an offline run once its exit record is on disk: wandb's service process may
    still be writing the file for a moment after `finish()` returns."""
    deadline = time.monotonic() + timeout
    while True:
        recs = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (pip install diffsampler[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")     # tests never contact a server
    monkeypatch.setenv("WANDB_SILENT", "true")
    write_png(tmp_path / "samples.png")
    s = make_streams("wandb", str(tmp_path), {"lr": 0.001}, "gmm25")
    for r in ROWS:
        s.log(r)
    s.finish(str(tmp_path))
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    log = glob.glob(os.path.join(runs[0], "run-*.wandb"))
    assert log
    try:
        recs = finished_records(log[0])
    except ImportError:
        pytest.skip("this wandb has no wandb.proto to read its transaction log with")
    keys = {i.key or "/".join(i.nested_key) for r in recs if r.WhichOneof("record_type") == "history"
            for i in r.history.item}
    assert {"loss", "iteration", "energy_calls/total", BY_CALLS + "loss", "search/log_Z_hat", "elbo"} <= keys
    steps = {r.metric.name: r.metric.step_metric for r in recs if r.WhichOneof("record_type") == "metric"}
    assert steps["loss"] == "iteration" and steps[BY_CALLS + "loss"] == "energy_calls/total"
    assert any(k.startswith("plots/samples") for k in keys)


@pytest.mark.parametrize("name,module,extra", [("tensorboard", "torch.utils.tensorboard", "tensorboard"),
                                               ("wandb", "wandb", "wandb")])
def test_missing_extra_names_the_pip_extra(tmp_path, monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)      # import fails as if the package were absent
    with pytest.raises(ConfigError, match=rf"pip install diffsampler\[{extra}\]"):
        make_streams(name, str(tmp_path), {}, "run")


def test_streams_driven_by_a_real_training_run(tmp_path, monkeypatch):
    """End to end through the trainer, with the hook the trainer will carry (`_log` hands its rows
    to the stream, whose jsonl backend writes metrics.jsonl): the run's files are as before, and
    TensorBoard holds its rows against iterations and energy calls."""
    pytest.importorskip("tensorboard")
    import diffsampler as ds
    from diffsampler.training import trainer as trainer_mod

    out = str(tmp_path / "run")
    streams = {}

    def hooked_log(self, row):
        if self.out not in streams:
            streams[self.out] = make_streams("tensorboard", self.out, self.cfg.to_dict(), self.target.name)
        streams[self.out].log(row)

    monkeypatch.setattr(trainer_mod.Trainer, "_log", hooked_log)
    small = dict(recipe="sgds", searcher="mala", search_chains=40, search_steps=5, rounds=1, width=16, depth=1,
                 batch_size=16, train_steps=4, eval_steps=5, eval_samples=100, iterations=6, log_every=2,
                 eval_every=3, threads=1)
    ds.train("gmm25", out=out, progress=False, **small)
    streams[out].finish(out)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 4, 6]
    assert any("search" in r for r in rows) and any("elbo" in r for r in rows)
    it = accumulator(os.path.join(out, "tensorboard", "by_iteration"))
    assert [e.step for e in it.Scalars("loss")] == [1, 2, 4, 6] and "search/acceptance" in it.Tags()["scalars"]
    assert "plots/samples" in it.Tags()["images"]
    by_calls = accumulator(os.path.join(out, "tensorboard", "by_calls"))
    assert [e.step for e in by_calls.Scalars(BY_CALLS + "loss")] == [r["energy_calls"]["total"] for r in rows
                                                                    if "loss" in r]
