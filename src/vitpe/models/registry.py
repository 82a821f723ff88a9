"""The position-embedding registry: params.yaml ``pos_embed`` name -> PE class (vitpe.models.pos_embed).

Each class registers itself (``@register_pe``) and declares its capabilities as class attributes
(``takes_mask``, ``learnable_table``, ``options``). A method package that contributes a PE announces
it with ``provide_pe(name, module, flags)`` when the package is imported (the built-in PEs are
announced here); the module (and torch) is loaded the first time that PE's class is asked for, while
its flags (``pe_flags``) are read without loading it, so checking the configuration stays cheap, and
vitpe.models never imports a method. Registration refuses a class whose flags differ from the
announced ones. A new PE is one class plus its name in the schema's ``pos_embed`` enum.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

PE_CLASSES: dict[str, Any] = {}  # name -> PositionEmbedding subclass
PE_PROVIDERS: dict[str, str] = {}  # name -> module that registers it when imported
PE_FLAGS: dict[str, PEFlags] = {}  # name -> the capabilities its provider announced


@dataclass(frozen=True)
class PEFlags:
    """A PE's capabilities, the class attributes of the same names (vitpe.models.pos_embed), known
    before its module is loaded: the configuration checks read them without importing torch."""

    takes_mask: bool = False
    learnable_table: bool = False
    options: tuple[str, ...] = ()

    @classmethod
    def of(cls, pe: Any) -> PEFlags:
        return cls(pe.takes_mask, pe.learnable_table, tuple(pe.options))


def register_pe(cls: Any) -> Any:
    """Class decorator: make ``cls`` buildable under its ``name``."""
    if PE_CLASSES.get(cls.name, cls) is not cls:
        raise ValueError(f"position embedding {cls.name!r} is registered twice")
    announced = PE_FLAGS.get(cls.name)
    if announced is not None and announced != PEFlags.of(cls):
        raise ValueError(f"position embedding {cls.name!r}: the class declares {PEFlags.of(cls)}, but "
                         f"provide_pe announced {announced}")
    PE_CLASSES[cls.name] = cls
    return cls


def provide_pe(name: str, module: str, flags: PEFlags) -> None:
    """Announce that importing ``module`` registers the PE ``name``, which has ``flags``."""
    PE_PROVIDERS[name] = module
    PE_FLAGS[name] = flags


def pe_class(name: str) -> Any:
    """The PE class registered (or announced) under ``name``; loads its module (and torch)."""
    if name not in PE_CLASSES and name in PE_PROVIDERS:
        importlib.import_module(PE_PROVIDERS[name])
    if name not in PE_CLASSES:
        known = ", ".join(sorted({*PE_CLASSES, *PE_PROVIDERS}))
        raise ValueError(f"unknown position embedding {name!r} (known: {known}; a method's PE is known once "
                         "its package is imported)")
    return PE_CLASSES[name]


def pe_flags(name: str) -> PEFlags:
    """The capabilities of the PE ``name``: its class's once registered, else what its provider
    announced, without loading it."""
    if name in PE_CLASSES or name not in PE_FLAGS:
        return PEFlags.of(pe_class(name))
    return PE_FLAGS[name]


@dataclass(frozen=True)
class LearnablePESettings:
    """Options of DeiT's learnable PE (pos_embed ``learnable``, params ``supervised.<exp>.learnable``),
    known without loading torch; MJP's table has the same ``init`` (vitpe.mjp.settings.UnknownPESettings)."""

    init: str = "trunc_normal"  # DeiT's std 0.02; normal: N(0, 1), MJP's official table (the PE-init ablation)


# the built-in PEs (vitpe.models.pos_embed), announced as a method announces its own
for _name, _flags in (("learnable", PEFlags(learnable_table=True, options=("init",))), ("sincos", PEFlags()),
                      ("none", PEFlags())):
    provide_pe(_name, "vitpe.models.pos_embed", _flags)
