"""The same code on a CUDA GPU. Skipped where there is none (CI has none); on a GPU machine run
`pytest tests/test_cuda.py`. Checks real quantities: energies and scores equal the CPU's in float64,
energy-call counts are the same on both devices, and a GPU run loads on a CPU-only machine."""
import json

import pytest
import torch

import diffsampler as ds
from diffsampler.training.run import load_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("name", ["manywell32", "gmm40", "funnel", "dw4", "lj13", "lj55"])
def test_energy_and_score_on_cuda_equal_the_cpu_values(name):
    t = ds.targets.get(name)
    g = torch.Generator().manual_seed(1)
    x = 1.5 * torch.randn(64, t.dim, generator=g, dtype=torch.float64)
    if t.symmetry is not None:
        x = t.project(x)
    e_cpu = t.energy(x, check_finite=False)
    lr_cpu, s_cpu = t.log_reward_and_score(x)
    e_gpu = t.energy(x.cuda(), check_finite=False)
    lr_gpu, s_gpu = t.log_reward_and_score(x.cuda())
    assert e_gpu.device.type == "cuda" and s_gpu.device.type == "cuda"
    ok = torch.isfinite(e_cpu)
    torch.testing.assert_close(e_gpu.cpu()[ok], e_cpu[ok], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(lr_gpu.cpu()[ok], lr_cpu[ok], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(s_gpu.cpu()[ok], s_cpu[ok], rtol=1e-8, atol=1e-7)


SMALL = dict(width=16, depth=1, time_features=8, batch_size=16, train_steps=4, eval_steps=8, eval_samples=64,
             threads=1, progress=False)


@pytest.mark.parametrize("target,keys", [
    ("manywell32", dict(recipe="sgds", searcher="mala", search_chains=8, search_steps=20, search_burnin=5,
                        iterations=6, rounds=2)),
    ("dw4", dict(recipe="sgds", drift="egnn", searcher="mala", rnd_alpha=1.0, search_chains=8, search_steps=20,
                 search_burnin=5, iterations=6, rounds=2, ml_warmup=2, orbit_K=4)),
    ("lj13", dict(recipe="tb", drift="egnn", objective="adjoint", adjoint_weights="importance",
                  adjoint_kappa=7.5, iterations=4)),
])
def test_training_on_cuda_counts_the_same_energy_calls_as_on_cpu(target, keys):
    """A short run of each learner family (SGDS with MALA + RND + orbit warm-up, adjoint matching)
    on the GPU: parameters live there, the report is finite, and the exact energy-call counts equal
    the CPU run's (the budget is device-independent)."""
    runs = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        runs[dev] = ds.train(target, device=dev, **SMALL, **keys)
    gpu = runs["cuda"]
    assert next(gpu.sampler.parameters()).device.type == "cuda"
    assert gpu.report["energy_calls"] == runs["cpu"].report["energy_calls"]
    assert all(v is None or v == v for v in (gpu.report["elbo"], gpu.report["log_Z_is"]))
    assert gpu.report["elbo"] is not None and abs(gpu.report["elbo"]) < float("inf")


def test_a_gpu_run_evaluates_on_the_gpu_and_loads_on_the_cpu(tmp_path):
    run = ds.train("dw4", device="cuda", drift="egnn", recipe="tb", iterations=3, out=str(tmp_path / "r"), **SMALL)
    assert json.load(open(tmp_path / "r" / "config.json"))["device"] == "cuda"
    back = load_run(str(tmp_path / "r"), device="cpu")
    assert next(back.sampler.parameters()).device.type == "cpu"
    for p, q in zip(run.sampler.parameters(), back.sampler.parameters()):
        torch.testing.assert_close(p.detach().cpu(), q.detach())
    rep = back.evaluate(steps=8, n=32, save=False)
    assert rep["elbo"] == rep["elbo"]


def test_grad_chunk_steps_gives_the_same_gradient_on_cuda():
    """The chunked backward on the GPU: parameter gradients equal one backward through all steps
    (float64, EGNN on DW-4, forward then backward batches)."""
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer
    grads = {}
    for chunk in (0, 3):
        cfg = TrainConfig.from_dict(dict(recipe="tb", drift="egnn", width=16, depth=2, time_features=8, batch_size=16,
                                         train_steps=8, iterations=4, dtype="float64", device="cuda",
                                         behaviour="mixed", offpolicy_data="replay", grad_chunk_steps=chunk))
        tr = Trainer(ds.targets.get("dw4"), cfg, progress=False)
        grads[chunk] = []
        for _ in range(3):
            tr.step()
            grads[chunk].append([p.grad.clone() for p in tr.sampler.parameters() if p.grad is not None])
            tr.iteration += 1
    for g0, g3 in zip(grads[0], grads[3]):
        for a, b in zip(g0, g3):
            assert b.device.type == "cuda"
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_a_compiled_drift_trains_like_the_eager_one_on_cuda():
    """compile=default (Triton kernels) changes how the drift is computed, not what: three EGNN
    iterations (rollout, chunked backward, replayed backward batch) give the eager run's parameters
    in float64."""
    mode = "default"
    from diffsampler.training import TrainConfig
    from diffsampler.training.trainer import Trainer
    params = {}
    for m in ("none", mode):
        cfg = TrainConfig.from_dict(dict(recipe="tb", drift="egnn", width=16, depth=2, time_features=8, batch_size=16,
                                         train_steps=8, iterations=3, dtype="float64", device="cuda", compile=m,
                                         behaviour="mixed", offpolicy_data="replay", grad_chunk_steps=4))
        tr = Trainer(ds.targets.get("dw4"), cfg, progress=False)
        for _ in range(3):
            tr.step()
            tr.iteration += 1
        params[m] = [p.detach().clone() for p in tr.sampler.parameters()]
    for a, b in zip(params["none"], params[mode]):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
