"""The position-embedding registry: params.yaml ``pos_embed`` name -> PE class (vitpe.models.pos_embed).

Each class registers itself (``@register_pe``) and declares its capabilities as class attributes
(``takes_mask``, ``learnable_table``, ``options``). A method package that contributes a PE announces
it with ``provide_pe(name, module)`` when the package is imported; the module (and torch) is loaded
the first time that PE is asked for, so reading the configuration stays cheap and vitpe.models never
imports a method. A new PE is one class plus its name in the schema's ``pos_embed`` enum.
"""
from __future__ import annotations

import importlib
from typing import Any

PE_CLASSES: dict[str, Any] = {}  # name -> PositionEmbedding subclass
PE_PROVIDERS: dict[str, str] = {}  # name -> module that registers it when imported


def register_pe(cls: Any) -> Any:
    """Class decorator: make ``cls`` buildable under its ``name``."""
    if PE_CLASSES.get(cls.name, cls) is not cls:
        raise ValueError(f"position embedding {cls.name!r} is registered twice")
    PE_CLASSES[cls.name] = cls
    return cls


def provide_pe(name: str, module: str) -> None:
    """Announce that importing ``module`` registers the PE ``name``."""
    PE_PROVIDERS[name] = module


def pe_class(name: str) -> Any:
    """The PE class registered (or announced) under ``name``."""
    if name not in PE_CLASSES and name in PE_PROVIDERS:
        importlib.import_module(PE_PROVIDERS[name])
    if name not in PE_CLASSES:
        import vitpe.models.pos_embed  # noqa: F401  (the built-in PEs register on import)
    if name not in PE_CLASSES:
        known = ", ".join(sorted({*PE_CLASSES, *PE_PROVIDERS}))
        raise ValueError(f"unknown position embedding {name!r} (known: {known}; a method's PE is known once "
                         "its package is imported)")
    return PE_CLASSES[name]
