"""Classification evaluation: exact top-1/top-5 values, the JSON contract, and input errors."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import NUM_CLASSES, MICRO_MODEL, make_image_folder, micro_params_file, micro_run
from vitpe.cli import main
from vitpe.errors import CheckpointError, DataError
from vitpe.evaluate.classification import evaluate_classification
from vitpe.models import build_vit
from vitpe.models.weights import save_weights


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "imagenet", val_per_class=2)


def _ranked_model(order: list[int]) -> torch.nn.Module:
    """A model whose logits ignore the image and rank the classes in ``order``."""
    model = build_vit(MICRO_MODEL, NUM_CLASSES, "learnable", drop_path=0.0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-float(order.index(c)) for c in range(NUM_CLASSES)]))
    return model


def test_top1_top5_are_exact_percentages(data_root, tmp_path):
    save_weights(_ranked_model([3, 1, 4, 5, 9, 2, 6, 8, 7, 0]), tmp_path / "model.safetensors")
    metrics = evaluate_classification(micro_run(data_root), tmp_path / "model.safetensors",
                                      tmp_path / "metrics.json", device="cpu")
    # 2 validation images per class: class 3 is always first, classes {3,1,4,5,9} the top five
    assert metrics == {"top1": 10.0, "top5": 50.0, "num_images": 20, "scale": "tiny"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_cli_eval_classify_writes_flat_json(data_root, tmp_path, capsys):
    params = micro_params_file(tmp_path, data_root.parent)
    save_weights(_ranked_model(list(range(NUM_CLASSES))), tmp_path / "model.safetensors")
    out = tmp_path / "results" / "classify.json"
    assert main(["eval", "classify", "--params", str(params), "--experiment", "deit_s", "--weights",
                 str(tmp_path / "model.safetensors"), "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text()) == {"top1": 10.0, "top5": 50.0, "num_images": 20, "scale": "tiny"}
    assert "top-1 10.00%" in capsys.readouterr().out


def test_missing_or_wrong_weights_raise_and_write_nothing(data_root, tmp_path, capsys):
    run = micro_run(data_root)
    out = tmp_path / "metrics.json"
    with pytest.raises(CheckpointError, match="weights file not found"):
        evaluate_classification(run, tmp_path / "absent.safetensors", out, device="cpu")
    save_weights(build_vit(dict(MICRO_MODEL, depth=1), NUM_CLASSES, "learnable", 0.0), tmp_path / "shallow.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\."):
        evaluate_classification(run, tmp_path / "shallow.safetensors", out, device="cpu")
    params = micro_params_file(tmp_path, data_root.parent)
    code = main(["eval", "classify", "--params", str(params), "--experiment", "deit_s",
                 "--weights", str(tmp_path / "shallow.safetensors"), "--out", str(out)])
    assert code == 2 and "does not fit this architecture" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob(".metrics.json*")) == []


def test_weights_trained_with_another_configuration_are_refused(data_root, tmp_path):
    # 4 heads instead of 2: every tensor has the same shape, only the metadata can tell
    path = tmp_path / "model.safetensors"
    save_weights(build_vit(dict(MICRO_MODEL, num_heads=4), NUM_CLASSES, "learnable", 0.0), path,
                 {"model": dict(MICRO_MODEL, num_heads=4), "pos_embed": "learnable", "num_classes": NUM_CLASSES})
    with pytest.raises(CheckpointError, match=r"trained with model=.*'num_heads': 4"):
        evaluate_classification(micro_run(data_root), path, tmp_path / "m.json", device="cpu")
    save_weights(build_vit(MICRO_MODEL, NUM_CLASSES, "sincos", 0.0), path, {"pos_embed": "sincos"})
    with pytest.raises(CheckpointError, match="trained with pos_embed='sincos'"):
        evaluate_classification(micro_run(data_root), path, tmp_path / "m.json", device="cpu")
    assert not (tmp_path / "m.json").exists()


def test_missing_or_mismatched_validation_set_raises_data_error(data_root, tmp_path):
    save_weights(_ranked_model(list(range(NUM_CLASSES))), tmp_path / "model.safetensors")
    with pytest.raises(DataError, match="image folder not found"):
        evaluate_classification(micro_run(tmp_path / "nowhere"), tmp_path / "model.safetensors",
                                tmp_path / "m.json", device="cpu")
    few = make_image_folder(tmp_path / "few", num_classes=3)
    with pytest.raises(DataError, match="3 class folders, but the model has 10 classes"):
        evaluate_classification(micro_run(few), tmp_path / "model.safetensors", tmp_path / "m.json", device="cpu")
    assert not (tmp_path / "m.json").exists()


def test_topk_counter_counts_exact_hits_and_caps_k_at_the_classes():
    from vitpe.evaluate.common import TopKCounter

    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    counts = TopKCounter(k=2)
    counts.update(logits, torch.tensor([1, 2, 0]))  # top-1 hit, top-2 hit, miss
    counts.update(logits[:1], torch.tensor([0]))  # top-2 hit
    assert (counts.top1, counts.topk, counts.seen) == (1, 3, 4)
    assert counts.percent() == {"top1": 25.0, "top2": 75.0}
    five = TopKCounter(k=5)  # 3 classes: top-5 is top-all
    five.update(logits, torch.tensor([2, 2, 2]))
    assert five.percent() == {"top1": 100.0 / 3, "top5": 100.0}
