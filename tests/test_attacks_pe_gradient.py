"""The PE-gradient closed form on the STANDARD ViT block (vitpe.attacks.pe_gradient): exact recovery at
batch 1, refusal of models without a learnable PE table, the MJP-aware variant, and its params wiring."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from conftest import ROOT, make_attack_data, micro_params_file
from vitpe.attacks import metrics as M
from vitpe.attacks.pe_gradient import pe_gradient_adaptive, pe_gradient_closed_form
from vitpe.attacks.registry import ATTACKS, attacks_of_kind
from vitpe.attacks.runner import attack_settings
from vitpe.attacks.threat import ClientUpdate, ThreatModel, client_update, prepare_model
from vitpe.cli import main
from vitpe.config import load_params, validate_params
from vitpe.errors import ConfigError
from vitpe.mjp.dal import attach_dal
from vitpe.mjp.jigsaw import Jigsaw
from vitpe.models import build_vit
from vitpe.models.patches import patchify
from vitpe.models.weights import save_weights
from vitpe.runs import supervised_run
from vitpe.train.supervised import build_model

PATCH = 4


def _model(embed_dim: int = 64, pos_embed: str = "learnable", img: int = 16, dal: bool = False,
           global_pool: bool = False) -> torch.nn.Module:
    """A random micro ViT with the standard block 0 (norm1 and residuals), float64 end to end."""
    torch.manual_seed(0)
    cfg = dict(img_size=img, patch_size=PATCH, embed_dim=embed_dim, depth=2, num_heads=2, mlp_ratio=2.0)
    model = build_vit(cfg, 10, pos_embed, 0.0, first_block="standard", global_pool=global_pool)
    if dal:
        attach_dal(model, "nonlinear")
    return prepare_model(model).double()


def _image(img: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, img, img, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


def _kept_and_moved(images: torch.Tensor, update: ClientUpdate, patch: int = PATCH) -> tuple[float, float]:
    """Mean PSNR of a reconstruction's kept and shuffled patches, against what the client fed."""
    kept, moved = M.split_patch_psnr(_to01(images), _to01(update.fed), patch, update.shuffled)
    return kept.item(), moved.item()


def _plain(model: torch.nn.Module, x: torch.Tensor) -> ClientUpdate:
    return client_update(model, x, torch.tensor([3]), "plain", ThreatModel(), PATCH, seed=0)


@pytest.mark.parametrize("embed_dim, global_pool", [(64, False), (48, False), (64, True)])
def test_standard_block_image_is_recovered_exactly(embed_dim, global_pool):
    """N = 16 patches <= D: Gᵀ X = G_W has one solution, the fed patches (48 = 3·P², the narrowest
    width; global pooling: the fine-tuned MAE/AdPE classifiers' head)."""
    model, x = _model(embed_dim, global_pool=global_pool), _image()
    assert "norm1.weight" in dict(model.blocks[0].named_parameters())  # the standard block
    result = pe_gradient_closed_form(model, _plain(model, x))
    assert float((result.images - x).abs().max()) < 1e-6
    assert float(M.psnr(_to01(result.images), _to01(x))[0]) > 60
    assert result.info == {"pe_grad_rank": 16, "unknowns": 16} and bool(result.recovered.all())


def test_the_conv_weight_flattening_is_the_channels_first_patch_layout():
    """G_W = Σ g_i p_iᵀ holds with p_i = patchify(x, channels_first)[i] and the conv weight flattened
    as stored; with (p, q, c) patches it does not (the solve relies on the first)."""
    model, x = _model(), _image()
    update = _plain(model, x)
    g = update.gradients["pe.table"][0, 1:]
    weight_grad = update.gradients["patch_embed.proj.weight"].reshape(64, -1)
    assert torch.allclose(g.T @ patchify(x, PATCH, "channels_first")[0], weight_grad, rtol=0, atol=1e-12)
    assert not torch.allclose(g.T @ patchify(x, PATCH, "channels_last")[0], weight_grad, atol=1e-6)


@pytest.mark.parametrize("pos_embed", ["sincos", "none"])
def test_a_model_without_a_learnable_pe_table_is_refused_in_one_line(pos_embed):
    model = _model(pos_embed=pos_embed)
    with pytest.raises(ConfigError) as err:
        pe_gradient_closed_form(model, _plain(model, _image()))
    message = str(err.value)
    assert "\n" not in message and f"this model's PE is {pos_embed!r}, which has no PE-table gradient" in message
    with pytest.raises(ConfigError, match="which has no PE-table gradient"):  # before any client step
        ATTACKS["pe_gradient_adaptive"]({"solver": "gelsd", "use_unk_row": True, "rcond": "auto"}).check(model)


def test_batches_over_one_are_refused():
    model = _model()
    x = torch.cat([_image(), -_image()])
    update = client_update(model, x, torch.tensor([3, 4]), "plain", ThreatModel(batch_size=2), PATCH, seed=0)
    with pytest.raises(ConfigError, match="needs batch size 1, got 2"):
        pe_gradient_closed_form(model, update)


def _mjp_update(selected: list[int]) -> tuple[torch.nn.Module, ClientUpdate]:
    """An MJP client step (unknown PE + DAL loss) on the standard block, shuffling ``selected`` positions."""
    model, x = _model(pos_embed="mjp", dal=True), _image()
    order = torch.arange(16)
    order[selected] = torch.tensor(selected[1:] + selected[:1])  # a cyclic shift among the selected
    unk = torch.zeros(16, dtype=torch.bool)
    unk[selected] = True
    jigsaw = Jigsaw(order=order[None], unk=unk[None])
    return model, client_update(model, x, torch.tensor([3]), "shuffled", ThreatModel(), PATCH, seed=0,
                                dal_weight=0.01, jigsaw=jigsaw)


def test_mjp_adaptive_variant_recovers_the_kept_patches_not_the_shuffled_ones():
    selected = [5, 6, 9, 10]  # a 2x2 block, as MJP's block mask selects
    model, update = _mjp_update(selected)
    kept, _ = _kept_and_moved(pe_gradient_closed_form(model, update).images, update)
    adaptive = pe_gradient_adaptive(model, update)
    a_kept, a_moved = _kept_and_moved(adaptive.images, update)
    assert adaptive.info == {"detected_shuffled": 4, "used_unk_row": True}
    assert adaptive.recovered.tolist() == (~update.shuffled).tolist()
    assert a_kept > 25 and a_kept > kept + 5  # the DAL term removed, the unknown row used
    assert a_moved < a_kept - 10  # the shuffled positions only show their mean patch


def test_mjp_adaptive_variant_is_exact_with_one_shuffled_position():
    # one position on the unknown row: the unknown row's gradient is its token gradient exactly
    model, update = _mjp_update([6])
    result = pe_gradient_adaptive(model, update)
    assert float((result.images - update.fed).abs().max()) < 1e-6
    # without the unknown row the shuffled token's term g_j p_jᵀ is unexplained and spoils the kept patches
    kept, _ = _kept_and_moved(pe_gradient_adaptive(model, update, use_unk_row=False).images, update)
    assert kept < 50


@pytest.mark.paper_size
def test_paper_size_mjp_keeps_its_kept_patches_recoverable_to_the_adaptive_attacker():
    """The paper's MJP and DeiT-S (ViT-S/16, 224 px, random init) under the attack runner's threat at
    the paper scale: γ 0.1 shuffles about 19 of the 196 positions, whose mean patch then stands in for
    each of them. DeiT-S is recovered exactly; MJP's kept patches degrade to about 34 dB against the
    adaptive attacker (25 dB against the plain one): a visible reconstruction, not a float-level one."""
    params = load_params(ROOT / "params.yaml")
    params["scale"] = "paper"
    threat = attack_settings(params).threat
    assert threat.shuffle_ratio == 0.1
    torch.manual_seed(0)
    mjp, deit = supervised_run(params, "mjp"), supervised_run(params, "deit_s")
    mjp_model, deit_model = (prepare_model(build_model(run)).double() for run in (mjp, deit))
    patch, size = mjp.model.patch_size, mjp.model.img_size
    x = torch.nn.functional.interpolate(  # smooth, as natural images are at 16-px patches
        torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1,
        size=size, mode="bilinear", align_corners=False)
    label = torch.tensor([3])
    update = client_update(mjp_model, x, label, "shuffled", threat, patch, seed=0, dal_weight=mjp.dal.weight)
    assert 15 <= int(update.shuffled.sum()) <= 25
    adaptive = pe_gradient_adaptive(mjp_model, update)
    kept, moved = _kept_and_moved(adaptive.images, update, patch)
    naive, _ = _kept_and_moved(pe_gradient_closed_form(mjp_model, update).images, update, patch)
    assert adaptive.info["detected_shuffled"] == int(update.shuffled.sum())
    assert 28 < kept < 45 and moved < 20 and naive < kept - 5
    plain = client_update(deit_model, x, label, "plain", threat, patch, seed=0)
    recovered = pe_gradient_closed_form(deit_model, plain).images
    assert float((recovered - x).abs().max()) < 1e-6


def test_params_wiring_standard_models_run_the_standard_closed_forms():
    params = load_params(ROOT / "params.yaml")
    assert params["attacks"]["standard_closed_form"] == ["pe_gradient", "pe_gradient_adaptive"]
    assert attacks_of_kind("closed_form", standard_block=True) == ("pe_gradient", "pe_gradient_adaptive")
    settings = attack_settings(params)
    for kind in ("supervised", "finetuned"):
        assert settings.attacks_for(kind) == ("inverting_gradients", "gradvit", "pe_gradient", "pe_gradient_adaptive")
    assert settings.attacks_for("april") == ("april", "april_adaptive")
    for wrong, expected in (("april", "lists 'april', which needs APRIL's block 0"),
                            ("gradvit", "lists 'gradvit', which is a optimisation attack"),
                            ("dlg", "unknown attack 'dlg'")):
        bad = copy.deepcopy(params)
        bad["attacks"]["standard_closed_form"] = [wrong]
        with pytest.raises(ConfigError, match=expected):
            attack_settings(bad)
    batched = copy.deepcopy(params)
    batched["attacks"].update(april_models=[], closed_form=[], compare=[])
    batched["attacks"]["threat"]["batch_size"] = 2
    with pytest.raises(ConfigError, match=r"batch_size is 2, but attacks.standard_closed_form \(pe_gradient, "
                                          r"pe_gradient_adaptive\) needs 1"):
        validate_params(batched)
    batched["attacks"]["standard_closed_form"] = []
    validate_params(batched)
    unknown = copy.deepcopy(params)
    unknown["attacks"]["standard_closed_form"] = ["april_analytic"]
    with pytest.raises(ConfigError, match="standard_closed_form"):  # the schema's enum
        validate_params(unknown)


def test_attack_run_writes_the_standard_closed_form_summaries(tmp_path, capsys):
    """`vitpe attack run` on a micro DeiT-S: per-image rows and `<attack>_<client>_<metric>_<stat>` keys;
    the same model with a sin-cos PE is refused in one line naming it, before any output is written."""
    params_file = micro_params_file(tmp_path, make_attack_data(tmp_path / "data"))
    only = 'attacks={"optimisation": [], "metrics": {"lpips_alexnet": null, "bootstrap": 50}}'
    params = load_params(params_file, [only])
    weights = tmp_path / "deit_s.safetensors"
    torch.manual_seed(0)
    save_weights(build_model(supervised_run(params, "deit_s")), weights)
    out, table = tmp_path / "attacks.json", tmp_path / "images.csv"
    assert main(["attack", "run", "--params", str(params_file), "--set", only, "--experiment", "deit_s",
                 "--kind", "supervised", "--weights", str(weights), "--out", str(out), "--table", str(table),
                 "--recon", str(tmp_path / "recon.safetensors"), "--images", "2", "--device", "cpu"]) == 0
    metrics, rows = json.loads(out.read_text()), pd.read_csv(table)
    assert metrics["attacks"] == "pe_gradient,pe_gradient_adaptive" and metrics["pe_gradient_rcond"] == "auto"
    assert set(rows["attack"]) == {"pe_gradient", "pe_gradient_adaptive"} and len(rows) == 8
    for attack in ("pe_gradient", "pe_gradient_adaptive"):
        for mode in ("plain", "shuffled"):
            assert metrics[f"{attack}_{mode}_psnr_mean"] == pytest.approx(
                rows[(rows["attack"] == attack) & (rows["mode"] == mode)]["psnr"].mean())

    sincos = 'supervised={"deit_s": {"pos_embed": "sincos"}}'
    save_weights(build_model(supervised_run(load_params(params_file, [only, sincos]), "deit_s")), weights)
    refused = tmp_path / "refused"
    argv = ["attack", "run", "--params", str(params_file), "--set", only, "--set", sincos, "--experiment", "deit_s",
            "--kind", "supervised", "--weights", str(weights), "--out", str(refused / "attacks.json"),
            "--table", str(refused / "images.csv"), "--recon", str(refused / "recon.safetensors"),
            "--images", "2", "--device", "cpu"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "deit_s (supervised): attack pe_gradient: " in err and "'sincos'" in err
    assert not refused.exists()
