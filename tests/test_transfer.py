"""Downstream transfer: key conversion with asserted counts, PE interpolation, the ViTDet
layout, layer decay, one CPU training + evaluation of each task on the micro embedded data, the
checkpoints the runner writes (weights_only), the SLURM resources and the table block."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import deep_update, micro_params, run
from vitpe.errors import CheckpointError, ConfigError
from vitpe.models.vit import VisionTransformer
from vitpe.models.weights import read_metadata, read_weights, save_weights
from vitpe.runs import dependency_record, transfer_run, with_recipe

pytestmark = pytest.mark.mm

ENCODER = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
TASK_ARCH = {k: v for k, v in ENCODER.items() if k != "img_size"}
# one optimizer step and one evaluation of each task (the rest of the tiny recipe unchanged)
MICRO_TRANSFER = {
    "ade20k": {"iters": 2, "batch_size": 2, "warmup_iters": 1, "log_every": 1, "checkpoint_every": 1},
    "coco": {"iters": 2, "batch_size": 2, "warmup_iters": 1, "milestones": [1], "log_every": 1,
             "checkpoint_every": 1},
}


def make_encoder(path: Path, rpe: str | None = None, seed: int = 0, scale: str = "tiny", **model: object) -> Path:
    """A pretraining-format encoder (what the train_pretrain rule writes): sin-cos PE, no head."""
    from vitpe.models.irpe import rpe_config

    arch = {**ENCODER, **model}
    torch.manual_seed(seed)
    vit = VisionTransformer(**arch, num_classes=0, pos_embed="sincos", rpe=rpe_config(rpe))
    save_weights(vit, path, metadata={"experiment": "mae", "scale": scale, "model": arch,
                                      "pos_embed": "sincos", "rpe": rpe})
    return path


@pytest.fixture
def encoder(tmp_path: Path) -> Path:
    return make_encoder(tmp_path / "encoder.safetensors")


def seg_backbone(**kw):
    from vitpe.transfer.backbones import ViTBackbone

    return ViTBackbone(**{"img_size": 32, **TASK_ARCH, **kw})


def det_backbone(**kw):
    from vitpe.transfer.backbones import ViTDetBackbone

    return ViTDetBackbone(**{"img_size": 32, **TASK_ARCH, "window_size": 4, "global_blocks": [-1], **kw})


# --- conversion ------------------------------------------------------------------------------------

def test_encoder_loads_into_the_segmentation_backbone_with_every_key_matched(encoder):
    from vitpe.models.pos_embed import resize_pos_embed

    state = read_weights(encoder)
    backbone = seg_backbone()
    report = backbone.load_encoder(encoder)
    # 4 embedding tensors + 12 per block + final norm (2): all but the final norm load, nothing is new
    assert len(state) == 4 + 12 * ENCODER["depth"] + 2
    assert len(report.loaded) == len(state) - 2 and report.unused == ("norm.bias", "norm.weight") and not report.new
    assert set(report.loaded) | set(report.unused) == set(state)
    loaded = backbone.vit.state_dict()
    assert len(loaded) == len(report.loaded)  # every backbone tensor came from the checkpoint
    for key in report.loaded:
        ours = loaded["pe.table" if key == "pos_embed" else key]
        expected = resize_pos_embed(state[key], (8, 8)) if key == "pos_embed" else state[key]
        assert torch.equal(ours, expected), key
    assert backbone.vit.pe.table.shape == (1, 1 + 8 * 8, 32)
    assert torch.equal(backbone.vit.pe.table[0, 0], state["pos_embed"][0, 0])  # CLS row kept


def test_encoder_loads_into_the_vitdet_backbone_with_every_key_matched(encoder):
    state = read_weights(encoder)
    backbone = det_backbone()
    report = backbone.load_encoder(encoder)
    assert report.unused == ("cls_token", "norm.bias", "norm.weight")
    assert len(report.loaded) == len(state) - 3
    # ViTDet's decomposed relative-position tables (2 per block) are new and start at zero
    assert len(report.new) == 2 * ENCODER["depth"] and all(".rel_pos_" in k for k in report.new)
    own = backbone.state_dict()
    assert len(own) == len(report.loaded) + len(report.new)
    assert all(torch.equal(own[k], state[k]) for k in report.loaded if k != "pos_embed")
    assert all(not own[k].any() for k in report.new)


def test_mmseg_mae_extras_are_new_and_start_as_the_identity(encoder):
    """BEiT relative position bias + layer scale (mmseg's MAE backbone): every encoder key still loads,
    the extras are the only new tensors, and at load the network computes what it computes without them."""
    plain, extras = seg_backbone(), seg_backbone(rel_pos_bias=True, layer_scale=1.0)
    assert not plain.load_encoder(encoder).new
    report = extras.load_encoder(encoder)
    depth = ENCODER["depth"]
    assert len(report.loaded) == len(read_weights(encoder)) - 2 and len(report.new) == 3 * depth
    assert {k.split(".", 2)[2] for k in report.new} == {"attn.relative_position_bias_table", "ls1.gamma", "ls2.gamma"}
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(plain.eval()(x), extras.eval()(x)):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="relative position bias built for a"):
        extras(torch.randn(1, 3, 32, 48))


def test_wrong_size_checkpoint_fails_naming_the_mismatched_keys(tmp_path, encoder):
    wide = make_encoder(tmp_path / "wide.safetensors", embed_dim=48, num_heads=3)
    for build in (seg_backbone, det_backbone):
        with pytest.raises(CheckpointError) as err:
            build().load_encoder(wide)
        message = str(err.value)
        assert "shape mismatches" in message and "blocks.0.attn.qkv.weight (144, 48) vs backbone (96, 32)" in message
        assert str(wide) in message
    deep = make_encoder(tmp_path / "deep.safetensors", depth=3)
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.2\."):
        seg_backbone().load_encoder(deep)
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.2\."):
        seg_backbone(depth=3).load_encoder(encoder)


def test_pos_embed_resize_matches_mmseg_and_keeps_cls():
    from mmseg.models.backbones.vit import VisionTransformer as MMSegViT

    from vitpe.models.pos_embed import resize_pos_embed

    table = torch.randn(1, 1 + 4 * 4, 8)
    ours = resize_pos_embed(table, (8, 8))
    theirs = MMSegViT.resize_pos_embed(table, (8, 8), (4, 4), "bicubic")
    assert torch.allclose(ours, theirs, atol=1e-6) and torch.equal(ours[:, 0], table[:, 0])
    assert resize_pos_embed(table, (4, 4)) is table


def test_rpe_encoders_transfer_to_ade20k_and_are_refused_by_coco(tmp_path):
    rpe = make_encoder(tmp_path / "rpe.safetensors", rpe="irpe")
    state = read_weights(rpe)
    assert any(k.endswith("rpe_k.lookup_table_weight") for k in state)
    report = seg_backbone(rpe="irpe").load_encoder(rpe)
    assert len(report.loaded) == len(state) - 2  # the iRPE tables load too
    features = seg_backbone(rpe="irpe")(torch.randn(1, 3, 32, 32))
    assert [f.shape for f in features] == [(1, 32, 8, 8)] * 4
    with pytest.raises(CheckpointError, match="built with rpe=None"):
        seg_backbone().load_encoder(rpe)
    with pytest.raises(CheckpointError, match=r"RPE encoders \(rpe='irpe'\) cannot transfer to COCO"):
        det_backbone().load_encoder(rpe)


# --- architecture ----------------------------------------------------------------------------------

def test_block_layouts_follow_mae_and_vitdet():
    from vitpe.transfer.backbones import mae_out_indices, resolve_blocks, vitdet_global_blocks

    assert mae_out_indices(12) == [3, 5, 7, 11] and vitdet_global_blocks(12) == [2, 5, 8, 11]
    assert mae_out_indices(24) == [7, 11, 15, 23] and vitdet_global_blocks(24) == [5, 11, 17, 23]
    assert mae_out_indices(3) == [0, 1, 1, 2]
    assert resolve_blocks([-1], 3, [], "x") == [2]
    with pytest.raises(ConfigError, match="block 3 does not exist"):
        resolve_blocks([3], 3, [], "x")
    backbone = det_backbone()
    assert [b.window_size for b in backbone.blocks] == [4, 0]
    features = seg_backbone(depth=3)(torch.randn(2, 3, 32, 48))  # other sizes: PE resized on the fly
    assert len(features) == 4 and features[1] is features[2] and features[0].shape == (2, 32, 8, 12)


def test_global_vitdet_block_equals_the_vit_block_it_loads_from():
    """Same parameter names, same maths: with global attention and no relative position, a ViTDet
    block computes exactly the timm ViT block of the pretraining encoder."""
    from timm.layers import LayerNorm
    from timm.models.vision_transformer import Block
    from timm.models.vision_transformer_sam import Block as WindowBlock

    torch.manual_seed(0)
    vit_block = Block(32, 2, 2.0, qkv_bias=True, norm_layer=LayerNorm).eval()
    window_block = WindowBlock(32, 2, 2.0, qkv_bias=True, norm_layer=LayerNorm).eval()
    window_block.load_state_dict(vit_block.state_dict(), strict=True)
    tokens = torch.randn(2, 16, 32)
    assert torch.allclose(window_block(tokens.reshape(2, 4, 4, 32)).reshape(2, 16, 32), vit_block(tokens), atol=1e-5)


def test_simple_feature_pyramid_levels():
    from vitpe.transfer.simple_fpn import SimpleFeaturePyramid

    outs = SimpleFeaturePyramid(32, out_channels=16)((torch.randn(1, 32, 8, 8),))
    assert [tuple(o.shape[-2:]) for o in outs] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert all(o.shape[1] == 16 for o in outs)


def test_layer_decay_constructor_groups(encoder):
    from vitpe.transfer.optim import LayerDecayConstructor

    model = torch.nn.Module()
    model.backbone = seg_backbone()
    model.head = torch.nn.Linear(32, 4)
    cfg = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05))
    wrapper = LayerDecayConstructor(cfg, dict(layer_decay_rate=0.5, decay_pos_embed=False))(model)
    lookup = {id(p): g for g in wrapper.optimizer.param_groups for p in g["params"]}
    vit = model.backbone.vit
    depth = ENCODER["depth"]
    assert lookup[id(vit.patch_embed.proj.weight)]["lr"] == pytest.approx(1e-3 * 0.5 ** (depth + 1))
    assert lookup[id(vit.blocks[0].attn.qkv.weight)]["lr"] == pytest.approx(1e-3 * 0.5 ** depth)
    assert lookup[id(vit.blocks[1].mlp.fc1.weight)]["lr"] == pytest.approx(1e-3 * 0.5)
    assert lookup[id(model.head.weight)]["lr"] == pytest.approx(1e-3)
    assert lookup[id(model.head.weight)]["weight_decay"] == 0.05
    assert lookup[id(model.head.bias)]["weight_decay"] == 0.0 and lookup[id(vit.blocks[0].norm1.weight)]["weight_decay"] == 0.0
    assert lookup[id(vit.pe.table)]["weight_decay"] == 0.0 and lookup[id(vit.cls_token)]["weight_decay"] == 0.0
    decayed = LayerDecayConstructor(cfg, dict(layer_decay_rate=0.5, decay_pos_embed=True))(model)
    assert {id(vit.pe.table): g for g in decayed.optimizer.param_groups for p in g["params"]
            if p is vit.pe.table}[id(vit.pe.table)]["weight_decay"] == 0.05


# --- one training run + evaluation of each task on CPU ---------------------------------------------

def micro_transfer_params(embedded_params: dict) -> dict:
    return deep_update(embedded_params, {"scales": {"tiny": {"transfer": MICRO_TRANSFER}}})


@pytest.mark.parametrize("task", ["ade20k", "coco"])
def test_train_and_evaluate_on_the_embedded_data(task, embedded, tmp_path, monkeypatch, encoder):
    from mmengine.runner import Runner

    from vitpe.config import validate_params
    from vitpe.transfer.runner import METRIC_KEYS, run_transfer

    params = validate_params(micro_transfer_params(embedded[0]))
    evaluated: dict = {}
    test = Runner.test

    def spy(self):  # what the evaluator returned
        evaluated.update(test(self))
        return evaluated

    monkeypatch.setattr(Runner, "test", spy)
    work, out, weights = tmp_path / "work", tmp_path / f"{task}.json", tmp_path / "model.safetensors"
    run = transfer_run(params, task, "mae")
    run_transfer(run, encoder, work, out, weights_out=weights, keep_state=True)
    metrics = json.loads(out.read_text())
    assert read_metadata(weights) == dependency_record(run)  # the fine-tuned model says what it was trained by
    assert metrics[f"{task}_status"] == "ok" and metrics["scale"] == "tiny" and metrics[f"{task}_iters"] == 2
    for theirs, ours in METRIC_KEYS[task].items():  # the evaluator's numbers, not recomputed
        assert str(metrics[ours]) == str(evaluated[theirs])  # as printed (mmseg: numpy float32)
    if task == "ade20k":
        assert 0.0 <= metrics["ade20k_miou"] <= 100.0 and 0.0 < metrics["ade20k_aacc"] <= 100.0
    else:
        assert -1.0 <= metrics["coco_ap_box"] <= 1.0 and -1.0 <= metrics["coco_ap_mask"] <= 1.0
    # what the runner wrote loads with weights_only=True and holds the trained iteration
    state = torch.load(work / "state" / "last.pth", map_location="cpu", weights_only=True)
    assert state["meta"]["iter"] == 2 and set(state) >= {"state_dict", "optimizer", "param_schedulers", "message_hub"}
    final = read_weights(weights)
    prefix = "backbone.vit." if task == "ade20k" else "backbone."
    assert torch.equal(final[prefix + "blocks.0.attn.qkv.weight"], state["state_dict"][prefix + "blocks.0.attn.qkv.weight"])
    # a rerun resumes from that state (mmengine's resume, through hooks.load_training_state)
    evaluated.clear()
    again = run_transfer(run, encoder, work, tmp_path / "again.json")
    assert again == metrics and not (work / "state").exists()


def test_preemption_saves_state_then_the_rerun_resumes(embedded, tmp_path, monkeypatch, encoder):
    from vitpe.config import validate_params
    from vitpe.errors import Preempted
    from vitpe.transfer.hooks import TensorCheckpointHook
    from vitpe.transfer.runner import run_transfer

    run = with_recipe(transfer_run(validate_params(micro_transfer_params(embedded[0])), "ade20k", "mae"),
                      checkpoint_every=100)
    before_train = TensorCheckpointHook.before_train

    def signalled(self, runner):  # as if SLURM sent SIGTERM before the first iteration ended
        before_train(self, runner)
        self._guard.received = "SIGTERM"

    uninterrupted = run_transfer(run, encoder, tmp_path / "work0", tmp_path / "ade20k0.json",
                                 weights_out=tmp_path / "model0.safetensors")
    monkeypatch.setattr(TensorCheckpointHook, "before_train", signalled)
    work, out, weights = tmp_path / "work", tmp_path / "ade20k.json", tmp_path / "model.safetensors"
    with pytest.raises(Preempted, match="SIGTERM received: state saved at iteration 1"):
        run_transfer(run, encoder, work, out, weights_out=weights)
    assert not out.exists() and not weights.exists()
    assert torch.load(work / "state" / "last.pth", weights_only=True)["meta"]["iter"] == 1
    monkeypatch.setattr(TensorCheckpointHook, "before_train", before_train)
    metrics = run_transfer(run, encoder, work, out, weights_out=weights)
    log = "".join(p.read_text() for p in work.glob("*/*.log"))
    assert "resumed epoch: 0, iter: 1" in log and json.loads(out.read_text()) == metrics
    assert "metainfo from the resumed checkpoint is different" not in log  # it says which dataset it saw
    # the resumed run repeats the uninterrupted one bit for bit (FIDELITY row 72)
    resumed, whole = read_weights(weights), read_weights(tmp_path / "model0.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert metrics == uninterrupted
    # and so do its dvclive curves (transfer/live.py), wall-clock scalars aside
    curves = [{str(t.relative_to(w)): t.read_text() for t in sorted(w.rglob("*.tsv")) if "time" not in t.name}
              for w in (tmp_path / "work0" / "dvclive", work / "dvclive")]
    assert curves[0] == curves[1] and "plots/metrics/loss.tsv" in curves[0], sorted(curves[0])


def test_a_second_transfer_on_a_live_work_folder_is_refused(embedded, tmp_path, encoder):
    from vitpe.config import validate_params
    from vitpe.errors import InUse
    from vitpe.train.lock import LOCK_NAME, exclusive_lock
    from vitpe.transfer.runner import run_transfer

    run = transfer_run(validate_params(micro_transfer_params(embedded[0])), "ade20k", "mae")
    work, out = tmp_path / "work", tmp_path / "ade20k.json"
    state = work / "state" / "last.pth"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"the live run's state")
    with exclusive_lock(work / "state" / LOCK_NAME, "the live transfer"):
        with pytest.raises(InUse, match=rf"{re.escape(str(work))} \(a transfer work folder\) is in use .*pid {os.getpid()}"):
            run_transfer(run, encoder, work, out)
    assert state.read_bytes() == b"the live run's state" and not out.exists()
    assert not list(work.glob("2*"))  # no mmengine log folder either


ROUNDS = ((True, False), (False, True), (False, False))  # which rank saw the signal, per iteration


def _agree_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from vitpe.train.distributed import any_rank
    from vitpe.transfer.hooks import dist_env

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        Path(out, str(rank)).write_text(" ".join(str(any_rank(flags[rank], dist_env())) for flags in ROUNDS))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_preemption_whichever_saw_the_signal(tmp_path):
    """Under torchrun a signal may reach one rank an iteration before another: every rank stops together
    (and takes part in the state's RNG gather), or one would train on alone and hang."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_agree_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / str(rank)).read_text() for rank in (0, 1)] == ["True True False"] * 2


class _RunsCode:
    """A pickle that creates a folder when unpickled: what a planted state file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("planted", ["pickle", "truncated"])
def test_resume_loads_the_state_weights_only_whatever_the_environment(planted, embedded, tmp_path, monkeypatch,
                                                                      encoder):
    from vitpe.config import validate_params
    from vitpe.transfer.runner import run_transfer

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # makes a bare torch.load unpickle anything
    params = validate_params(micro_transfer_params(embedded[0]))
    work, out, marker = tmp_path / "work", tmp_path / "ade20k.json", tmp_path / "code-ran"
    state = work / "state" / "last.pth"
    state.parent.mkdir(parents=True)
    torch.save({"meta": {"epoch": 0, "iter": 1}, "state_dict": {}, "payload": _RunsCode(marker)}, state)
    if planted == "truncated":  # a state cut short by a full disk
        state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{re.escape(str(state))}: not a readable transfer training state") as err:
        run_transfer(transfer_run(params, "ade20k", "mae"), encoder, work, out)
    assert "\n" not in str(err.value)
    if planted == "pickle":
        assert "pickles objects other than tensors and plain types" in str(err.value)
    assert not marker.exists() and not out.exists() and state.exists()


@pytest.mark.paper_size
def test_config_inherits_the_upstream_recipes(embedded, tmp_path, encoder):
    from vitpe.transfer.runner import build_config

    params = deep_update(embedded[0], {"scale": "paper", "data": {"real": {
        "ade20k": str(embedded[1] / "ade20k"), "coco": str(embedded[1] / "coco")}}})
    encoder16 = make_encoder(tmp_path / "b16.safetensors", scale="paper", img_size=224, patch_size=16, depth=12)
    ade = build_config(transfer_run(params, "ade20k", "mae"), encoder16, tmp_path / "a", cuda=True, world=8)
    assert ade.optim_wrapper.type == "AmpOptimWrapper" and ade.optim_wrapper.optimizer.lr == 1e-4
    assert ade.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65 and ade.train_dataloader.batch_size == 2
    assert ade.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    assert ade.model.decode_head.norm_cfg.type == "SyncBN" and ade.launcher == "pytorch"
    assert ade.param_scheduler[0]["end"] == 1500 and ade.param_scheduler[1]["end"] == 160000
    assert ade.model.decode_head.type == "UPerHead" and ade.model.neck.type == "Feature2Pyramid"
    coco = build_config(transfer_run(params, "coco", "mae"), encoder16, tmp_path / "c", cuda=True, world=8)
    assert coco.train_dataloader.batch_size == 8 and coco.train_cfg.max_iters == 184375
    assert coco.model.rpn_head.anchor_generator.strides == [4, 8, 16, 32, 64]
    assert coco.model.roi_head.bbox_head.type == "Shared4Conv1FCBBoxHead" and coco.model.rpn_head.num_convs == 2
    assert coco.model.backbone.global_blocks == [2, 5, 8, 11] and coco.model.backbone.window_size == 14
    assert coco.val_evaluator.type == "CocoMetric" and coco.val_evaluator.metric == ["bbox", "segm"]
    cpu = build_config(transfer_run(params, "ade20k", "mae"), encoder16, tmp_path / "a", cuda=False, world=1)
    assert cpu.optim_wrapper.type == "OptimWrapper" and cpu.model.decode_head.norm_cfg.type == "BN"
    # the paper-scale models build from these configs (registries, heads, LN2d in the ViTDet heads)
    from mmengine.registry import init_default_scope

    from vitpe.transfer import mm_det, mm_seg  # noqa: F401

    for task in ("ade20k", "coco"):
        cfg = build_config(transfer_run(params, task, "mae"), encoder16, tmp_path / task, cuda=False, world=1)
        scope = "mmseg" if task == "ade20k" else "mmdet"
        init_default_scope(scope)
        registry = mm_seg.MODELS if task == "ade20k" else mm_det.MODELS
        model = registry.build(cfg.model)
        assert type(model.backbone).__name__ == ("ViTBackbone" if task == "ade20k" else "ViTDetBackbone")
        assert model.backbone.grid == (32 if task == "ade20k" else 64)
    with pytest.raises(CheckpointError, match="pretrained at the 'tiny' scale"):
        build_config(transfer_run(params, "ade20k", "mae"), encoder, tmp_path / "a", cuda=False, world=1)


def test_cli_reports_a_bad_encoder_in_one_line(tmp_path):
    from conftest import ROOT

    bad = tmp_path / "encoder.safetensors"
    bad.write_bytes(b"not safetensors")
    proc = run(["vitpe", "transfer", "coco", "--experiment", "mae", "--encoder", str(bad), "--work-dir",
                str(tmp_path / "w"), "--out", str(tmp_path / "coco.json")], ROOT, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad}: not a readable")
    assert not (tmp_path / "coco.json").exists()


def test_transfer_names_must_be_pretraining_experiments():
    from conftest import micro_params
    from vitpe.config import validate_params

    params = micro_params()
    params["experiments"]["transfer"] = ["deit_s"]
    with pytest.raises(ConfigError, match="experiments.transfer names unknown experiment 'deit_s'"):
        validate_params(params)


# --- workflow and table ----------------------------------------------------------------------------

def test_slurm_dry_run_requests_8_gpus_and_launches_torchrun(workflow_copy, monkeypatch):
    from test_workflow import SLURM_ENV, _job_block

    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    proc = run(["snakemake", "-n", "-p", "--cores", "all", "--profile", "slurm", "results/tables/main.tex"],
               workflow_copy)
    for task in ("ade20k", "coco"):
        for exp in micro_params()["experiments"]["transfer"]:
            block = _job_block(proc.stdout, f"transfer_{task}", f"results/metrics/paper/seed0/{exp}/{task}.json")
            assert f"results/checkpoints/paper/seed0/pretrain/{exp}/encoder.safetensors" in block
            resources = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"resources: (.*)", block).group(1)))
            assert resources["gpu"] == "8" and resources["cpus_per_gpu"] == "8" and resources["tasks_per_gpu"] == "0"
            # runtime follows the iterations: 160k x 16 (ADE20K) and 184k x 64 (COCO) images take over 12 h
            assert int(resources["mem_mb"]) >= 256000 and int(resources["runtime"]) >= 12 * 60
        command = re.search(rf"torchrun .*transfer {task} .*--experiment mae .*", proc.stdout).group(0)
        assert command.startswith("torchrun --standalone --nproc-per-node=8 -m vitpe")


def test_table_block_with_sourced_values_and_gains(tmp_path):
    from conftest import micro_params
    from vitpe.config import scale_seeds, seed_dir
    from vitpe.io import write_json
    from vitpe.report.tables import table_latex, transfer_tables

    root = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((root / "workflow/resources/paper_numbers.yaml").read_text())
    params = micro_params()
    params["experiments"]["transfer"] = ["mae", "adpe_abs_coordinate"]
    runs = {"mae": (47.0, 0.500, 0.440), "adpe_abs_coordinate": (49.0, 0.530, 0.450)}
    for scale in ("paper", "tiny"):
        for seed in scale_seeds({**params, "scale": scale}):  # the same values in every seed
            folder = tmp_path / scale / seed_dir(seed)
            for exp, (miou, box, mask) in runs.items():
                write_json(folder / exp / "ade20k.json", {"ade20k_miou": miou, "ade20k_aacc": 80.0, "ade20k_macc": 60.0})
                write_json(folder / exp / "coco.json", {"coco_ap_box": box, "coco_ap50_box": 0.7, "coco_ap75_box": 0.55,
                                                        "coco_ap_mask": mask, "coco_ap50_mask": 0.66, "coco_ap75_mask": 0.47})
    ade, coco = map(table_latex, transfer_tables(params, tmp_path / "paper", "paper", paper))
    assert "48.1" in ade and "-1.1" in ade  # MAE paper mIoU and the run's delta to it
    assert "50.7" in ade and "(derived)" in ade and "+2.0" in ade and "+2.6" in ade  # run gain vs stated gain
    assert "50.3" in coco and "-0.3" in coco and "+3.0" in coco and "+3.2" in coco and "+1.0" in coco and "+1.6" in coco
    tiny_ade, _ = map(table_latex, transfer_tables(params, tmp_path / "tiny", "tiny", paper))
    assert "-1.1" not in tiny_ade and "+2.0" in tiny_ade  # no delta to paper values at the tiny scale
