"""A policy inside real ultralytics training: every training batch of every epoch, before and after close_mosaic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dronevision.augment import PolicyAlbumentations, load_policy, negatives_made, use_policy

from .conftest import make_yolo_dataset

pytestmark = pytest.mark.slow

GRAY = {"name": "gray", "transforms": [{"_target_": "albumentations.ToGray", "p": 1.0}]}
SHIFT_OUT = {  # every box leaves the 64 px frame
    "name": "shift-out",
    "min_visibility": 0.3,
    "transforms": [{"_target_": "albumentations.Affine", "translate_px": {"x": [64, 64], "y": [0, 0]}, "p": 1.0}],
}


def _train(tmp_path: Path, policy_cfg: dict, **overrides: Any) -> tuple[Any, list[tuple[int, bool, int, int]]]:
    """Train 2 epochs (the second after close_mosaic) with the policy; per batch: (epoch, gray, images, boxes)."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    policy = load_policy(policy_cfg)
    seen: list[tuple[int, bool, int, int]] = []

    class Trainer(DetectionTrainer):  # what dronevision.train does: the policy on the training dataset only
        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train":
                use_policy(dataset, policy)
            return dataset

        def preprocess_batch(self, batch: dict) -> dict:
            if self.model.training:
                img = batch["img"]
                gray = bool((img[:, 0] == img[:, 1]).all() and (img[:, 1] == img[:, 2]).all())
                seen.append((self.epoch, gray, len(img), len(batch["cls"])))
            return super().preprocess_batch(batch)

    data = make_yolo_dataset(tmp_path / "ds")
    data.write_text(data.read_text().replace("path: .", f"path: {data.parent}"))
    args = dict(
        model="yolov8n.yaml",
        data=str(data),
        epochs=2,
        close_mosaic=1,
        imgsz=64,
        batch=4,
        device="cpu",
        workers=0,
        project=str(tmp_path / "runs"),
        name="t",
        exist_ok=True,
        plots=False,
        val=False,
        verbose=False,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        augmentations=policy.transforms,
    )
    trainer = Trainer(overrides={**args, **overrides})
    for event, fns in trainer.callbacks.items():  # no MLflow / Ray Tune logging from a test
        trainer.callbacks[event] = [f for f in fns if not f.__module__.endswith((".mlflow", ".raytune"))]
    trainer.train()
    return trainer, seen


def test_every_training_batch_is_augmented_before_and_after_close_mosaic(tmp_path: Path) -> None:
    trainer, seen = _train(tmp_path, GRAY, mosaic=1.0)
    assert {epoch for epoch, *_ in seen} == {0, 1}
    assert all(gray for _, gray, _, _ in seen), seen
    assert sum(boxes for *_, boxes in seen) > 0
    steps = trainer.train_loader.dataset.transforms.transforms
    assert trainer.train_loader.dataset.transforms.transforms[0].transforms[0].p == 0.0  # mosaic closed
    assert [type(t) for t in steps].count(PolicyAlbumentations) == 1
    assert negatives_made(trainer.train_loader.dataset) == 0


def test_images_left_without_boxes_are_trained_on_as_negatives(tmp_path: Path) -> None:
    trainer, seen = _train(tmp_path, SHIFT_OUT, mosaic=0.0, translate=0.0, scale=0.0)
    assert sum(images for *_, images, _ in seen) == 16, "2 epochs x 8 images, none thrown away"
    assert sum(boxes for *_, boxes in seen) == 0
    assert negatives_made(trainer.train_loader.dataset) == 16
