"""Safe, portable checkpoints.

- ``model.safetensors``: weights only, timm key names (loads into a plain timm ViT), no code.
- ``state.pt``: everything needed to resume bit-exactly (weights, optimizer, scheduler, scaler,
  position in the epoch, RNG states of python/numpy/torch/cuda), tensors and plain types only, so
  it loads with ``torch.load(weights_only=True)``.

Both are written to a temporary file and renamed into place, so a kill never leaves half a file.
"""
from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vitpe.errors import CheckpointError
from vitpe.io import atomic_path
from vitpe.models.vit import load_timm_state_dict, to_timm_state_dict

WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.pt"
STATE_FORMAT = "vitpe-train-state/1"


def save_weights(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write timm-keyed weights; ``metadata`` is stored as one sorted JSON string.

    One key only: safetensors keeps header metadata in a hash map whose order varies between
    processes, and identical weights should give identical bytes (DVC, reproducibility checks).
    """
    save_tensors(to_timm_state_dict(model), path, metadata)


def save_tensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write a (timm-keyed) tensor dict as safetensors with ``save_weights``' metadata."""
    header = {"vitpe": json.dumps(metadata or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata ``save_weights`` stored ({} for foreign safetensors files)."""
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("vitpe")
    return json.loads(raw) if raw else {}


def load_weights(model: nn.Module, path: Path, expected: dict[str, Any] | None = None) -> None:
    """Load timm-keyed safetensors weights into ``model``; CheckpointError on any mismatch.

    ``expected`` (e.g. {"model": ..., "pos_embed": ...}) is compared with the metadata written at
    training time: some differences (number of heads, PE kind) leave every tensor shape unchanged
    and would otherwise load silently into the wrong model.
    """
    state = read_weights(path)
    saved = read_metadata(path)
    for key, value in (expected or {}).items():
        if key in saved and saved[key] != json.loads(json.dumps(value)):
            raise CheckpointError(f"{path}: trained with {key}={saved[key]!r}, but the configuration "
                                  f"says {key}={value!r}")
    load_timm_state_dict(model, state, source=str(path))


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


def load_weights_only(path: str | Path, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``, CheckpointError naming ``path`` if it fails.

    Passed explicitly, weights_only=True holds even under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (that
    variable only changes the default), so no file the workflow loads can run code.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a readable {what} (it pickles objects other than tensors and "
                              "plain types; refused without running them)") from None
    except Exception as exc:  # a truncated zip (RuntimeError), EOFError, OSError, ...
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


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
