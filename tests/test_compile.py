"""`compile: true` (the paper recipes, on CUDA): torch.compile of the training step computes what eager
mode does, within float rounding, without recompiling across steps (MJP's steps with and without the
shuffle are two graphs), for the plain ViT and for MJP's shuffled forward, whose block mask and
permutation are drawn anew at every step."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import DEVICES, ROOT, make_image_folder, micro_run
from vitpe.config import load_params
from vitpe.evaluate.classification import evaluate_classification
from vitpe.runs import with_recipe
from vitpe.train.supervised import train_supervised

pytestmark = pytest.mark.slow  # inductor compiles each model's step on CPU: about a minute


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("experiment", ["deit_s", "mjp"])
def test_compiled_training_matches_eager(data_root, tmp_path, experiment, device):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    outputs = {}
    for mode in ("eager", "compiled"):
        run = micro_run(data_root, experiment, epochs=2, compile=mode == "compiled")
        # a graph per kind of step (MJP: with and without the shuffle), compiled once: a third fails
        with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True):
            train_supervised(run, tmp_path / mode, device=device)
        weights = load_file(str(tmp_path / mode / "model.safetensors"))
        metrics = evaluate_classification(run, tmp_path / mode / "model.safetensors", tmp_path / f"{mode}.json",
                                          device=device)
        outputs[mode] = weights, metrics
    (eager, eager_metrics), (compiled, compiled_metrics) = outputs["eager"], outputs["compiled"]
    assert eager.keys() == compiled.keys()
    for key in eager:  # fused kernels round differently; a baked-in mask or a skipped step would not be close
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-3, atol=1e-4, msg=key)
    assert compiled_metrics["top1"] == eager_metrics["top1"] and compiled_metrics["top5"] == eager_metrics["top5"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the compiled run did compile


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("experiment", ["mae", "adpe_rel_coordinate"])
def test_compiled_pretraining_matches_eager(data_root, tmp_path, experiment, device):
    """MAE's masking noise and AdPE's ascending δ: the compiled step draws the same masks (random ops
    through ATen) and moves δ as eager mode does."""
    from test_finetune import micro_pretrain
    from vitpe.train.pretrain import ENCODER_NAME, train_pretrain

    torch._dynamo.reset()
    encoders = {}
    for mode in ("eager", "compiled"):
        run = with_recipe(micro_pretrain(load_params(ROOT / "params.yaml"), experiment, data_root),
                          compile=mode == "compiled")
        with torch._dynamo.config.patch(recompile_limit=2, fail_on_recompile_limit_hit=True):
            train_pretrain(run, tmp_path / mode, device=device)
        encoders[mode] = load_file(str(tmp_path / mode / ENCODER_NAME))
    for key in encoders["eager"]:
        torch.testing.assert_close(encoders["compiled"][key], encoders["eager"][key], rtol=1e-3, atol=1e-4, msg=key)
