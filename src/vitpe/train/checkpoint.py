"""Training state: ``state.pt`` holds everything needed to resume bit-exactly (weights, optimizer,
scheduler, scaler, position in the epoch, RNG states of python/numpy/torch/cuda), tensors and plain
types only, so it loads with ``torch.load(weights_only=True)``; written to a temporary file and renamed
into place, so a kill never leaves half a file. The weights themselves: vitpe.models.weights.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitpe.errors import CheckpointError
from vitpe.io import atomic_path
from vitpe.models.weights import load_weights_only

STATE_NAME = "state.pt"
STATE_FORMAT = "vitpe-train-state/1"
CPU_THREADS = "cpu_threads"  # the fingerprint key of a CPU run's torch thread count (train/prelude.py)


# --- random number generators -----------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) from one value (the official code left python unseeded)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> dict[str, Any]:
    """All global RNG states as tensors and plain types (weights_only-loadable)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_alg, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"alg": np_alg, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["alg"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --- training state ---------------------------------------------------------------------------

def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state with ``weights_only=True``; CheckpointError if unreadable or foreign."""
    state = load_weights_only(path, "training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a {STATE_FORMAT} file")
    return state


def check_fingerprint(state: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Refuse to resume a state written for a different configuration, naming what differs."""
    saved = json.loads(state["fingerprint"])
    expected = json.loads(fingerprint_json(expected))  # same JSON round trip (tuples -> lists)
    if saved == expected:
        return
    was, now = saved.get(CPU_THREADS), expected.get(CPU_THREADS)
    if None not in (was, now) and was != now:
        raise CheckpointError(f"{path} was written by a run on {was} CPU thread(s), this one has {now}: rerun "
                              f"with --threads {was} (a resumed CPU run repeats the original bit for bit only "
                              "on the same thread count)")
    diffs = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        elif a != b:
            diffs.append(f"{prefix}: {a!r} -> {b!r}")

    walk(saved, expected, "")
    raise CheckpointError(
        f"{path} was written for a different configuration ({'; '.join(diffs[:5])}); "
        "delete it to start training from scratch"
    )


def fingerprint_json(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True)
