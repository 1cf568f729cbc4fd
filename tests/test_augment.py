"""Augmentation policies: configs, exact box geometry, the ultralytics training pipeline, preview and materialize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from copy import copy
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pytest
import yaml

from dronevision.augment import (
    Policy,
    augment_sample,
    build_compose,
    load_policy,
    materialize,
    negatives_made,
    preview_grid,
    use_policy,
)
from dronevision.augment.command import policy_config, run
from dronevision.augment.preview import PALETTE, pick_indices
from dronevision.augment.ultralytics import PolicyAlbumentations
from dronevision.cli import group_options
from dronevision.dataset import label_path, load_yolo_dataset
from dronevision.errors import DroneVisionError

from .conftest import REPO, compose_config, make_yolo_dataset

ISSUE_AERIAL = {
    "RandomRotate90",
    "HorizontalFlip",
    "VerticalFlip",
    "Affine",
    "MotionBlur",
    "GaussNoise",
    "ISONoise",
    "ImageCompression",
    "Haze",
    "RandomBrightnessContrast",
    "ToGray",
    "Downscale",
}
GRAY = {"name": "gray", "transforms": [{"_target_": "albumentations.ToGray", "p": 1.0}]}
NONE = {"name": "none", "transforms": []}
# Shifts the whole 64 px image out of the frame: every box leaves, deterministically.
SHIFT_OUT = {
    "name": "shift-out",
    "min_visibility": 0.3,
    "transforms": [{"_target_": "albumentations.Affine", "translate_px": {"x": [64, 64], "y": [0, 0]}, "p": 1.0}],
}


def _compose_cmd(tmp_path: Path, *overrides: str) -> Any:
    return compose_config("augment_cmd", f"paths.log_dir={tmp_path / 'logs'}", *overrides)


def _names(transforms: list) -> set[str]:
    """Class names of transforms, looking inside OneOf / SomeOf / Sequential."""
    names = set()
    for t in transforms:
        names.add(type(t).__name__)
        names |= _names(list(getattr(t, "transforms", [])))
    return names


# --- policies from configs/augment -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", group_options("augment"))
def test_every_shipped_policy_composes_and_keeps_boxes_in_the_image(tmp_path: Path, name: str) -> None:
    cfg = _compose_cmd(tmp_path, f"augment={name}", f"out_dir={tmp_path}")
    policy = load_policy(policy_config(cfg.augment), imgsz=640)
    assert policy.name == name and set(policy.config) >= {"name", "transforms"}
    for t in policy.transforms:  # ultralytics stores augmentations in checkpoints as A.to_dict
        assert A.to_dict(A.from_dict(A.to_dict(t))) == A.to_dict(t)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 40], [300, 200, 340, 260], [600, 440, 640, 480]], np.float32)
    compose = policy.compose(seed=0)
    for _ in range(20):
        out, out_boxes, ids = augment_sample(compose, image, boxes, np.array([0, 1, 2]))
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        h, w = out.shape[:2]
        assert out_boxes.shape == (len(ids), 4) and set(ids.tolist()) <= {0, 1, 2}
        assert (out_boxes >= 0).all() and (out_boxes[:, [0, 2]] <= w).all() and (out_boxes[:, [1, 3]] <= h).all()
        assert (out_boxes[:, 2:] > out_boxes[:, :2]).all()
    if name == "none":
        assert policy.transforms == [] and np.array_equal(out, image) and np.array_equal(out_boxes, boxes)


def test_aerial_policy_has_the_issue_transforms(tmp_path: Path) -> None:
    policy = load_policy(policy_config(_compose_cmd(tmp_path, "augment=aerial", f"out_dir={tmp_path}").augment))
    assert _names(policy.transforms) >= ISSUE_AERIAL
    assert policy.min_visibility == 0.3 and policy.min_area == 4


# --- exact geometry --------------------------------------------------------------------------------------------

W, H = 100, 60
BOX = [10.0, 5.0, 30.0, 25.0]


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (A.HorizontalFlip(p=1.0), [70, 5, 90, 25]),  # x -> W - x
        (A.VerticalFlip(p=1.0), [10, 35, 30, 55]),  # y -> H - y
        (A.Transpose(p=1.0), [5, 10, 25, 30]),
        (A.Crop(x_min=5, y_min=0, x_max=95, y_max=60, p=1.0), [5, 5, 25, 25]),
    ],
)
def test_flips_move_a_known_box_exactly(transform: Any, expected: list[float]) -> None:
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    _, boxes, ids = augment_sample(build_compose([transform]), image, np.array([BOX]), np.array([7]))
    assert boxes.tolist() == [expected] and ids.tolist() == [7]


def test_random_rotate90_moves_a_known_box_exactly() -> None:
    """Each quarter turn (found from the pixels) puts the box where the geometry says."""
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    x1, y1, x2, y2 = BOX
    expected = {  # np.rot90 turns counter-clockwise: (x, y) -> (y, W - x)
        0: [x1, y1, x2, y2],
        1: [y1, W - x2, y2, W - x1],
        2: [W - x2, H - y2, W - x1, H - y1],
        3: [H - y2, x1, H - y1, x2],
    }
    compose = build_compose([A.RandomRotate90(p=1.0)], seed=0)
    seen = set()
    for _ in range(40):
        out, boxes, _ = augment_sample(compose, image, np.array([BOX]), np.array([0]))
        k = next(k for k in range(4) if np.array_equal(out, np.rot90(image, k)))
        assert boxes.tolist() == [expected[k]], k
        seen.add(k)
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("min_visibility", "min_area", "kept"),
    [
        (0.0, 0, [[40, 10, 50, 30], [45, 10, 50, 30], [2, 2, 4, 4]]),
        (0.3, 0, [[40, 10, 50, 30], [2, 2, 4, 4]]),  # 5 of 20 px wide (25 %) left: dropped
        (0.6, 0, [[2, 2, 4, 4]]),  # half left: dropped too
        (0.3, 5, [[40, 10, 50, 30]]),  # the 2x2 box is under 5 px^2
    ],
)
def test_min_visibility_and_min_area_drop_boxes(min_visibility: float, min_area: float, kept: list) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    boxes = np.array([[40, 10, 60, 30], [45, 10, 65, 30], [2, 2, 4, 4]], np.float32)
    crop = build_compose(
        [A.Crop(x_min=0, y_min=0, x_max=50, y_max=60, p=1.0)], min_visibility=min_visibility, min_area=min_area
    )
    out, got, _ = augment_sample(crop, image, boxes, np.arange(3))
    assert out.shape == (60, 50, 3) and got.tolist() == kept


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (np.zeros((0, 4)), []),  # no boxes
        (np.array([[-5.0, -3, 10, 10]]), [[90, 0, 100, 10]]),  # over the border: clipped, then flipped
        (np.array([[120.0, 10, 130, 20]]), []),  # wholly outside the image: dropped
    ],
)
def test_augment_sample_edge_cases(boxes: np.ndarray, expected: list) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    _, got, ids = augment_sample(build_compose([A.HorizontalFlip(p=1.0)]), image, boxes, np.zeros(len(boxes), int))
    assert got.tolist() == expected and len(ids) == len(expected)


# --- bad input: one line ---------------------------------------------------------------------------------------


def _policy(*transforms: dict, **settings: Any) -> dict:
    return {"name": "t", "min_visibility": 0.3, "min_area": 4, **settings, "transforms": list(transforms)}


@pytest.mark.parametrize(
    ("cfg", "imgsz", "message"),
    [
        (
            _policy({"_target_": "albumentations.RandomRotat90"}),
            None,
            "augment.transforms\\[0\\]: unknown transform 'albumentations.RandomRotat90'; did you mean RandomRotate90"
            ".* valid \\(list them: python -m dronevision.augment list\\)",
        ),
        (_policy({"_target_": "albumentations.GridDistortion"}), None, "GridDistortion is not allowed: it warps"),
        (_policy({"_target_": "albumentations.CenterCrop3D"}), None, "does not support bounding boxes"),
        (_policy({"_target_": "os.system"}), None, "'os.system' is not an albumentations transform"),
        (_policy({"_target_": "albumentations.HorizontalFlip", "p": 1.5}), None, "p=1.5 is not a probability"),
        (_policy({"_target_": "albumentations.ToGray", "p": -0.1}), None, "p=-0.1 is not a probability"),
        (
            _policy(
                {
                    "_target_": "albumentations.OneOf",
                    "transforms": [{"_target_": "albumentations.GaussNoise", "p": 2}],
                }
            ),
            None,
            "augment.transforms\\[0\\].transforms\\[0\\] \\(GaussNoise\\): p=2 is not a probability",
        ),
        (_policy({"_target_": "albumentations.Downscale", "scale_range": [0.0, 0.5]}), None, "must lie in \\(0, 1\\]"),
        (_policy({"_target_": "albumentations.Downscale", "scale_range": [0.5, 1.5]}), None, "must lie in \\(0, 1\\]"),
        (_policy({"_target_": "albumentations.MotionBlur", "blur_limit": [2, 7]}), None, "odd kernel sizes >= 3"),
        (_policy({"_target_": "albumentations.Blur", "blur_limit": 4}), None, "odd kernel sizes >= 3"),
        (
            _policy({"_target_": "albumentations.RandomCrop", "height": 800, "width": 800}),
            640,
            "height=800 is bigger than the training image size imgsz=640",
        ),
        (
            _policy({"_target_": "albumentations.RandomResizedCrop", "size": [1024, 1024]}),
            640,
            "size=\\[1024, 1024\\] is bigger than",
        ),
        (_policy({"_target_": "albumentations.Affine", "scal": 0.5}), None, "'scal' is not an argument of Affine"),
        (
            _policy({"_target_": "albumentations.ImageCompression", "quality_range": [40, 190]}),
            None,
            "\\(ImageCompression\\): quality_range: .*<= 100",
        ),
        (_policy(min_visibility=1.3), None, "augment.min_visibility=1.3 must be in \\[0, 1\\]"),
        (_policy(min_area=-1), None, "augment.min_area=-1"),
        ({"name": "t", "transforms": [], "min_visiblity": 0.3}, None, "did you mean augment.min_visibility"),
    ],
)
def test_bad_policy_is_one_clear_line(cfg: dict, imgsz: int | None, message: str) -> None:
    with pytest.raises(DroneVisionError, match=message) as info:
        load_policy(cfg, imgsz=imgsz)
    assert "\n" not in str(info.value)


def test_a_crop_within_imgsz_is_accepted() -> None:
    policy = load_policy(_policy({"_target_": "albumentations.RandomCrop", "height": 320, "width": 320}), imgsz=640)
    assert [type(t).__name__ for t in policy.transforms] == ["RandomCrop"]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "dronevision.augment", *args, f"paths.log_dir={tmp_path / 'logs'}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "augment=foo"], "error: unknown augment 'foo'; valid: aerial, light, light_zoom, none\n"),
        (
            ["preview", "augment.transforms=[{_target_: albumentations.RandomRotat90}]"],
            "error: augment.transforms[0]: unknown transform 'albumentations.RandomRotat90'; did you mean"
            " RandomRotate90",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = _cli(tmp_path, *args, f"out_dir={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()
    assert not any((tmp_path / "logs").rglob("*.log")), "bad input leaves no log folder behind"


# --- preview ---------------------------------------------------------------------------------------------------


def test_preview_command_writes_grid_and_summary(tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "preview"
    cfg = _compose_cmd(tmp_path, "action=preview", f"dataset.path={tiny_dataset}", "augment=aerial", f"out_dir={out}")
    cfg.n = 5
    summary = run(cfg)
    grid = cv2.imread(str(out / "preview.png"))
    assert grid.shape == (2 * 256, 3 * 256, 3)  # 5 cells in a 2 x 3 grid
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["action"] == "preview" and summary["policy"] == "aerial" and summary["n"] == 5
    assert summary["grid"] == str(out / "preview.png") and summary["out_dir"] == str(out)
    assert len(summary["images"]) == 5 and all(Path(p).is_file() for p in summary["images"])


def test_preview_grid_draws_the_augmented_boxes_and_is_fixed_per_seed(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = load_yolo_dataset(tiny_dataset)
    flip = load_policy(_policy({"_target_": "albumentations.HorizontalFlip", "p": 1.0}))
    a = preview_grid(flip, dataset, tmp_path / "a.png", n=1, seed=3)
    b = preview_grid(flip, dataset, tmp_path / "b.png", n=1, seed=3)
    assert a.read_bytes() == b.read_bytes()
    cell = cv2.cvtColor(cv2.imread(str(a)), cv2.COLOR_BGR2RGB)
    image = sorted(dataset.splits["train"])[pick_indices(8, 1, seed=3)[0]]
    _, cx, cy, w, h = (float(v) for v in label_path(image).read_text().split()[:5])
    scale = 256 / 64  # 64 px images in 256 px cells
    x_left = round((1 - cx - w / 2) * 64 * scale)  # the first box's left edge after the flip
    y_top = round((cy - h / 2) * 64 * scale)
    assert tuple(cell[y_top + 2, x_left]) == PALETTE[0]
    assert tuple(cell[y_top + 2, round((cx - w / 2) * 64 * scale)]) != PALETTE[0], "not where it was before"


# --- materialize -----------------------------------------------------------------------------------------------


def _labels(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((folder / "train" / "labels").glob("*.txt"))}


def test_materialize_command_writes_k_copies_with_labels_and_manifest(tmp_path: Path, tiny_dataset: Path) -> None:
    out = tmp_path / "aug"
    cfg = _compose_cmd(
        tmp_path,
        "action=materialize",
        f"dataset.path={tiny_dataset}",
        "augment=aerial",
        "augment.materialize=2",
        f"out_dir={out}",
        "workers=1",
    )
    summary = run(cfg)
    built = load_yolo_dataset(out)  # a valid YOLO dataset
    assert built.counts() == {"train": 8 * 3, "val": 4}
    assert summary["images"] == {"train": 24, "val": 4} and summary["augmented_images"] == 16
    assert json.loads((out / "summary.json").read_text())["action"] == "materialize"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["policy"] == "aerial" and manifest["copies"] == 2
    assert manifest["negatives_made"] == summary["negatives_made"]
    train = [e for e in manifest["entries"] if e["split"] == "train"]
    assert sorted(e["copy"] for e in train) == [0] * 8 + [1] * 8 + [2] * 8
    for e in manifest["entries"]:
        lines = (out / e["label"]).read_text().splitlines()
        assert len(lines) == e["boxes"] and (out / e["file"]).is_file() and Path(e["source"]).is_file()
        img = cv2.imread(str(out / e["file"]))
        for line in lines:  # normalised to the written image
            values = [float(v) for v in line.split()[1:]]
            assert all(0 <= v <= 1 for v in values) and img is not None
    val = [e for e in manifest["entries"] if e["split"] == "val"]
    assert all(e["copy"] == 0 for e in val) and len(val) == 4
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "no temporary folder left"

    with pytest.raises(DroneVisionError, match="already exists"):
        run(cfg)
    cfg.overwrite = True
    before = _labels(out)
    again = run(cfg)
    assert again["images"] == summary["images"] and _labels(out) == before, "same seed, same dataset"


def test_materialize_labels_follow_the_geometry_and_seed(tmp_path: Path, tiny_dataset: Path) -> None:
    dataset = load_yolo_dataset(tiny_dataset)
    flip = load_policy(_policy({"_target_": "albumentations.HorizontalFlip", "p": 1.0}, min_area=0))
    materialize(flip, dataset, tmp_path / "flip", copies=1)
    for image in dataset.splits["train"]:
        src = label_path(image).read_text().split("\n")
        got = (tmp_path / "flip" / "train" / "labels" / f"{image.stem}_aug1.txt").read_text().split("\n")
        for a, b in zip(src, got):
            if a:
                ca, cb = [float(v) for v in a.split()], [float(v) for v in b.split()]
                assert cb[0] == ca[0] and abs(cb[1] - (1 - ca[1])) < 2e-6 and np.allclose(cb[2:], ca[2:], atol=2e-6)

    aerial = load_policy(policy_config(_compose_cmd(tmp_path, "augment=aerial", f"out_dir={tmp_path}").augment))
    one = materialize(aerial, dataset, tmp_path / "w1", copies=2, seed=5, workers=1)
    two = materialize(aerial, dataset, tmp_path / "w2", copies=2, seed=5, workers=2)
    other = materialize(aerial, dataset, tmp_path / "s6", copies=2, seed=6, workers=1)
    assert _labels(tmp_path / "w1") == _labels(tmp_path / "w2"), "the same seed gives the same dataset"
    hashes = [
        {e["file"]: e["sha256"] for e in json.loads((tmp_path / f / "manifest.json").read_text())["entries"]}
        for f in ("w1", "w2", "s6")
    ]
    assert hashes[0] == hashes[1] and hashes[0] != hashes[2]
    assert one["boxes"] == two["boxes"] and other["images"] == one["images"]


def test_materialize_keeps_and_counts_images_whose_boxes_all_left(tmp_path: Path, tiny_dataset: Path) -> None:
    summary = materialize(load_policy(SHIFT_OUT), load_yolo_dataset(tiny_dataset), tmp_path / "neg", copies=2)
    assert summary["negatives_made"] == 16 and summary["images"]["train"] == 24
    augmented = [p for p in (tmp_path / "neg" / "train" / "labels").glob("*_aug*.txt")]
    assert len(augmented) == 16 and all(p.read_text() == "" for p in augmented)


# --- inside ultralytics' training pipeline ---------------------------------------------------------------------


def _trainer(tmp_path: Path, data_yaml: Path, policy: Policy, **overrides: Any) -> Any:
    """A real ultralytics DetectionTrainer whose training dataset gets the policy, as dronevision.train does it."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class Trainer(DetectionTrainer):
        def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
            dataset = super().build_dataset(img_path, mode, batch)
            if mode == "train":
                use_policy(dataset, policy)
            return dataset

    args = dict(
        model="yolov8n.yaml",
        data=str(data_yaml),
        imgsz=64,
        batch=4,
        device="cpu",
        project=str(tmp_path / "runs"),
        name="t",
        exist_ok=True,
        plots=False,
        val=False,
        mosaic=0.0,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
        augmentations=list(policy.transforms),
        verbose=False,
    )
    trainer = Trainer(overrides={**args, **overrides})
    trainer.model = trainer.get_model(cfg="yolov8n.yaml", verbose=False)
    return trainer


@pytest.fixture
def data_yaml(tmp_path: Path) -> Path:
    data = make_yolo_dataset(tmp_path / "ds")
    data.write_text(data.read_text().replace("path: .", f"path: {data.parent}"))  # not relative to the cwd
    return data


def _batches(loader: Any) -> list[dict]:
    return list(loader)


def _gray(batch: dict) -> bool:
    img = batch["img"]
    return bool((img[:, 0] == img[:, 1]).all() and (img[:, 1] == img[:, 2]).all())


@pytest.mark.parametrize("workers", [0, 2])
def test_policy_transforms_reach_training_batches_also_after_close_mosaic(
    tmp_path: Path, data_yaml: Path, workers: int
) -> None:
    gray = load_policy(GRAY)
    trainer = _trainer(tmp_path, data_yaml, gray)
    trainer.args.workers = workers  # ultralytics sets 0 on CPU; GPU training forks workers
    loader = trainer.get_dataloader(trainer.data["train"], batch_size=4, rank=-1, mode="train")
    assert loader.num_workers == workers
    assert [type(t) for t in loader.dataset.transforms.transforms].count(PolicyAlbumentations) == 1
    batches = _batches(loader)
    assert len(batches) == 2 and all(_gray(b) for b in batches)
    assert sum(len(b["cls"]) for b in batches) > 0

    loader.dataset.close_mosaic(hyp=copy(trainer.args))  # what the trainer does for the last close_mosaic epochs
    loader.reset()
    assert [type(t) for t in loader.dataset.transforms.transforms].count(PolicyAlbumentations) == 1
    assert all(_gray(b) for b in _batches(loader))

    plain = _trainer(tmp_path, data_yaml, load_policy(NONE))
    plain.args.workers = workers
    assert not any(
        _gray(b) for b in _batches(plain.get_dataloader(plain.data["train"], batch_size=4, rank=-1, mode="train"))
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_images_whose_boxes_all_left_are_kept_and_counted(tmp_path: Path, data_yaml: Path, workers: int) -> None:
    shift = load_policy(SHIFT_OUT)
    trainer = _trainer(tmp_path, data_yaml, shift, translate=0.0, scale=0.0, fliplr=0.0)
    trainer.args.workers = workers
    loader = trainer.get_dataloader(trainer.data["train"], batch_size=4, rank=-1, mode="train")
    batches = _batches(loader)
    assert sum(len(b["img"]) for b in batches) == 8, "every image is kept"
    assert sum(len(b["cls"]) for b in batches) == 0, "with no labels"
    assert all(int(b["img"].max()) == 0 for b in batches), "and the augmented (empty) pixels"
    made = negatives_made(loader.dataset)  # read in this process, counted where the transform ran
    assert made == 8 if workers == 0 else made >= 8  # workers prefetch the next epoch's first batches

    loader.dataset.close_mosaic(hyp=copy(trainer.args))  # rebuilt transforms keep the policy's step
    loader.reset()
    batches = _batches(loader)
    assert sum(len(b["img"]) for b in batches) == 8 and sum(len(b["cls"]) for b in batches) == 0
    assert negatives_made(loader.dataset) >= made + 8

    # ultralytics' own step would have thrown the augmentation away and kept the boxes
    from ultralytics.data import build_yolo_dataset

    raw = build_yolo_dataset(trainer.args, trainer.data["train"], 4, trainer.data, mode="train", stride=32)
    assert sum(len(raw[i]["cls"]) for i in range(len(raw))) > 0


@pytest.mark.parametrize("name", group_options("augment"))
def test_every_shipped_policy_runs_in_the_training_pipeline(tmp_path: Path, data_yaml: Path, name: str) -> None:
    cfg = _compose_cmd(tmp_path, f"augment={name}", f"out_dir={tmp_path}")
    policy = load_policy(policy_config(cfg.augment), imgsz=64)
    trainer = _trainer(tmp_path, data_yaml, policy, mosaic=1.0)
    loader = trainer.get_dataloader(trainer.data["train"], batch_size=4, rank=-1, mode="train")
    step = next(t for t in loader.dataset.transforms.transforms if isinstance(t, PolicyAlbumentations))
    assert _names(step.transforms) == _names(policy.transforms)
    for batch in _batches(loader):
        assert batch["img"].shape == (4, 3, 64, 64)
        assert ((batch["bboxes"] >= 0) & (batch["bboxes"] <= 1)).all()  # normalised xywh, as ultralytics expects


def test_use_policy_refuses_a_dataset_built_with_other_augmentations(tmp_path: Path, data_yaml: Path) -> None:
    from ultralytics.data import build_yolo_dataset

    trainer = _trainer(tmp_path, data_yaml, load_policy(GRAY))
    dataset = build_yolo_dataset(trainer.args, trainer.data["train"], 4, trainer.data, mode="train", stride=32)
    with pytest.raises(DroneVisionError, match="pass augmentations=policy.transforms"):
        use_policy(dataset, load_policy(NONE))
    val = build_yolo_dataset(trainer.args, trainer.data["val"], 4, trainer.data, mode="val", stride=32)
    with pytest.raises(DroneVisionError, match="needs a training dataset"):
        use_policy(val, load_policy(GRAY))
    with pytest.raises(DroneVisionError, match="use_policy\\(\\) was not applied"):
        negatives_made(val)


def test_manifest_yaml_is_plain(tmp_path: Path, tiny_dataset: Path) -> None:
    materialize(load_policy(NONE), load_yolo_dataset(tiny_dataset), tmp_path / "n", copies=1)
    data = yaml.safe_load((tmp_path / "n" / "data.yaml").read_text())
    assert data == {"path": ".", "train": "train/images", "val": "val/images", "names": {0: "vehicle"}}
