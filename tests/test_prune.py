"""Structured pruning before fine-tuning (``prune.ratio``): the pruned model, its checkpoint, the training run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from torch import nn

from dronevision.errors import DroneVisionError
from dronevision.train import run
from dronevision.train.prune import PRUNED_ATTR, _SplitC2f, is_pruned, prune_checkpoint, prune_detector


def _model(arch: str = "yolov8n.yaml") -> nn.Module:
    from ultralytics import YOLO

    torch.manual_seed(0)
    return YOLO(arch).model.eval()


def _convs(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {n: (m.in_channels, m.out_channels) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_splitting_a_c2f_in_two_convs_and_merging_back_leaves_its_outputs_unchanged() -> None:
    from ultralytics.nn.modules import C2f

    torch.manual_seed(0)
    block = C2f(32, 64, n=2, shortcut=True).eval()
    for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 32, 16, 16)
    with torch.no_grad():
        expected = block(x)
        split = _SplitC2f(block)
        assert torch.equal(split(x), expected)
        merged = split.merged()
        assert type(merged) is C2f and merged.cv1.conv.out_channels == 2 * merged.c == 64
        assert torch.allclose(merged(x), expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["yolov8n.yaml", "yolo11n.yaml"])
def test_pruning_removes_channels_in_rounded_groups_and_keeps_the_head_outputs_and_the_stem(arch: str) -> None:
    model = _model(arch)
    before = _convs(model)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        shape = model(x)[0].shape
    report = prune_detector(model, ratio=0.25, round_to=8, keep_first=3, imgsz=320)
    after = _convs(model)

    assert report.macs_after < 0.8 * report.macs_before and report.params_after < 0.8 * report.params_before
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert is_pruned(model) and getattr(model, PRUNED_ATTR)["ratio"] == 0.25
    assert not any(isinstance(m, _SplitC2f) for m in model.modules())
    with torch.no_grad():
        assert model(x)[0].shape == shape  # same boxes and classes out
    stem = [n for n in before if n.startswith(("model.0.", "model.1.", "model.2."))]
    assert stem and all(after[n][1] == before[n][1] for n in stem)  # the first 3 layers keep their outputs
    head = model.model[-1]
    for branch in (*head.cv2, *head.cv3):
        assert branch[-1].out_channels in (head.reg_max * 4, head.nc)
    changed = [n for n in before if after[n][1] != before[n][1]]
    assert len(changed) > 10
    assert all(after[n][1] % 8 == 0 and after[n][1] < before[n][1] for n in changed)


def test_kept_channels_round_to_the_nearest_multiple_not_down() -> None:
    from dronevision.train.prune import _nearest_rounding_pruner

    round_to = _nearest_rounding_pruner()._round_to  # (self, n_pruned, current_channels, round_to) -> n_pruned
    assert round_to(None, 3, 32, 16) == 0  # 29 kept -> 32: a 10% cut of 32 channels is no cut, not a halving
    assert round_to(None, 7, 64, 16) == 0  # 57 -> 64
    assert round_to(None, 13, 64, 16) == 16  # 51 -> 48
    assert round_to(None, 8, 32, 16) == 0  # 24 (a tie) -> 32: ties keep more
    assert round_to(None, 26, 128, 16) == 32  # 102 -> 96
    assert round_to(None, 30, 32, 16) == 16  # never below one multiple


def test_a_bad_ratio_is_refused_before_anything_changes() -> None:
    model = _model()
    before = _convs(model)
    with pytest.raises(DroneVisionError, match=r"prune.ratio must be in \(0, 1\)"):
        prune_detector(model, ratio=1.0, round_to=8, keep_first=3, imgsz=64)
    assert _convs(model) == before and not is_pruned(model)


def test_pruned_checkpoint_loads_in_plain_ultralytics_and_refuses_other_classes(
    tiny_weights: Path, tmp_path: Path
) -> None:
    from ultralytics import YOLO

    out = tmp_path / "pruned.pt"
    report = prune_checkpoint(tiny_weights, out, ratio=0.25, round_to=8, keep_first=3, imgsz=64, nc=1)
    model = YOLO(str(out)).model
    assert is_pruned(model) and sum(p.numel() for p in model.parameters()) == report.params_after
    with torch.no_grad():
        assert model.float().eval()(torch.rand(1, 3, 64, 64))[0].shape[1] == 4 + 1

    other = tmp_path / "other.pt"
    with pytest.raises(DroneVisionError, match="the model has 1 classes, the dataset 3"):
        prune_checkpoint(tiny_weights, other, ratio=0.25, round_to=8, keep_first=3, imgsz=64, nc=3)
    assert not other.exists()


def test_prune_without_weights_is_one_line_and_writes_nothing(
    tiny_dataset: Path, compose_train: Callable[..., DictConfig]
) -> None:
    cfg = compose_train(f"dataset.path={tiny_dataset}", "prune.ratio=0.2")
    with pytest.raises(DroneVisionError, match="prune.ratio needs model.weights"):
        run(cfg)
    assert not Path(cfg.out_dir).exists()


@pytest.mark.slow
def test_training_with_prune_fine_tunes_the_pruned_model_and_records_it(
    tiny_weights: Path, tiny_dataset: Path, compose_train: Callable[..., DictConfig]
) -> None:
    from ultralytics import YOLO

    cfg = compose_train(
        f"dataset.path={tiny_dataset}",
        f"model.weights={tiny_weights}",
        "prune.ratio=0.25",
        "prune.round_to=8",
        "train.fraction=1.0",
    )
    summary = run(cfg)
    pruned = summary["prune"]
    assert pruned["source"] == str(tiny_weights) and pruned["ratio"] == 0.25 and pruned["imgsz"] == 64
    assert pruned["macs_after"] < pruned["macs_before"] and 0 < pruned["macs_kept"] < 0.8

    best = YOLO(summary["weights"]).model  # the fine-tuned model is the pruned one, not a rebuilt yolov8n
    assert is_pruned(best) and sum(p.numel() for p in best.parameters()) == pruned["params_after"]
    start = YOLO(pruned["pruned"]).model
    assert _convs(best) == _convs(start)
    changed = [k for k, v in best.state_dict().items() if v.is_floating_point() and k.endswith("conv.weight")]
    assert any(not torch.equal(best.state_dict()[k].float(), start.state_dict()[k].float()) for k in changed)
    assert summary["onnx_max_abs_diff"] < 1e-2

    written = json.loads((Path(cfg.out_dir) / "summary.json").read_text())
    assert written["prune"] == pruned
    assert json.loads((Path(cfg.out_dir) / "prune" / "prune.json").read_text()) == pruned
    metrics = MlflowClient(cfg.mlflow.tracking_uri).get_run(summary["run_id"]).data.metrics
    assert metrics["prune/macs_kept"] == pytest.approx(pruned["macs_kept"])
    assert metrics["prune/params_after"] == pruned["params_after"]


def test_the_trainer_keeps_a_pruned_checkpoint_as_it_is_where_ultralytics_would_rebuild_its_yaml(
    tiny_weights: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    from ultralytics.nn.tasks import load_checkpoint

    from dronevision.train.trainer import DroneVisionTrainer

    out = tmp_path / "pruned.pt"
    report = prune_checkpoint(tiny_weights, out, ratio=0.25, round_to=8, keep_first=3, imgsz=64, nc=1)
    data = tmp_path / "data.yaml"
    data.write_text(tiny_dataset.read_text().replace("path: .", f"path: {tiny_dataset.parent}"))
    overrides = {"data": str(data), "model": str(out), "project": str(tmp_path), "name": "t", "device": "cpu"}
    trainer = DroneVisionTrainer(overrides=overrides)
    weights, _ = load_checkpoint(str(out))  # what a resumed run or a DDP worker loads, then hands get_model
    kept = trainer.get_model(cfg=weights.yaml, weights=weights, verbose=False)
    assert kept is weights and sum(p.numel() for p in kept.parameters()) == report.params_after
    rebuilt = trainer.get_model(cfg=weights.yaml, weights=None, verbose=False)  # the YAML alone: unpruned yolov8n
    assert sum(p.numel() for p in rebuilt.parameters()) == report.params_before
