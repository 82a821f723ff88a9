"""Weight I/O of the components: timm key names and safetensors files with JSON metadata.

- Parameter names equal timm's except the PE: ``pe.table`` here is ``pos_embed`` in timm, and extra
  PE state keeps a ``pos_embed_`` prefix (MJP's unknown row: ``pos_embed_unk``), so saved weights
  load into a plain timm ViT with strict=True.
- ``model.safetensors`` / ``encoder.safetensors``: weights only, no code; the metadata is one sorted
  JSON string under ``vitpe`` (the run's dependency record, vitpe.runs), written atomically.
- ``load_weights_only``: ``torch.load(weights_only=True)`` for the few pickled inputs (training state,
  third-party checkpoints), refusing anything that is not tensors and plain types.
"""
from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vitpe.errors import CheckpointError
from vitpe.io import atomic_path
from vitpe.models.vit import unwrap

WEIGHTS_NAME = "model.safetensors"


def _to_timm_key(key: str) -> str:
    if key == "pe.table":
        return "pos_embed"
    if key.startswith("pe."):  # extra PE state (e.g. MJP's unknown row) keeps a pos_embed_ prefix
        return "pos_embed_" + key[3:]
    return key


def _from_timm_key(key: str) -> str:
    if key == "pos_embed":
        return "pe.table"
    if key.startswith("pos_embed_"):
        return "pe." + key[len("pos_embed_"):]
    return key


def to_timm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with timm's key names, as contiguous CPU tensors (ready for safetensors)."""
    return {_to_timm_key(k): v.detach().cpu().contiguous() for k, v in unwrap(model).state_dict().items()}


def _listing(items: Iterable[str], limit: int = 6) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def key_problems(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *,
                 unused: Iterable[str] = (), new: Iterable[str] = (), target: str = "model") -> list[str]:
    """What keeps ``state`` (checkpoint keys) from loading into ``expected`` (keys -> shapes).

    ``unused``: checkpoint keys the target ignores by design; ``new``: target keys no checkpoint
    provides by design. Every other missing, unexpected or misshapen key is named; [] means it fits.
    """
    missing = set(expected) - set(state) - set(new)
    unexpected = set(state) - set(expected) - set(unused)
    mismatched = [f"{k} {tuple(state[k].shape)} vs {target} {tuple(expected[k])}"
                  for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k])]
    return [f"{what}: {_listing(keys)}" for what, keys in
            (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)) if keys]


def load_timm_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load timm-named weights; raise CheckpointError naming every missing/unexpected/misshapen key."""
    model = unwrap(model)
    problems = key_problems(state, {_to_timm_key(k): v.shape for k, v in model.state_dict().items()})
    if problems:
        raise CheckpointError(f"{source} does not fit this architecture; " + "; ".join(problems))
    model.load_state_dict({_from_timm_key(k): v for k, v in state.items()}, strict=True)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write timm-keyed weights; ``metadata`` is stored as one sorted JSON string.

    One key only: safetensors keeps header metadata in a hash map whose order varies between
    processes, and identical weights should give identical bytes (DVC, reproducibility checks).
    """
    save_tensors(to_timm_state_dict(model), path, metadata)


def save_tensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, Any] | None = None) -> None:
    """Atomically write a tensor dict as safetensors with ``save_weights``' metadata: the one writer of
    the project's safetensors files (weights, encoders, attack reconstructions, transfer models)."""
    header = {"vitpe": json.dumps(metadata or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=header)


#: how the files people mistake for safetensors weights begin: torch.save's zip and a bare pickle
_PICKLE_MAGIC = {b"PK\x03\x04": "a torch.save (zip) checkpoint", b"\x80": "a pickle"}


def _not_safetensors(path: Path, exc: Exception) -> CheckpointError:
    with open(path, "rb") as f:
        head = f.read(4)
    kind = next((kind for magic, kind in _PICKLE_MAGIC.items() if head.startswith(magic)), None)
    found = f"it is {kind}" if kind else str(exc)
    return CheckpointError(f"{path}: not a readable safetensors file ({found}); expected weights as vitpe "
                           "writes them (model.safetensors, encoder.safetensors)")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, expected a weights file (a .safetensors file)")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError) as exc:
        raise _not_safetensors(path, exc) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: weights file not readable ({exc.strerror or exc})") from None


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON metadata ``save_weights`` stored ({} for foreign safetensors files)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("vitpe")
    except (SafetensorError, ValueError) as exc:
        raise _not_safetensors(Path(path), exc) from None
    try:
        metadata = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the safetensors metadata 'vitpe' is not valid JSON ({exc.msg}); expected "
                              "the run record vitpe writes with the weights") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: the safetensors metadata 'vitpe' is a {type(metadata).__name__}, expected "
                              "a JSON object (the run record vitpe writes with the weights)")
    return metadata


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


def load_weights_only(path: str | Path, what: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``, CheckpointError naming ``path`` if it fails (``mmap``: tensors
    mapped from the file, not read, for a look at the small entries of a large state).

    Passed explicitly, weights_only=True holds even under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (that
    variable only changes the default), so no file the workflow loads can run code.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a readable {what} (it pickles objects other than tensors and "
                              "plain types; refused without running them)") from None
    except Exception as exc:  # a truncated zip (RuntimeError), EOFError, OSError, ...
        raise CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
