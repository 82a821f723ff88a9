"""The position-embedding registry: capability flags, options, and MJP's PE provided by vitpe.mjp."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, micro_params
from vitpe.errors import ConfigError
from vitpe.models import build_vit
from vitpe.models.pos_embed import PositionEmbedding, build_pos_embed, pe_class, register_pe
from vitpe.models.registry import PE_CLASSES
from vitpe.runs import supervised_run

MICRO = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def test_flags_of_the_shipped_position_embeddings():
    flags = {name: (pe_class(name).takes_mask, pe_class(name).learnable_table, pe_class(name).options)
             for name in ("learnable", "sincos", "none", "mjp")}
    assert flags == {"learnable": (False, True, ()), "sincos": (False, False, ()), "none": (False, False, ()),
                     "mjp": (True, True, ("init", "weight_decay"))}
    assert pe_class("mjp").__module__ == "vitpe.mjp.pos_embed"  # the method owns its PE
    with pytest.raises(ValueError, match=r"position embedding 'learnable' takes no option\(s\) \['init'\]"):
        build_pos_embed("learnable", 4, 32, init="normal")
    with pytest.raises(ValueError, match="unknown position embedding 'rope'"):
        pe_class("rope")


@pytest.mark.parametrize("first", ["vitpe.runs", "vitpe.mjp", "vitpe.train.supervised"])
def test_an_mjp_model_builds_whichever_module_was_imported_first(first):
    """vitpe.models never imports vitpe.mjp; importing any module that reads MJP's settings suffices."""
    code = (f"import {first}\n"
            "from vitpe.models import build_vit\n"
            f"m = build_vit({MICRO!r}, 3, 'mjp', 0.0, pe_options={{'init': 'trunc_normal'}})\n"
            "print(type(m.pe).__name__, tuple(m.pe.unk.shape))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["UnknownPosEmbed", "(1,", "1,", "32)"]


def test_a_new_pe_is_one_registered_class_and_dal_follows_its_flags():
    @register_pe
    class HalfPosEmbed(PositionEmbedding):  # a learnable table scaled by one half
        name = "half_test"
        learnable_table = True

        def __init__(self, grid_size: int, dim: int) -> None:
            super().__init__(grid_size, dim)
            self.table = torch.nn.Parameter(torch.ones(1, self.num_patches + 1, dim))

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            self._reject_mask(mask)
            return x + 0.5 * self.table

    try:
        model = build_vit(MICRO, 3, "half_test", 0.0)
        assert isinstance(model.pe, HalfPosEmbed) and "pe.table" in dict(model.named_parameters())
        params = copy.deepcopy(micro_params())
        params["supervised"]["deit_s"].update(pos_embed="half_test", dal={})
        assert supervised_run(params, "deit_s").dal.head == "nonlinear"  # a learnable table: DAL allowed
        HalfPosEmbed.learnable_table = False
        with pytest.raises(ConfigError, match=r"supervised\.deit_s\.dal: DAL regresses a learnable PE table"):
            supervised_run(params, "deit_s")
    finally:
        PE_CLASSES.pop("half_test")
