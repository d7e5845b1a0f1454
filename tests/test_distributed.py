"""Training on several processes (torch.distributed, gloo on the CPU) gives the numbers of one process
with the same shards: the same loss and log Z at every iteration and the same final parameters, to
a relative tolerance of 1e-10 in float64 (RTOL; a sum of shard gradients may be reassociated, here
it is in fact bitwise). A run killed on any rank resumes, on the same or another number of
processes; rank 0 alone writes; a budget stops every rank at the same iteration; two torchrun
launches meeting at a rendezvous (the multi-node path, --nnodes 2 on 127.0.0.1) agree too.

Each run is a short SGDS run on gmm25 (searches in blocks shared among the processes, the novelty,
a replay buffer, a log Z warm start) with shards=2 and a call budget that ends it at iteration 11."""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from diffsampler.distributed import Context, ShardRNG, derive_seed
from diffsampler.errors import ConfigError
from diffsampler.training import TrainConfig

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
RTOL, ATOL = 1e-10, 1e-12
CONFIG = dict(recipe="sgds", iterations=16, batch_size=32, width=16, depth=1, time_features=8, search_chains=40,
              search_steps=10, search_burnin=4, search_thin=2, search_checkpoint_calls=100, rnd_alpha=10.0,
              eval_samples=64, eval_steps=8, log_every=1, checkpoint_every=4, threads=1, dtype="float64",
              shards=2, max_energy_calls=5300)
KILL_AT = 6   # after the checkpoint of iteration 4
TIMING = ("train_seconds", "lineage", "world_size", "devices")


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("DIFFSAMPLER_FAULT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                          "MASTER_ADDR", "MASTER_PORT")}
    return {**e, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + e.get("PYTHONPATH", ""), **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(cfg: str, out: str, resume: bool = False) -> list[str]:
    return ["-m", "diffsampler", "train", "gmm25", "--config", cfg, "--out", out, "-q"] + (["--resume"] if resume else [])


def one(cfg, out, resume=False, fault=None) -> subprocess.CompletedProcess:
    extra = {"DIFFSAMPLER_FAULT": fault} if fault else {}
    return subprocess.run([sys.executable, *train_args(cfg, out, resume)], env=env(**extra), capture_output=True,
                          text=True, timeout=300)


def torchrun(cfg, out, resume=False, fault=None, nproc=2) -> subprocess.CompletedProcess:
    extra = {"DIFFSAMPLER_FAULT": fault} if fault else {}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           *train_args(cfg, out, resume)]
    return subprocess.run(cmd, env=env(**extra), capture_output=True, text=True, timeout=300)


def ranks_stderr(r: subprocess.CompletedProcess) -> str:
    """The start of stderr (what the processes printed; the launcher's traceback follows it) and its end."""
    return r.stderr if len(r.stderr) < 6000 else r.stderr[:4000] + "\n[...]\n" + r.stderr[-2000:]


def fingerprint(out: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    for r in rows:
        r.pop("train_seconds", None)
    report = json.load(open(os.path.join(out, "report.json")))
    state = torch.load(os.path.join(out, "checkpoint.pt"), map_location="cpu", weights_only=True)
    return {"rows": rows, "report": {k: v for k, v in report.items() if k not in TIMING},
            "params": state["sampler"], "iteration": state["iteration"], "files": sorted(os.listdir(out))}


def close(a, b) -> bool:
    """Numbers within RTOL/ATOL, everything else equal (nested dicts and lists)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.allclose(a, b, rtol=RTOL, atol=ATOL)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= ATOL + RTOL * abs(b) or a == b
    return a == b


def assert_same_run(got: dict, want: dict) -> None:
    assert len(got["rows"]) == len(want["rows"])
    for g, w in zip(got["rows"], want["rows"]):
        assert close(g, w), (g, w)
    assert close(got["report"], want["report"])
    assert close(got["params"], want["params"])
    assert got["files"] == want["files"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("distributed")
    cfg = os.path.join(d, "config.json")
    with open(cfg, "w") as f:
        json.dump(CONFIG, f)
    r = one(cfg, os.path.join(d, "one"))
    assert r.returncode == 0, ranks_stderr(r)
    return d, cfg, fingerprint(os.path.join(d, "one"))


def test_reference_stops_on_its_call_budget(work):
    _, _, ref = work
    assert ref["report"]["stop_reason"] == "max_energy_calls" and 4 < ref["iteration"] < CONFIG["iterations"]
    assert ref["report"]["shards"] == 2


def test_two_processes_match_one_and_only_rank_0_writes(work):
    """Two ranks launched by hand (the environment torchrun would give them): rank 1 is given a run
    directory of its own and a working directory of its own, and must create nothing in either."""
    d, cfg, ref = work
    port, procs = free_port(), []
    for rank in (0, 1):
        cwd = os.path.join(d, f"cwd{rank}")
        os.makedirs(cwd)
        out = os.path.join(d, "two") if rank == 0 else os.path.join(d, "rank1-out")
        e = env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, *train_args(cfg, out)], env=e, cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    assert_same_run(fingerprint(os.path.join(d, "two")), ref)
    report = json.load(open(os.path.join(d, "two", "report.json")))
    assert report["world_size"] == 2 and report["devices"] == ["cpu", "cpu"] and report["shards"] == 2
    assert not os.path.exists(os.path.join(d, "rank1-out")) and os.listdir(os.path.join(d, "cwd1")) == []
    assert os.listdir(os.path.join(d, "cwd0")) == []
    # the budget stopped both ranks at the same iteration
    assert f"rank 1 of 2 stopped at iteration {ref['iteration']} (max_energy_calls)" in outs[1][1]
    assert "rank 1" not in outs[0][0] and "run directory" in outs[0][0] and outs[1][0] == ""


def test_a_two_process_run_killed_on_rank_1_resumes_on_two_and_on_one(work):
    d, cfg, ref = work
    out = os.path.join(d, "killed2")
    r = torchrun(cfg, out, fault=f"iteration:{KILL_AT}:KILL:1")
    assert r.returncode != 0 and "FAULT point=iteration" in r.stderr
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["iteration"] == 4
    shutil.copytree(out, out + "-on-one")
    r = torchrun(cfg, out, resume=True)
    assert r.returncode == 0, ranks_stderr(r)
    assert_same_run(fingerprint(out), ref)
    r = one(cfg, out + "-on-one", resume=True)
    assert r.returncode == 0, ranks_stderr(r)
    assert_same_run(fingerprint(out + "-on-one"), ref)


def test_a_one_process_run_resumes_on_two(work):
    d, cfg, ref = work
    out = os.path.join(d, "killed1")
    r = one(cfg, out, fault=f"iteration:{KILL_AT}:KILL")
    assert r.returncode == -9
    r = torchrun(cfg, out, resume=True)
    assert r.returncode == 0, ranks_stderr(r)
    assert_same_run(fingerprint(out), ref)


def test_two_launches_meet_at_a_rendezvous(work):
    """The multi-node path: two torchrun launches of one process each (--nnodes 2), as on two machines."""
    d, cfg, ref = work
    out, port = os.path.join(d, "nodes"), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(n), "--rdzv_backend", "c10d", "--rdzv_id", "nodes",
                               "--rdzv_endpoint", f"127.0.0.1:{port}", *train_args(cfg, out)],
                              env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    assert_same_run(fingerprint(out), ref)


def test_shard_rules():
    with pytest.raises(ConfigError, match="'shards' = 3: must divide batch_size"):
        TrainConfig.from_dict({**CONFIG, "shards": 3})
    for key, value in (("trajectory_reuse", 1), ("local_search_every", 5), ("orbit_K", 2)):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            TrainConfig.from_dict({**CONFIG, key: value})
    from diffsampler.training.run import _resolve_shards
    with pytest.raises(ConfigError, match="2 processes must divide it"):
        _resolve_shards(TrainConfig.from_dict({**CONFIG, "shards": 1}), Context(world=2))
    assert _resolve_shards(TrainConfig.from_dict({**CONFIG, "shards": None}), Context(world=2)).shards == 2


def test_shard_streams_are_their_own():
    """A shard's stream does not depend on which process owns it, nor on the main stream."""
    assert derive_seed(0, 1, 0) == 2482289063980384216   # no hash(): the same on every process and Python
    both, odd = ShardRNG(5, 2, Context(), "cpu"), ShardRNG(5, 2, Context(rank=1, world=2), "cpu")
    torch.manual_seed(0)
    with both.fork(1):
        a = torch.rand(3)
    main = torch.rand(1)
    torch.manual_seed(123)
    with odd.fork(1):
        b = torch.rand(3)
    assert torch.equal(a, b) and odd.owned == [1]
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), main)
