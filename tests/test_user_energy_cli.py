"""User energies from the command line: FILE.py:NAME and package.module:NAME specs train, evaluate,
sample and resume; the run records the spec (target_spec.json) and refuses a moved or changed file
with one clear line and exit code 2."""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsampler.cli import main
from diffsampler.targets import spec as tspec

TINY = ["iterations=20", "batch_size=32", "width=16", "eval_samples=100", "eval_steps=10", "recipe=tb", "threads=1"]

ENERGY_SRC = textwrap.dedent('''
    import numpy as np
    import torch

    CENTRE = 1.0

    def energy(x):
        """N(1, I) in any dimension."""
        return 0.5 * ((x - CENTRE) ** 2).sum(-1)

    def per_coordinate(x):
        return 0.5 * (x - CENTRE) ** 2

    def numpy_energy(x):
        return np.sum(x.detach().numpy() ** 2, -1)

    def raises(x):
        return x[:, 7].sum()

    def detached(x):
        return (x ** 2).sum(-1).detach()

    not_a_function = 3
''')


def run_cli(*args, capsys):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def energy_file(tmp_path):
    p = tmp_path / "energies" / "gauss.py"
    p.parent.mkdir()
    p.write_text(ENERGY_SRC)
    ref = tmp_path / "ref.npy"
    np.save(ref, 1.0 + np.random.default_rng(0).standard_normal((2000, 2)))
    return p, ref


def trained_run(tmp_path, energy_file, capsys) -> str:
    path, ref = energy_file
    run = tmp_path / "run"
    code, out, err = run_cli("train", f"{path}:energy", "dim=2", f"log_Z={math.log(2 * math.pi)}",
                             f"reference={ref}", *TINY, "--out", run, "-q", capsys=capsys)
    assert code == 0, err
    assert "ELBO" in out
    return str(run)


def test_train_records_spec_then_eval_sample_resume(tmp_path, energy_file, capsys):
    path, ref = energy_file
    run = trained_run(tmp_path, energy_file, capsys)
    rec = json.load(open(os.path.join(run, "target_spec.json")))
    assert rec["kind"] == "file" and rec["location"] == str(path.resolve()) and rec["function"] == "energy"
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["options"] == {"dim": 2, "log_Z": pytest.approx(math.log(2 * math.pi)), "reference": str(ref.resolve()),
                              "sigma": 1.0, "name": "energy"}
    assert rec["reference_sha256"] == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert json.load(open(os.path.join(run, "config.json")))["target"] == "energy"

    code, out, err = run_cli("eval", run, "--steps", "10", "-n", "100", "--json", capsys=capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["target"] == "energy" and rep["eubo"] is not None
    assert rep["log_Z_true"] == pytest.approx(math.log(2 * math.pi))

    code, out, err = run_cli("sample", run, "-n", "40", "--steps", "8", "-o", tmp_path / "s.npz", capsys=capsys)
    assert code == 0, err
    assert np.load(tmp_path / "s.npz")["x"].shape == (40, 2)

    # resume: the spec's options come from the record; iterations is raised, so the run goes on
    code, out, err = run_cli("train", f"{path}:energy", "iterations=30", "--out", run, "--resume", "-q", capsys=capsys)
    assert code == 0, err
    assert json.load(open(os.path.join(run, "report.json")))["iterations"] == 30

    from diffsampler.training import load_run
    loaded = load_run(run)
    assert loaded.target.name == "energy" and loaded.target.dim == 2 and loaded.target.has_samples


def test_changed_file_is_refused_unless_allowed(tmp_path, energy_file, capsys):
    path, _ = energy_file
    run = trained_run(tmp_path, energy_file, capsys)
    path.write_text(ENERGY_SRC.replace("CENTRE = 1.0", "CENTRE = 2.0"))
    for argv in (["eval", run, "-n", "50"], ["sample", run, "-n", "5", "-o", tmp_path / "s.npz"],
                 ["train", f"{path}:energy", "--out", run, "--resume", "-q"]):
        code, out, err = run_cli(*argv, capsys=capsys)
        assert code == 2, argv
        assert str(path.resolve()) in err and "has changed" in err and "--allow-changed-energy" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.warns(UserWarning, match="using it anyway"):
        code, out, err = run_cli("sample", run, "-n", "5", "-o", tmp_path / "s.npz", "--allow-changed-energy",
                                 capsys=capsys)
    assert code == 0, err
    # resuming with the changed energy, when allowed, records the change
    with pytest.warns(UserWarning):
        code, out, err = run_cli("train", f"{path}:energy", "iterations=25", "--out", run, "--resume", "-q",
                                 "--allow-changed-energy", capsys=capsys)
    assert code == 0, err
    rec = json.load(open(os.path.join(run, "target_spec.json")))
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["history"][0]["event"] == "changed"


def test_moved_file(tmp_path, energy_file, capsys):
    path, _ = energy_file
    run = trained_run(tmp_path, energy_file, capsys)
    new = tmp_path / "elsewhere.py"
    shutil.move(path, new)
    code, out, err = run_cli("eval", run, "-n", "50", capsys=capsys)
    assert code == 2 and "moved or deleted" in err and str(path.resolve()) in err and "--energy-file" in err
    assert "Traceback" not in err
    code, out, err = run_cli("sample", run, "-n", "5", "-o", tmp_path / "s.npz", "--energy-file", new, capsys=capsys)
    assert code == 0, err
    code, out, err = run_cli("train", f"{new}:energy", "iterations=25", "--out", run, "--resume", "-q", capsys=capsys)
    assert code == 0, err
    rec = json.load(open(os.path.join(run, "target_spec.json")))
    assert rec["location"] == str(new.resolve()) and rec["history"][0]["event"] == "moved"
    code, out, err = run_cli("eval", run, "-n", "50", capsys=capsys)   # the new place is now the recorded one
    assert code == 0, err


def test_changed_file_from_a_real_shell(tmp_path, energy_file, capsys):
    """The same refusal through the installed entry point: one line on stderr, exit 2, no traceback."""
    path, _ = energy_file
    run = trained_run(tmp_path, energy_file, capsys)
    path.write_text(ENERGY_SRC + "\n# edited\n")
    src = str(Path(tspec.__file__).resolve().parents[2])       # the tree under test, not another install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "diffsampler", "eval", run, "-n", "50"], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 2 and "has changed" in r.stderr and "Traceback" not in r.stderr


def test_module_spec(tmp_path, capsys, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "energies.py").write_text(ENERGY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    code, out, err = run_cli("train", "userpkg.energies:energy", "dim=3", "sigma=2", "name=gauss3", *TINY,
                             "--out", run, "-q", capsys=capsys)
    assert code == 0, err
    rec = json.load(open(run / "target_spec.json"))
    assert rec["kind"] == "module" and rec["location"] == "userpkg.energies"
    assert rec["source"] == str((pkg / "energies.py").resolve()) and rec["options"]["sigma"] == 2.0
    assert json.load(open(run / "config.json"))["target"] == "gauss3"
    code, out, err = run_cli("eval", run, "-n", "50", "--steps", "5", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["dim"] == 3, err


@pytest.mark.parametrize("spec,options,fragment", [
    ("{d}/missing.py:energy", ["dim=2"], "not found"),
    ("{f}:enrgy", ["dim=2"], "no function 'enrgy'"),
    ("{f}:not_a_function", ["dim=2"], "is not callable"),
    ("{f}:energy", [], "add dim=D"),
    ("{f}:energy", ["dim=zero"], "dim='zero'"),
    ("{f}:energy", ["dim=0"], "positive integer"),
    ("{f}:per_coordinate", ["dim=2"], "shape (3,)"),
    ("{f}:numpy_energy", ["dim=2"], "torch.Tensor"),
    ("{f}:raises", ["dim=2"], "IndexError"),
    ("{f}:detached", ["dim=2"], "differentiably"),
    ("{f}:energy", ["dim=2", "reference={d}/nothing.npy"], "not found"),
    ("{f}:energy", ["dim=2", "reference={d}/bad.npy"], "expected shape (N, 2)"),
    ("{f}:energy", ["dim=2", "reference={d}/text.npy"], "cannot read reference samples"),
    ("{f}:energy", ["dim=2", "sigma=-1"], "sigma='-1'"),
    ("no_such_pkg_xyz.mod:energy", ["dim=2"], "cannot import module 'no_such_pkg_xyz.mod'"),
    ("gmm40", ["dim=2"], "target options are for user energies"),
    ("{d}/system.xml", [], "serialised OpenMM System files are not read"),
])
def test_bad_specs_fail_with_one_line(tmp_path, energy_file, capsys, spec, options, fragment):
    path, _ = energy_file
    np.save(tmp_path / "bad.npy", np.zeros((10, 3)))
    (tmp_path / "text.npy").write_text("not an array")
    (tmp_path / "system.xml").write_text("<System/>")
    fmt = {"f": path, "d": tmp_path}
    argv = ["train", spec.format(**fmt), *[o.format(**fmt) for o in options], *TINY, "--out", tmp_path / "r", "-q"]
    code, out, err = run_cli(*argv, capsys=capsys)
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_energy_command_with_user_energy(tmp_path, energy_file, capsys):
    path, _ = energy_file
    np.save(tmp_path / "x.npy", np.array([[1.0, 1.0], [0.0, 0.0]]))
    code, out, err = run_cli("energy", f"{path}:energy", tmp_path / "x.npy", "dim=2", "-o", tmp_path / "e.npy",
                             capsys=capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), [0.0, 1.0])


def test_split_options_and_uncounted_check(energy_file):
    path, _ = energy_file
    mine, rest = tspec.split_target_options(f"{path}:energy", {"dim": "2", "sigma": "3", "lr": "0.1"})
    assert mine == {"dim": "2", "sigma": "3"} and rest == {"lr": "0.1"}
    mine, rest = tspec.split_target_options("gmm40", {"sigma": "3", "lr": "0.1"})   # the config's sigma
    assert mine == {} and rest == {"sigma": "3", "lr": "0.1"}
    state = torch.random.get_rng_state()
    t = tspec.resolve_target(f"{path}:energy", {"dim": "2", "sigma": "3"})
    assert t.sigma == 3.0 and t.counter.total == 0                   # the load check is not counted
    assert torch.equal(state, torch.random.get_rng_state())          # nor does it draw from the global RNG
    assert tspec.parse_spec("pkg.mod:fn") == tspec.ParsedSpec("module", "pkg.mod", "fn")
    assert tspec.parse_spec("a/b.py:Cls.energy") == tspec.ParsedSpec("file", "a/b.py", "Cls.energy")
    assert tspec.parse_spec("manywell32").kind == "registry"


def test_register_loader_extension_point(tmp_path):
    """Another file type (e.g. an OpenMM system) plugs in by suffix; its file is fingerprinted too."""
    from diffsampler.targets import from_energy

    def toy_loader(path, name, options):
        scale = float(path.read_text())
        return from_energy(lambda x: scale * (x ** 2).sum(-1), dim=options["dim"] or 1, name=options["name"])

    f = tmp_path / "system.toy"
    f.write_text("2.0")
    tspec.register_loader(".toy", toy_loader)
    try:
        t = tspec.resolve_target(str(f), {"dim": "4"})
        assert t.dim == 4 and t.spec_record.sha256 == hashlib.sha256(b"2.0").hexdigest()
        assert tspec.record_spec(str(tmp_path), t) == str(tmp_path / "target_spec.json")
        f.write_text("3.0")
        with pytest.raises(tspec.EnergyChangedError, match="has changed"):
            tspec.run_target(str(tmp_path))
    finally:
        del tspec.LOADERS[".toy"]
