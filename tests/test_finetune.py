"""Pretraining runs, encoder checkpoints, fine-tuning (layer decay, global pool) and linear probing."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import MICRO_MODEL, NUM_CLASSES, ROOT, log_records, make_image_folder
from safetensors.torch import load_file

from vitpe.config import load_params

from vitpe.mae.settings import DecoderConfig
from vitpe.models.spec import ViTSpec
from vitpe.runs import encoder_run, pretrain_run, with_recipe
from vitpe.errors import CheckpointError
from vitpe.evaluate.classification import evaluate_classification
from vitpe.evaluate.pretext import evaluate_pretext
from vitpe.train.finetune import load_encoder
from vitpe.train.pretrain import ENCODER_NAME, train_pretrain
from vitpe.models.irpe import RPEConfig
from vitpe.models.vit import build_vit
from vitpe.models.weights import load_weights, read_metadata, save_tensors
from vitpe.train.optim import build_optimizer
from vitpe.train.supervised import build_model, train_supervised

PRETRAIN_RECIPE = {"epochs": 2, "warmup_epochs": 1, "batch_size": 4, "lr_batch_divisor": 4, "checkpoint_every": 3}
ENCODER_RECIPE = {"epochs": 2, "warmup_epochs": 1, "batch_size": 4, "lr_batch_divisor": 4, "checkpoint_every": 3,
                  "eval_batch_size": 8}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def micro_pretrain(params, exp, data_root):
    run = pretrain_run(params, exp)
    model = ViTSpec(**{**MICRO_MODEL, "img_size": 8}) if run.method == "mae_plus" else ViTSpec(**MICRO_MODEL)
    crops = dataclasses.replace(run.crops, crop_size=model.img_size)
    return dataclasses.replace(with_recipe(run, **PRETRAIN_RECIPE), model=model,
                               decoder=DecoderConfig(embed_dim=16, depth=1, num_heads=2), crops=crops,
                               train_dir=data_root / "train", val_dir=data_root / "val")


def micro_encoder_run(params, exp, protocol, data_root, pretrained):
    run = encoder_run(params, exp, protocol, str(pretrained))
    return dataclasses.replace(with_recipe(run, **ENCODER_RECIPE), model=ViTSpec(**MICRO_MODEL),
                               num_classes=NUM_CLASSES, train_dir=data_root / "train", val_dir=data_root / "val")


@pytest.fixture(scope="module")
def pretrained(params, data_root, tmp_path_factory):
    """Micro pretraining of an absolute AdPE (coordinate) and a relative AdPE (coordinate) model."""
    out = {}
    for exp in ("adpe_abs_coordinate", "adpe_rel_coordinate"):
        folder = tmp_path_factory.mktemp(exp)
        assert train_pretrain(micro_pretrain(params, exp, data_root), folder, device="cpu") == folder / "model.safetensors"
        out[exp] = folder
    return out


def test_pretraining_writes_encoder_log_with_delta_and_resumes_bitwise(params, data_root, pretrained, tmp_path):
    folder = pretrained["adpe_abs_coordinate"]
    encoder = load_file(str(folder / ENCODER_NAME))
    assert encoder["pos_embed"].shape == (1, 1 + 4, 32)  # the 8-px crops: a 2 x 2 grid
    assert not any("adv_delta" in k or k.startswith("decoder") for k in encoder)
    meta = read_metadata(folder / ENCODER_NAME)
    assert meta["rpe"] is None and meta["pos_embed"] == "sincos" and meta["experiment"] == "adpe_abs_coordinate"
    records = [r for r in log_records(folder) if "loss" in r]  # the steps; the epochs' validations apart
    assert len(records) == 2 * 5 and all("adv_l2" in r and r["adv_l2"] <= 1.0 + 1e-6 for r in records)
    assert records[-1]["adv_l2"] > 0  # δ moved away from its zero initialisation
    assert not (folder / "state").exists()
    run = micro_pretrain(params, "adpe_abs_coordinate", data_root)
    train_pretrain(run, tmp_path, device="cpu", max_steps=4)
    truncated = {"steps": 4, "total_steps": 10}  # published marked as truncated; the state stays to continue
    assert read_metadata(tmp_path / ENCODER_NAME)["truncated"] == truncated == read_metadata(
        tmp_path / "model.safetensors")["truncated"] and (tmp_path / "state/state.pt").exists()
    train_pretrain(run, tmp_path, device="cpu")
    assert log_records(tmp_path) == log_records(folder)
    assert (tmp_path / ENCODER_NAME).read_bytes() == (folder / ENCODER_NAME).read_bytes()
    rel = read_metadata(pretrained["adpe_rel_coordinate"] / ENCODER_NAME)
    assert rel["rpe"] == "irpe_interp"
    assert "blocks.0.attn.rpe_k.lookup_table_weight" in load_file(str(pretrained["adpe_rel_coordinate"] / ENCODER_NAME))


def test_pretext_metrics_from_the_model_and_its_log(params, data_root, pretrained, tmp_path):
    folder = pretrained["adpe_abs_coordinate"]
    run = micro_pretrain(params, "adpe_abs_coordinate", data_root)
    metrics = evaluate_pretext(run, folder / "model.safetensors", folder / "log.jsonl", data_root / "val",
                               tmp_path / "pretext.json")
    again = evaluate_pretext(run, folder / "model.safetensors", folder / "log.jsonl", data_root / "val",
                             tmp_path / "again.json")
    assert metrics["val_loss"] == again["val_loss"] > 0  # seeded masks: reproducible
    assert metrics["num_images"] == NUM_CLASSES and metrics["steps"] == 10
    steps = [r for r in log_records(folder) if "loss" in r]
    assert metrics["final_adv_l2"] == steps[-1]["adv_l2"]
    # the held-out loss logged after each epoch: the last one is the final model's, on the same masks
    losses = [r["validation"]["loss"] for r in log_records(folder) if "validation" in r]
    assert len(losses) == 2 and losses[-1] == pytest.approx(metrics["val_loss"], rel=1e-6)
    assert json.loads((tmp_path / "pretext.json").read_text()) == metrics


@pytest.mark.parametrize("exp", ["adpe_abs_coordinate", "adpe_rel_coordinate"])
def test_finetune_and_linprobe_from_the_encoder_then_evaluate(params, data_root, pretrained, tmp_path, exp):
    encoder = pretrained[exp] / ENCODER_NAME
    for protocol in ("finetune", "linprobe"):
        run = micro_encoder_run(params, exp, protocol, data_root, encoder)
        out = tmp_path / protocol
        assert train_supervised(run, out, device="cpu") == out / "model.safetensors"
        metrics = evaluate_classification(run, out / "model.safetensors", tmp_path / f"{protocol}.json")
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and metrics["num_images"] == NUM_CLASSES
        state = load_file(str(out / "model.safetensors"))
        if protocol == "finetune":
            assert "fc_norm.weight" in state and "norm.weight" not in state
        else:
            assert {"head.0.running_mean", "head.1.weight"} <= set(state)
            # frozen encoder: the probe's weights equal the pretrained encoder's (PE resized)
            pretrained_state = load_file(str(encoder))
            assert torch.equal(state["blocks.0.attn.qkv.weight"], pretrained_state["blocks.0.attn.qkv.weight"])
    # the run rebuilds the fine-tuned classifier (as `vitpe attack run --kind finetuned` does)
    model = build_model(micro_encoder_run(params, exp, "finetune", data_root, encoder))
    load_weights(model, tmp_path / "finetune/model.safetensors")
    assert model.global_pool and model.fc_norm is not None and (model.rpe is not None) == ("rel" in exp)


def test_load_encoder_resizes_the_pe_matches_every_key_and_names_mismatches(tmp_path):
    torch.manual_seed(0)
    small = dict(MICRO_MODEL, img_size=8)
    source = build_vit(small, 0, "sincos", 0.0)
    save_tensors({k: v for k, v in source.state_dict().items() if k != "pe.table"} | {"pos_embed": source.pe.table},
                 tmp_path / "enc.safetensors", {"rpe": None})
    target = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0, global_pool=True)
    loaded = load_encoder(target, tmp_path / "enc.safetensors")
    assert loaded == len(source.state_dict()) - 2  # all but the final norm (dropped by global pooling)
    assert target.pe.table.shape == (1, 17, 32)
    assert torch.equal(target.pe.table[0, 0], source.pe.table[0, 0])  # the CLS row is kept
    assert torch.equal(target.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    wrong = build_vit(dict(MICRO_MODEL, embed_dim=16), NUM_CLASSES, "learnable", 0.0, global_pool=True)
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*blocks\.0"):
        load_encoder(wrong, tmp_path / "enc.safetensors")
    rpe_target = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", 0.0, global_pool=True,
                           rpe=RPEConfig())
    with pytest.raises(CheckpointError, match="pretrained with rpe None"):
        load_encoder(rpe_target, tmp_path / "enc.safetensors")


def test_layer_decay_scales_match_mae_lr_decay():
    model = build_vit(dict(MICRO_MODEL, depth=3), NUM_CLASSES, "learnable", 0.0, global_pool=True)
    optimizer = build_optimizer(model, 1.0, 0.05, layer_decay=0.65)
    scale_of = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    # MAE lr_decay.py: num_layers = depth + 1; scale = 0.65 ** (num_layers - layer_id)
    assert scale_of[id(named["pe.table"])] == pytest.approx(0.65 ** 4)
    assert scale_of[id(named["cls_token"])] == pytest.approx(0.65 ** 4)
    assert scale_of[id(named["blocks.0.attn.qkv.weight"])] == pytest.approx(0.65 ** 3)
    assert scale_of[id(named["blocks.2.mlp.fc1.weight"])] == pytest.approx(0.65 ** 1)
    assert scale_of[id(named["head.weight"])] == 1.0 and scale_of[id(named["fc_norm.weight"])] == 1.0
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(named["pe.table"])] == 0 and decay[id(named["blocks.0.attn.qkv.weight"])] == 0.05


def test_a_classifier_or_a_folder_given_as_the_encoder_is_one_line(embedded, tmp_path, capsys):
    """A fine-tuned classifier passed as --pretrained loaded with its head silently replaced; a folder is
    named as such. Either: exit 2, one line, no output folder."""
    import yaml

    from vitpe.cli import main
    from vitpe.models.weights import save_weights

    params, _ = embedded
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    model = dict(params["scales"]["tiny"]["pretrain"]["model"])
    classifier = tmp_path / "model.safetensors"
    save_weights(build_vit(model, NUM_CLASSES, "learnable", 0.0, global_pool=True), classifier, {"model": model})
    (tmp_path / "folder").mkdir()
    for given, expected in ((classifier, f"{classifier}: a classifier (it has a head: head.weight), not a pretraining "
                                         "encoder; expected the encoder.safetensors a pretraining run writes"),
                            (tmp_path / "folder", f"{tmp_path / 'folder'}: a folder, expected a weights file "
                                                  "(a .safetensors file)")):
        out = tmp_path / "ft"
        rc = main(["train", "finetune", "--params", str(tmp_path / "params.yaml"), "--experiment", "mae",
                   "--pretrained", str(given), "--out", str(out), "--max-steps", "1"])
        assert rc == 2 and capsys.readouterr().err == f"error: {expected}\n"
        assert not out.exists()
