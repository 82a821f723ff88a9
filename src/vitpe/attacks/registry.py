"""Every attack behind one interface: a registry from the names params.yaml lists
(``attacks.optimisation``, ``attacks.closed_form``, ``attacks.standard_closed_form``) to :class:`Attack`
classes.

An attack's ``kind`` says how it works: ``optimisation`` attacks (Inverting Gradients, GradViT) descend
on a gradient-matching objective (matching.py), several client batches per objective; ``closed_form``
attacks (APRIL and the PE-gradient closed form, each with its MJP-aware adaptive variant) solve for the
image one client batch at a time and need batch size 1. ``standard_block`` says whether an attack works
on the standard ViT block (every attacked model) or needs APRIL's block 0 (``attacks.april_models``).
Each attack records the settings it ran with in the metrics JSON (``recorded``).

This module imports no torch at load time: the workflow reads the names and kinds (budget.py) when
it plans the DAG; the implementations load when an attack is built.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from vitpe.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitpe.attacks.april import ClosedFormResult
    from vitpe.attacks.gradvit import BNStatisticsPrior, GradViTSettings
    from vitpe.attacks.inverting_gradients import IGSettings
    from vitpe.attacks.matching import InversionTask
    from vitpe.attacks.runner import AttackSettings
    from vitpe.attacks.threat import ClientUpdate

Kind = Literal["optimisation", "closed_form"]


@dataclass
class ClientCase:
    """One client batch of one client mode: the update the server saw and what the attacker derives."""

    first: int  # global index of its first image (the seed offset, as in a single job)
    update: ClientUpdate
    guess: torch.Tensor  # the attacker's labels
    detected: torch.Tensor | None  # zero PE-gradient rows
    mask: torch.Tensor | None  # the mask the attacker feeds the model (detected, if the model takes one)

    def task(self, seed: int) -> InversionTask:
        from vitpe.attacks.matching import InversionTask

        dal = self.update.dal_weight if self.mask is not None else 0.0
        return InversionTask(self.update.gradients, self.guess, tuple(self.update.fed.shape), seed + self.first,
                             self.mask, dal)


@dataclass(frozen=True)
class Reconstruction:
    images: torch.Tensor  # the client batch, normalised space
    objective: float  # the final matching objective (NaN for a closed form)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackContext:
    """What every attack of one run shares: the image box (normalised space), the patch size, the
    client batches per objective, the seed and the device."""

    box: tuple[torch.Tensor, torch.Tensor]
    patch: int
    chunk: int
    seed: int
    device: torch.device


class Attack(ABC):
    name: ClassVar[str]
    kind: ClassVar[Kind]
    standard_block: ClassVar[bool] = True  # False: needs APRIL's block 0 (no norm1, no residuals)

    @classmethod
    @abstractmethod
    def build(cls, settings: AttackSettings, context: AttackContext) -> Attack:
        """The attack configured by the resolved ``attacks:`` section."""

    @abstractmethod
    def reconstruct(self, model: nn.Module, cases: Sequence[ClientCase]) -> list[Reconstruction]:
        """One reconstruction per case (client batch), in order."""

    @abstractmethod
    def recorded(self) -> dict[str, Any]:
        """The settings this attack ran with, as flat metrics-JSON fields."""

    def check(self, model: nn.Module) -> None:
        """Raise a ConfigError (one line) when ``model`` cannot be attacked this way; by default any can."""


def _as_recorded(value: Any, as_text: bool) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if as_text else value


def prefixed_fields(prefix: str, values: Mapping[str, Any], names: Iterable[str],
                    text: Iterable[str] = ()) -> dict[str, Any]:
    """``<prefix>_<name>`` for each of ``names``; booleans and the ``text`` names as text (booleans lower
    case), the form the metrics JSON has always held them in."""
    text = set(text)
    return {f"{prefix}_{name}": _as_recorded(values[name], name in text) for name in names}


class _Optimisation(Attack):
    """Gradient matching over ``chunk`` client batches per objective (matching.py)."""

    kind = "optimisation"

    def __init__(self, context: AttackContext) -> None:
        self.context = context

    @abstractmethod
    def _batch(self, model: nn.Module, tasks: list[InversionTask]) -> list[Reconstruction]:
        """The attack on tasks that share one objective, one result per task."""

    def reconstruct(self, model: nn.Module, cases: Sequence[ClientCase]) -> list[Reconstruction]:
        from vitpe.attacks.matching import group_tasks

        tasks = [case.task(self.context.seed) for case in cases]
        results: list[Reconstruction | None] = [None] * len(tasks)
        for group in group_tasks(model, tasks, self.context.chunk):
            for i, result in zip(group, self._batch(model, [tasks[i] for i in group])):
                results[i] = result
        return results


class InvertingGradients(_Optimisation):
    name = "inverting_gradients"

    def __init__(self, settings: IGSettings, context: AttackContext) -> None:
        super().__init__(context)
        self.settings = settings

    @classmethod
    def build(cls, settings: AttackSettings, context: AttackContext) -> InvertingGradients:
        return cls(settings.ig, context)

    def _batch(self, model: nn.Module, tasks: list[InversionTask]) -> list[Reconstruction]:
        from vitpe.attacks.inverting_gradients import inverting_gradients_batch

        return inverting_gradients_batch(model, tasks, self.context.box, self.settings)

    def recorded(self) -> dict[str, Any]:
        return prefixed_fields("ig", vars(self.settings), ("iterations", "restarts", "lr", "tv"))


class GradViT(_Optimisation):
    name = "gradvit"

    def __init__(self, settings: GradViTSettings, context: AttackContext, prior: BNStatisticsPrior | None,
                 prior_status: str, prior_reason: str) -> None:
        super().__init__(context)
        self.settings, self.prior = settings, prior
        self.prior_status, self.prior_reason = prior_status, prior_reason

    @classmethod
    def build(cls, settings: AttackSettings, context: AttackContext) -> GradViT:
        from vitpe.attacks.gradvit import load_image_prior

        prior, status, reason = load_image_prior(settings.gradvit.image_prior, settings.gradvit.image_prior_arch)
        return cls(settings.gradvit, context, None if prior is None else prior.to(context.device), status, reason)

    def _batch(self, model: nn.Module, tasks: list[InversionTask]) -> list[Reconstruction]:
        from vitpe.attacks.gradvit import gradvit_batch

        return gradvit_batch(model, tasks, self.context.box, self.settings, self.context.patch, self.prior)

    def recorded(self) -> dict[str, Any]:
        from vitpe.attacks.gradvit import NO_PRIOR

        return {**prefixed_fields("gradvit", vars(self.settings), ("iterations", "match")),
                "gradvit_image_prior": self.prior_status, "gradvit_image_prior_reason": self.prior_reason,
                "gradvit_variant": "GradViT" if self.prior is not None else NO_PRIOR}


class _ClosedForm(Attack):
    """A solve per client batch from the PE-table gradient (april.py, pe_gradient.py)."""

    kind = "closed_form"

    def __init__(self, april: Mapping[str, Any]) -> None:
        self.april = dict(april)

    @classmethod
    def build(cls, settings: AttackSettings, context: AttackContext) -> _ClosedForm:
        return cls(settings.april)

    @abstractmethod
    def _solve(self, model: nn.Module, update: ClientUpdate) -> ClosedFormResult:
        """The closed-form result of one client update."""

    def reconstruct(self, model: nn.Module, cases: Sequence[ClientCase]) -> list[Reconstruction]:
        results = [self._solve(model, case.update) for case in cases]
        return [Reconstruction(result.images, float("nan"), result.info) for result in results]

    def recorded(self) -> dict[str, Any]:
        return prefixed_fields("april", self.april, ("known_cls", "solver", "rcond"), text=("rcond",))


class April(_ClosedForm):
    name = "april"
    standard_block = False

    def _solve(self, model: nn.Module, update: ClientUpdate) -> ClosedFormResult:
        from vitpe.attacks.april import april_closed_form

        a = self.april
        return april_closed_form(model, update, a["known_cls"], a["solver"], a["rcond"])


class AprilAdaptive(_ClosedForm):
    name = "april_adaptive"
    standard_block = False

    def _solve(self, model: nn.Module, update: ClientUpdate) -> ClosedFormResult:
        from vitpe.attacks.april_adaptive import april_adaptive

        a = self.april
        return april_adaptive(model, update, a["known_cls"], a["solver"], a["use_unk_row"], rcond=a["rcond"])


class _PEGradientForm(_ClosedForm):
    """The closed form from the PE-table and patch-embedding gradients (pe_gradient.py): any block 0, a
    learnable absolute PE table; APRIL's solver settings (``attacks.april``: solver, rcond)."""

    fields: ClassVar[tuple[str, ...]] = ("solver", "rcond")

    def check(self, model: nn.Module) -> None:
        from vitpe.attacks.pe_gradient import pe_table_name

        pe_table_name(model)

    def recorded(self) -> dict[str, Any]:
        return prefixed_fields(self.name, self.april, self.fields, text=("rcond",))


class PEGradient(_PEGradientForm):
    name = "pe_gradient"

    def _solve(self, model: nn.Module, update: ClientUpdate) -> ClosedFormResult:
        from vitpe.attacks.pe_gradient import pe_gradient_closed_form

        return pe_gradient_closed_form(model, update, self.april["solver"], self.april["rcond"])


class PEGradientAdaptive(_PEGradientForm):
    name = "pe_gradient_adaptive"
    fields = ("solver", "use_unk_row", "rcond")

    def _solve(self, model: nn.Module, update: ClientUpdate) -> ClosedFormResult:
        from vitpe.attacks.pe_gradient import pe_gradient_adaptive

        a = self.april
        return pe_gradient_adaptive(model, update, a["solver"], a["use_unk_row"], rcond=a["rcond"])


ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (InvertingGradients, GradViT, April, AprilAdaptive,
                                                              PEGradient, PEGradientAdaptive)}


def attack_class(name: str, where: str = "") -> type[Attack]:
    """The registered attack ``name``, or a ConfigError (prefixed by ``where``) naming the known ones."""
    if name not in ATTACKS:
        raise ConfigError(f"{where + ': ' if where else ''}unknown attack {name!r} (known: {', '.join(ATTACKS)})")
    return ATTACKS[name]


def attacks_of_kind(kind: Kind, standard_block: bool | None = None) -> tuple[str, ...]:
    """The registered attacks of ``kind`` (only those that do / do not work on the standard block, if given)."""
    return tuple(name for name, cls in ATTACKS.items()
                 if cls.kind == kind and standard_block in (None, cls.standard_block))
