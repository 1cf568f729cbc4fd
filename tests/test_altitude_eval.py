"""Altitude shift: zoom-in and zoom-out geometry, the variant datasets, and evaluate with ``scales=[...]``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dronevision.errors import DroneVisionError
from dronevision.evaluate.altitude import (
    GREY,
    build_variant,
    check_scales,
    crop_boxes,
    mosaic_layout,
    zoom_in,
    zoom_in_windows,
    zoom_out,
)
from dronevision.evaluate.ground_truth import load_ground_truth

from .conftest import compose_config, make_yolo_dataset


def _image(w: int = 100, h: int = 100, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


# --- zoom in ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wh", "z", "expected"),
    [
        ((100, 100), 2, [[0, 0, 50, 50], [50, 0, 100, 50], [0, 50, 50, 100], [50, 50, 100, 100]]),
        ((90, 60), 3, [[x, y, x + 30, y + 20] for y in (0, 20, 40) for x in (0, 30, 60)]),
        # non-integer: ceil(1.5) = 2 positions per side, crops of W/1.5 x H/1.5 at both ends
        ((100, 60), 1.5, [[0, 0, 67, 40], [33, 0, 100, 40], [0, 20, 67, 60], [33, 20, 100, 60]]),
        # 2.5: 3 positions per side, 40-pixel crops at 0, 30, 60
        ((100, 100), 2.5, [[x, y, x + 40, y + 40] for y in (0, 30, 60) for x in (0, 30, 60)]),
    ],
)
def test_zoom_in_windows_cover_the_image_evenly(wh: tuple[int, int], z: float, expected: list) -> None:
    windows = zoom_in_windows(wh, z)
    assert windows.tolist() == expected
    assert windows[:, 0].min() == 0 and windows[:, 2].max() == wh[0] and windows[:, 3].max() == wh[1]


@pytest.mark.parametrize(("wh", "z"), [((100, 100), 1), ((100, 100), 0.5), ((10, 10), 40)])
def test_zoom_in_refuses_scales_it_cannot_make(wh: tuple[int, int], z: float) -> None:
    with pytest.raises(DroneVisionError):
        zoom_in_windows(wh, z)


def test_a_box_lands_where_the_geometry_says_in_the_bottom_right_crop() -> None:
    image = _image()
    tiles = zoom_in(image, np.array([[60.0, 60.0, 80.0, 80.0]]), np.array([3]), 2)
    assert len(tiles) == 4 and all(t.image.shape == image.shape for t in tiles)
    assert [len(t.xyxy) for t in tiles] == [0, 0, 0, 1]
    # clipped to [50, 100] (nothing to clip), shifted by 50, scaled by 100 / 50
    assert tiles[3].xyxy.tolist() == [[20.0, 20.0, 60.0, 60.0]]
    assert tiles[3].class_id.tolist() == [3] and tiles[3].origin.tolist() == [0]
    # the crop's pixels are the image's quarter, enlarged 2x (a uniform patch stays uniform)
    flat = np.zeros((100, 100, 3), np.uint8)
    flat[50:, 50:] = 200
    assert (zoom_in(flat, np.zeros((0, 4)), np.zeros(0), 2)[3].image == 200).all()


@pytest.mark.parametrize(
    ("box", "kept_in", "expected"),
    [
        # 1/3 in the left crop, 2/3 in the right: only the right keeps it, clipped at x=50
        ([40, 10, 70, 30], [1], [[0.0, 20.0, 40.0, 60.0]]),
        # exactly half in each: both keep their half
        ([40, 10, 60, 30], [0, 1], [[80.0, 20.0, 100.0, 60.0], [0.0, 20.0, 20.0, 60.0]]),
        # a quarter in each of the four crops: no crop holds half of it, it is dropped
        ([40, 40, 60, 60], [], []),
        # on the image border, wholly in the first crop
        ([0, 0, 10, 10], [0], [[0.0, 0.0, 20.0, 20.0]]),
    ],
)
def test_a_box_straddling_crops_is_kept_where_at_least_half_of_it_lies(
    box: list[float], kept_in: list[int], expected: list
) -> None:
    tiles = zoom_in(_image(), np.array([box], dtype=float), np.array([0]), 2)
    assert [i for i, t in enumerate(tiles) if len(t.xyxy)] == kept_in
    assert [t.xyxy.tolist()[0] for t in tiles if len(t.xyxy)] == expected


def test_crop_boxes_scales_each_axis_by_its_own_factor() -> None:
    boxes, kept = crop_boxes(np.array([[33.0, 20.0, 67.0, 40.0]]), (33, 20, 100, 60), (100, 60))
    assert kept.tolist() == [True]
    np.testing.assert_allclose(boxes, [[0.0, 0.0, 34 * 100 / 67, 20 * 60 / 40]])


# --- zoom out --------------------------------------------------------------------------------------------------


def test_four_images_make_one_mosaic_at_half_scale() -> None:
    images = [np.full((100, 100, 3), 10 * (i + 1), np.uint8) for i in range(4)]
    boxes = [np.zeros((0, 4)), np.array([[0.0, 0.0, 20.0, 20.0]]), np.array([[50.0, 50.0, 100.0, 100.0]]), []]
    (tile,) = zoom_out([(im, b, np.zeros(len(b))) for im, b in zip(images, boxes)], 0.5)
    assert tile.image.shape == (100, 100, 3)
    assert tile.xyxy.tolist() == [[50.0, 0.0, 60.0, 10.0], [25.0, 75.0, 50.0, 100.0]]
    assert tile.origin.tolist() == [0, 1]
    # each image in its cell, row by row
    assert [int(tile.image[y, x, 0]) for y, x in ((0, 0), (0, 99), (99, 0), (99, 99))] == [10, 20, 30, 40]


def test_the_last_mosaic_holds_fewer_images_and_grey_cells() -> None:
    items = [(_image(seed=i), np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([i])) for i in range(5)]
    tiles = zoom_out(items, 0.5)
    assert len(tiles) == 2
    assert tiles[1].xyxy.tolist() == [[5.0, 5.0, 15.0, 15.0]] and tiles[1].class_id.tolist() == [4]
    assert tiles[1].origin.tolist() == [4]  # the fifth box of the input
    assert (tiles[1].image[:, 50:] == GREY).all() and (tiles[1].image[50:, :] == GREY).all()


def test_tiny_boxes_survive_unless_under_one_pixel() -> None:
    boxes = np.array([[0, 0, 4, 4], [10, 10, 12, 40], [20, 20, 60, 21]], dtype=float)  # 4x4, 2x30, 40x1
    (tile,) = zoom_out([(_image(), boxes, np.zeros(3))], 0.25)
    assert tile.xyxy.tolist() == [[0.0, 0.0, 1.0, 1.0]]  # 1 x 1 px: kept; 0.5 wide and 0.25 high: dropped
    assert tile.origin.tolist() == [0]


@pytest.mark.parametrize(
    ("z", "k", "cell"),
    [(0.5, 2, (0, 50, 50, 50)), (1 / 3, 3, (0, 33, 33, 33)), (0.3, 3, (0, 33, 30, 30)), (0.4, 2, (0, 50, 40, 40))],
)
def test_non_integer_zoom_out_shrinks_by_z_and_fits_the_grid(z: float, k: int, cell: tuple) -> None:
    _, placed = mosaic_layout([(100, 100)] * (k * k), z)
    assert len(placed) == k * k and placed[k] == cell
    assert all(x + w <= 100 and y + h <= 100 for x, y, w, h in placed)


def test_a_larger_image_is_shrunk_to_its_cell() -> None:
    (mw, mh), placed = mosaic_layout([(100, 100), (400, 200)], 0.5)
    assert (mw, mh) == (100, 100) and placed[1] == (50, 0, 50, 25)


# --- variants, determinism, scales -----------------------------------------------------------------------------


@pytest.mark.parametrize("z", [0.5, 1.5, 2])
def test_a_variant_is_a_yolo_dataset_built_the_same_every_time(tmp_path: Path, z: float) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=5)
    truth = load_ground_truth(data.parent, "val")
    first, counts = build_variant(truth, z, tmp_path / "a")
    again, _ = build_variant(truth, z, tmp_path / "b")
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for name in files:
        if name not in ("data.yaml", "variant.json"):
            assert (first / name).read_bytes() == (again / name).read_bytes(), name
    n_images = {0.5: 2, 1.5: 20, 2: 20}[z]  # 5 images: 2 mosaics of up to 4; 4 crops each
    assert counts["images"] == n_images == len(list((first / "images").iterdir()))
    variant = load_ground_truth(first, "val")
    assert len(variant.images) == n_images and variant.names == truth.names
    assert counts["boxes"] == sum(len(b) for b in variant.boxes)
    if z == 0.5:  # labels read back as written: the first image's boxes at half size in the top-left cell
        np.testing.assert_allclose(variant.boxes[0].xyxy[: len(truth.boxes[0])], truth.boxes[0].xyxy / 2, atol=1e-5)
    # unchanged source: reused, not rebuilt
    stamp = (first / "variant.json").stat().st_mtime_ns
    assert build_variant(truth, z, first)[1] == counts and (first / "variant.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2, "must be a list of positive numbers"),
        ("2", "must be a list of positive numbers"),
        ([], "must be a list of positive numbers"),
        ([0.5, 0], "must be a list of positive numbers"),
        ([1, -2], "must be a list of positive numbers"),
        ([1, "x"], "must be a list of positive numbers"),
        ([1, True], "must be a list of positive numbers"),
        ([1, float("nan")], "must be a list of positive numbers"),
        ([2, 2.0], "lists 2.0 twice"),
    ],
)
def test_bad_scales_are_one_line(value: object, message: str) -> None:
    with pytest.raises(DroneVisionError, match=message) as err:
        check_scales(value)
    assert "\n" not in str(err.value)


def test_scales_need_weights(tmp_path: Path) -> None:
    data = make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=1)
    (tmp_path / "preds").mkdir()
    cfg = compose_config(
        "evaluate",
        f"predictions={tmp_path / 'preds'}",
        f"dataset.path={data.parent}",
        f"out_dir={tmp_path / 'out'}",
        "scales=[0.5,2]",
    )
    from dronevision.evaluate.command import run

    with pytest.raises(DroneVisionError, match="scales= needs weights="):
        run(cfg)


def test_every_scale_is_scored_and_scale_one_is_the_split_itself(tmp_path: Path) -> None:
    """Detections made elsewhere with a fixed 3-pixel error (the scoring is pycocotools, for real): such an error
    hurts small (zoomed-out) objects most. The model path is covered end to end below."""
    from dronevision.evaluate import command
    from dronevision.evaluate.altitude import evaluate_altitude
    from dronevision.infer.sliced import SliceSettings
    from dronevision.schema import Detections

    def shifted(detector: object, truth: object, **_: object) -> tuple[list[Detections], float]:
        return [Detections(b.xyxy + 3, b.class_id, np.full(len(b), 0.9)) for b in truth.boxes], 0.0

    truth = load_ground_truth(make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=6, seed=1).parent, "val")
    predictions, _ = shifted(None, truth)
    coco = command.compute_metrics("coco", truth, predictions)
    kw = {"detector": None, "settings": SliceSettings(), "batch": 2, "out_dir": tmp_path / "out", "detect": shifted}
    result = evaluate_altitude([0.5, 1, 2, 3], truth, predictions, coco=coco, **kw)
    per = result["per_scale"]
    assert per["1"]["map50"] == coco["overall"]["AP50"] and per["1"]["map50_95"] == coco["overall"]["AP"]
    assert per["1"]["images"] == 6 and per["2"]["images"] == 24 and per["3"]["images"] == 54
    assert per["0.5"]["images"] == 2 and per["0.5"]["dropped"] == 0
    assert per["0.5"]["map50"] < per["1"]["map50"] < per["2"]["map50"] <= per["3"]["map50"]
    assert (tmp_path / "out" / "altitude_curve.png").is_file()


def test_known_altitude_resizes_each_variant_back_to_the_training_scale(tmp_path: Path) -> None:
    """With ``known_gsd`` each variant is footage of known GSD (the training's / z): GSD-aware inference resizes a
    2x zoom by 1/2, a 0.5x mosaic by 2. Without it the variants carry no GSD."""
    from dronevision.evaluate.altitude import evaluate_altitude
    from dronevision.infer.gsd import GsdScaler
    from dronevision.infer.sliced import SliceSettings
    from dronevision.schema import Detections

    factors: dict[bool, list] = {True: [], False: []}

    def truth_back(detector: object, truth: object, *, settings: SliceSettings, **_: object) -> tuple[list, float]:
        factors[known].append(GsdScaler(settings.gsd).factor(truth.sizes[0][0]))
        return [Detections(b.xyxy, b.class_id, np.full(len(b), 0.9)) for b in truth.boxes], 0.0

    truth = load_ground_truth(make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=4, seed=2).parent, "val")
    predictions = [Detections(b.xyxy, b.class_id, np.full(len(b), 0.9)) for b in truth.boxes]
    for known in (True, False):
        kw = {"detector": None, "batch": 2, "out_dir": tmp_path / str(known), "detect": truth_back}
        result = evaluate_altitude([0.5, 1, 2, 3], truth, predictions, settings=SliceSettings(), known_gsd=known, **kw)
        assert result["known_gsd"] is known and result["per_scale"]["2"]["map50"] == pytest.approx(1.0)
    assert factors[True] == pytest.approx([2.0, 0.5, 1 / 3])  # scale 1 is the split's own predictions
    assert factors[False] == [None, None, None]


# --- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_with_scales_reports_each_scale(tiny_weights: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from dronevision.evaluate.command import run

    data = make_yolo_dataset(tmp_path / "ds", n_train=1, n_val=4, seed=3)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config(
        "evaluate",
        f"weights={tiny_weights}",
        f"dataset.path={data.parent}",
        f"out_dir={tmp_path / 'out'}",
        f"mlflow.tracking_uri={store}",
        "protocol=coco",
        "pictures.enabled=false",
        "ultralytics.enabled=false",
        "scales=[0.5,1,2]",
    )
    summary = run(cfg)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    altitude = metrics["altitude"]
    assert altitude["scales"] == [0.5, 1.0, 2.0] and set(altitude["per_scale"]) == {"0.5", "1", "2"}
    for entry in altitude["per_scale"].values():
        assert 0 <= entry["map50"] <= 1 and 0 <= entry["map50_95"] <= 1
    assert [altitude["per_scale"][z]["images"] for z in ("0.5", "1", "2")] == [1, 4, 16]
    assert altitude["per_scale"]["1"]["map50"] == pytest.approx(metrics["coco"]["overall"]["AP50"], abs=1e-6)
    assert altitude["per_scale"]["1"]["map50_95"] == pytest.approx(metrics["coco"]["overall"]["AP"], abs=1e-6)
    assert (tmp_path / "out" / "altitude_curve.png").stat().st_size > 1000
    assert (tmp_path / "out" / "altitude" / "2" / "data.yaml").is_file()
    assert summary["altitude"]["per_scale"] == altitude["per_scale"]
    logged = MlflowClient(store).get_run(summary["mlflow"]["run_id"]).data.metrics
    assert {"eval/altitude/0.5/map50", "eval/altitude/2/map50_95"} <= set(logged)

    # the 1x entry is the plain evaluation's number (an evaluation without scales on the same split)
    plain = run(
        compose_config(
            "evaluate",
            f"weights={tiny_weights}",
            f"dataset.path={data.parent}",
            f"out_dir={tmp_path / 'plain'}",
            f"mlflow.tracking_uri={store}",
            "protocol=coco",
            "pictures.enabled=false",
            "ultralytics.enabled=false",
        )
    )
    assert plain["altitude"] is None
    assert altitude["per_scale"]["1"]["map50"] == pytest.approx(plain["metrics"]["coco"]["AP50"], abs=1e-6)
