"""The position-embedding registry: capability flags, options, and MJP's PE provided by vitpe.mjp."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, micro_params
from vitpe.config import validate_params
from vitpe.errors import ConfigError
from vitpe.models import build_vit
from vitpe.models.pos_embed import PositionEmbedding, build_pos_embed, pe_class, register_pe
from vitpe.models.registry import PE_CLASSES, PE_FLAGS, PE_PROVIDERS, PEFlags, pe_flags, provide_pe
from vitpe.runs import supervised_run

MICRO = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0}


def test_flags_of_the_shipped_position_embeddings():
    flags = {name: (pe_class(name).takes_mask, pe_class(name).learnable_table, pe_class(name).options)
             for name in ("learnable", "sincos", "none", "mjp")}
    assert flags == {"learnable": (False, True, ("init",)), "sincos": (False, False, ()), "none": (False, False, ()),
                     "mjp": (True, True, ("init", "weight_decay"))}
    assert pe_flags("learnable") == PEFlags(learnable_table=True, options=("init",))  # announced = declared
    assert pe_class("mjp").__module__ == "vitpe.mjp.pos_embed"  # the method owns its PE
    with pytest.raises(ValueError, match=r"position embedding 'sincos' takes no option\(s\) \['init'\]"):
        build_pos_embed("sincos", 4, 32, init="normal")
    with pytest.raises(ValueError, match=r"position embedding 'learnable' takes no option\(s\) \['weight_decay'\]"):
        build_pos_embed("learnable", 4, 32, weight_decay=False)
    with pytest.raises(ValueError, match="unknown position-embedding init 'xavier' .known: trunc_normal, normal"):
        build_pos_embed("learnable", 4, 32, init="xavier")
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


def test_checking_a_dal_run_reads_the_pe_flags_without_importing_torch():
    """Snakemake parses params (and builds the runs) at every invocation: no torch for the DAL check."""
    code = ("import sys\n"
            "from vitpe.config import load_params\n"
            "from vitpe.runs import supervised_run\n"
            "run = supervised_run(load_params('params.yaml'), 'mjp')\n"
            "print(run.pos_embed, run.dal is not None, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["mjp", "True", "False"]


def test_a_class_whose_flags_differ_from_its_announcement_is_refused():
    provide_pe("announced_test", "vitpe.models.pos_embed", PEFlags(learnable_table=True))
    try:
        with pytest.raises(ValueError, match="'announced_test': the class declares .*learnable_table=False"):
            @register_pe
            class AnnouncedPosEmbed(PositionEmbedding):  # says no learnable table, announced with one
                name = "announced_test"
        assert "announced_test" not in PE_CLASSES
    finally:
        PE_FLAGS.pop("announced_test")
        PE_PROVIDERS.pop("announced_test")


def test_learnable_and_mjp_tables_take_their_init_the_same_way():
    """The PE-init ablation: `learnable: {init: ...}` and `unk: {init: ...}` reach their PE's constructor alike."""
    params = copy.deepcopy(micro_params())
    params["supervised"]["deit_s"]["learnable"] = {"init": "normal"}
    params["supervised"]["mjp"]["unk"] = {"init": "trunc_normal"}
    assert supervised_run(params, "deit_s").pe_options == {"init": "normal"}
    assert supervised_run(params, "mjp").pe_options == {"init": "trunc_normal", "weight_decay": True}
    assert supervised_run(params, "naive_shuffle").pe_options == {}  # DeiT's defaults
    for exp, key, owner, pos_embed in (("deit_s", "unk", "mjp", "learnable"), ("mjp", "learnable", "learnable", "mjp")):
        wrong = copy.deepcopy(params)
        wrong["supervised"][exp][key] = {"init": "normal"}
        message = rf"supervised\.{exp}\.{key}: only for pos_embed '{owner}', not '{pos_embed}'"
        with pytest.raises(ConfigError, match=message):
            supervised_run(wrong, exp)


def test_the_schema_knows_the_learnable_init():
    params = copy.deepcopy(micro_params())
    params["supervised"]["deit_s"]["learnable"] = {"init": "normal"}
    assert validate_params(params)["supervised"]["deit_s"]["learnable"] == {"init": "normal"}
    params["supervised"]["deit_s"]["learnable"] = {"init": "xavier"}
    with pytest.raises(ConfigError, match=r"supervised\.deit_s\.learnable\.init"):
        validate_params(params)
    params["supervised"]["deit_s"]["learnable"] = {"std": 1.0}
    with pytest.raises(ConfigError, match=r"unknown key 'std' under supervised\.deit_s\.learnable"):
        validate_params(params)
