"""Golden detections: evaluate and pre-labelling give the same boxes as before the inference layer was rebuilt, and
the benchmark's end-to-end path gives evaluate's.

``tests/fixtures/golden_detections.json`` was recorded with the code as it stood before ``dronevision.infer``
existed (``DV_RECORD_GOLDEN=1 pytest tests/test_golden_inference.py`` writes it again). The model is a seeded,
untrained yolov8n with the VisDrone classes (batch-norm statistics from the test images, class biases set so
that it finds boxes), saved as a checkpoint and exported to ONNX here: no weights are stored. Boxes are compared
with a tolerance for floating-point noise between CPUs; boxes within ``MARGIN`` of the confidence threshold may
appear on one side only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dronevision.dataset.visdrone import CATEGORIES
from dronevision.infer import SliceSettings

from .conftest import VISDRONE_MINI, compose_config

IMAGES = VISDRONE_MINI / "images"
GOLDEN = Path(__file__).parent / "fixtures" / "golden_detections.json"
RECORD = os.environ.get("DV_RECORD_GOLDEN") == "1"
VISDRONE_NAMES = list(CATEGORIES[1:11])  # VisDrone-DET's scored classes, pedestrian ... motor
CONF = 0.3
MARGIN = 0.02  # boxes this close to CONF may flip between CPUs
IMGSZ = 320


@pytest.fixture(scope="module")
def golden_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded untrained yolov8n (VisDrone's 10 classes) as a .pt and a dynamic ONNX export."""
    import cv2
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    root = tmp_path_factory.mktemp("golden")
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(VISDRONE_NAMES), verbose=False)
    model.names = dict(enumerate(VISDRONE_NAMES))
    # batch-norm statistics from the test images (untrained, activations would vanish), class logits lowered so that
    # tens of boxes per image pass CONF
    frames = [cv2.resize(cv2.imread(str(p)), (IMGSZ, IMGSZ))[..., ::-1] for p in sorted(IMAGES.iterdir())]
    x = torch.from_numpy(np.stack(frames).copy()).permute(0, 3, 1, 2).float() / 255
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.momentum = 0.03
    model.eval()
    for head in model.model[-1].cv3:
        head[-1].bias.data.fill_(-1.8)
    model.args = {"imgsz": IMGSZ, "task": "detect"}
    weights = root / "golden.pt"
    torch.save({"model": model, "train_args": {"imgsz": IMGSZ, "task": "detect"}, "epoch": -1}, weights)
    onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=IMGSZ, dynamic=True, simplify=False, verbose=False))
    return {"pt": weights, "onnx": onnx}


def _as_rows(det: object) -> list[list[float]]:
    xyxy, cls, conf = det.xyxy, det.class_id, det.confidence  # type: ignore[attr-defined]
    return [[*map(float, b), float(s), int(c)] for b, s, c in zip(xyxy.tolist(), conf.tolist(), cls.tolist())]


def _evaluate_rows(weights: Path, out: Path, *overrides: str) -> dict[str, list[list[float]]]:
    """Detections of the evaluate command, per image file name, from its COCO results file."""
    from dronevision.evaluate.command import run as evaluate

    cfg = compose_config(
        "evaluate",
        f"weights={weights}",
        f"dataset.path={VISDRONE_MINI}",
        f"out_dir={out}",
        f"mlflow.tracking_uri=sqlite:///{out.parent}/{out.name}.db",
        f"model.conf={CONF}",
        f"model.imgsz={IMGSZ}",
        "model.max_det=300",
        "model.runtime=auto" if weights.suffix == ".pt" else "model.runtime=ort-cpu",
        "predictions.format=coco",
        "pictures.enabled=false",
        *overrides,
    )
    evaluate(cfg)
    images = sorted(p.name for p in (VISDRONE_MINI / "images").iterdir())
    rows: dict[str, list[list[float]]] = {name: [] for name in images}
    for r in json.loads((out / "predictions.json").read_text()):
        x, y, w, h = r["bbox"]
        key = r["image_id"] if isinstance(r["image_id"], str) else images[int(r["image_id"])]
        rows[Path(key).name if Path(key).suffix else f"{key}.jpg"].append(
            [x, y, x + w, y + h, r["score"], int(r["category_id"])]
        )
    return rows


def _prelabel_rows(weights: Path, **kwargs: object) -> dict[str, list[list[float]]]:
    from dronevision.sample.prelabel import prelabel

    images = sorted((VISDRONE_MINI / "images").iterdir())
    items, _ = prelabel(weights, images, conf=CONF, imgsz=IMGSZ, **kwargs)  # type: ignore[arg-type]
    return {path.name: _as_rows(det) for path, _, det in items}


CASES = {
    "evaluate_pt": lambda m, out: _evaluate_rows(m["pt"], out),
    "evaluate_onnx": lambda m, out: _evaluate_rows(m["onnx"], out),
    "evaluate_pt_sliced": lambda m, out: _evaluate_rows(
        m["pt"],
        out,
        "slicing.enabled=true",
        "slicing.tile=192",
        "slicing.overlap=0.2",
        "slicing.merge=nmm",
        "slicing.match=ios",
    ),  # recorded with the group's NMM/IoS, before its default became NMS/IoU
    "prelabel_pt": lambda m, out: _prelabel_rows(m["pt"]),
    "prelabel_onnx_sliced": lambda m, out: _prelabel_rows(
        m["onnx"], runtime="ort-cpu", slicing=SliceSettings(enabled=True, tile=192, overlap=0.2, full_frame=False)
    ),
}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def unmatched(expected: list[list[float]], got: list[list[float]], *, conf: float) -> list[list[float]]:
    """Boxes of ``expected`` clearly above ``conf`` with no box of ``got`` of the same class, IoU >= 0.98 and a
    score within 0.002.

    Examples:
        >>> unmatched([[0, 0, 10, 10, 0.9, 1]], [[0, 0, 10, 10.01, 0.9001, 1]], conf=0.3)
        []
        >>> unmatched([[0, 0, 10, 10, 0.9, 1], [0, 0, 5, 5, 0.31, 0]], [[0, 0, 10, 10, 0.9, 2]], conf=0.3)
        [[0.0, 0.0, 10.0, 10.0, 0.9, 1.0]]
    """
    e = np.asarray(expected, dtype=float).reshape(-1, 6)
    g = np.asarray(got, dtype=float).reshape(-1, 6)
    e = e[e[:, 4] >= conf + MARGIN]
    if not len(e):
        return []
    if not len(g):
        return e.tolist()
    iou = _iou(e[:, :4], g[:, :4])
    ok = (iou >= 0.98) & (e[:, None, 5] == g[None, :, 5]) & (np.abs(e[:, None, 4] - g[None, :, 4]) <= 0.002)
    return [r for r, hit in zip(e.tolist(), ok.any(axis=1)) if not hit]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_detections_equal_the_recorded_ones(golden_model: dict[str, Path], case: str, tmp_path: Path) -> None:
    got = CASES[case](golden_model, tmp_path / case)
    if RECORD:
        record = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        record[case] = {k: [[round(v, 4) for v in row] for row in rows] for k, rows in got.items()}
        GOLDEN.write_text(json.dumps(record, indent=0, sort_keys=True) + "\n")
        pytest.skip(f"recorded {case}")
    expected = json.loads(GOLDEN.read_text())[case]
    assert sorted(got) == sorted(expected)
    total = sum(len(r) for r in expected.values())
    assert total >= 5, f"{case}: the golden record holds only {total} boxes; the test would say little"
    for image in expected:
        assert unmatched(expected[image], got[image], conf=CONF) == [], f"{case} {image}: recorded boxes missing"
        assert unmatched(got[image], expected[image], conf=CONF) == [], f"{case} {image}: new boxes"


@pytest.mark.slow
def test_benchmark_end_to_end_gives_evaluates_detections(golden_model: dict[str, Path], tmp_path: Path) -> None:
    """The benchmark's timed end-to-end step decodes through the inference layer: its detections are evaluate's."""
    from ultralytics import YOLO

    from dronevision.benchmark import make_e2e_step
    from dronevision.infer import load_detector, open_session, read_bgr

    weights = tmp_path / "static.pt"  # exported beside a copy: golden.onnx (dynamic) stays as it is
    weights.write_bytes(golden_model["pt"].read_bytes())
    static = Path(YOLO(str(weights)).export(format="onnx", imgsz=IMGSZ, dynamic=False, verbose=False))
    images = sorted(IMAGES.iterdir())
    nms = {"conf": CONF, "iou": 0.7, "max_det": 300}
    detector = load_detector(static, runtime="ort-cpu", threads=1, **nms)
    expected = detector.predict([read_bgr(p) for p in images], batch=1)
    session = open_session(static, "ort-cpu", threads=1, batch=1)
    step = make_e2e_step(session, [p.read_bytes() for p in images], imgsz=IMGSZ, nms=nms, end2end=False)
    got = [det for _ in images for det in step()]
    assert sum(len(d) for d in expected) >= 5
    for a, b in zip(expected, got):
        assert a.class_id.tolist() == b.class_id.tolist()
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-6, rtol=0)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-7, rtol=0)
