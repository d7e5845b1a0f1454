"""Atomic checkpoints and run-directory files (write to a temporary file, fsync, rename)."""
from __future__ import annotations

import json
import os
import pickle
import tempfile

import torch

from ..errors import CheckpointError
from ..faults import fault_point

FORMAT = 1
CHECKPOINT = "checkpoint.pt"   # a run directory's checkpoint file


def user_file_mode() -> int:
    """0o666 less the process umask: the mode `open` gives a new file (mkstemp would give 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str, write) -> None:
    """Write `path` whole or not at all: a temporary file beside it, fsync, rename (a kill leaves at
    most the temporary, which a resume removes)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, user_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("checkpoint_write")        # a kill here leaves only the temporary, which a resume removes
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2, default=_json_default) + "\n").encode()))


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path: str, state: dict) -> None:
    state = {"format": FORMAT, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def rng_state() -> dict:
    """The main random stream's state (the CPU's, and every GPU's where there are GPUs)."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def load_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():   # the GPUs this machine has (a resume may have fewer)
        for i, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)


def load_checkpoint(path: str, *, target_name: str | None = None, dim: int | None = None) -> dict:
    """Load and check a checkpoint; raise CheckpointError naming the problem."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "global" in str(e).lower():
            raise CheckpointError(f"checkpoint {path} needs pickled code to load, which could run anything: refused "
                                  "(a diffsampler checkpoint holds only tensors, numbers, strings, lists and dicts)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable (UnpicklingError: {e})") from None
    except Exception as e:  # noqa: BLE001 - any other failure means a corrupt file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a diffsampler checkpoint of format {FORMAT}")
    missing = {"sampler", "optimizer", "iteration", "rng", "config", "target"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {sorted(missing)}")
    if target_name is not None and state["target"]["name"] != target_name:
        raise CheckpointError(f"checkpoint {path} belongs to target {state['target']['name']!r}, "
                              f"not {target_name!r}")
    if dim is not None and state["target"]["dim"] != dim:
        raise CheckpointError(f"checkpoint {path} has dimension {state['target']['dim']}, target has {dim}")
    return state
