"""Hostile model files and missing datasets (issue 15 items 3 and 4).

A ``.pt`` that is no detector's checkpoint (text, random bytes, a torch file without a model, a classification model)
is one line and exit 2 in every stage that takes one, with nothing left behind; evaluate without ``dataset.path`` and
INT8 export without ``export.calibration`` take the dataset the weights were trained on and say so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dronevision.errors import DroneVisionError
from dronevision.evaluate.command import run as evaluate
from dronevision.export import run as export
from dronevision.mlflow_run.ref import find_training_dataset
from dronevision.train import run as train

from .conftest import REPO, VISDRONE_MINI, compose_config, make_yolo_dataset

pytestmark = pytest.mark.faults

WRONG_TASK = "a classify model; dronevision needs a detect model"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, env=env)


def _one_line(result: subprocess.CompletedProcess, expected: str, out: Path) -> None:
    """Exit 2, one line on stderr holding ``expected``, and no output folder."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert len(lines[0]) < 400, "one short line, not a list of class names"
    assert not out.exists(), f"left behind: {sorted(p.name for p in out.iterdir())}"


# --- files that are not a detector's checkpoint ----------------------------------------------------------------


@pytest.fixture(scope="module")
def not_detectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``best.pt`` files that are not a detector's checkpoint, and a classification checkpoint (no downloads)."""
    import numpy as np
    import torch
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("not-detectors")
    files = {name: root / name / "best.pt" for name in ("text", "random", "dict", "tensor", "classify")}
    for path in files.values():
        path.parent.mkdir()
    files["text"].write_text("weights: see the shared drive\n")
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"epoch": 3, "weights": torch.zeros(4)}, files["dict"])
    torch.save(torch.zeros(2, 3), files["tensor"])
    YOLO("yolov8n-cls.yaml").save(files["classify"])  # 1,000 ImageNet class names, task 'classify'
    return files


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text", "best.pt: not an ultralytics checkpoint (UnpicklingError"),
        ("random", "best.pt: not an ultralytics checkpoint ("),
        ("dict", "best.pt: not an ultralytics checkpoint ("),
        ("tensor", "best.pt: not an ultralytics checkpoint (AttributeError"),
        ("classify", f"best.pt: {WRONG_TASK}"),
    ],
)
def test_evaluate_refuses_a_file_that_is_no_detector_in_one_line(
    not_detectors: dict[str, Path], tmp_path: Path, kind: str, expected: str
) -> None:
    out = tmp_path / "out"  # Hydra writes .hydra/ and evaluate.log there first: both removed
    _one_line(_cli("dronevision.evaluate", f"weights={not_detectors[kind]}", f"out_dir={out}"), expected, out)


def test_evaluate_refuses_a_classification_model_before_writing(not_detectors: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = compose_config(
        "evaluate",
        f"weights={not_detectors['classify']}",
        f"dataset.path={VISDRONE_MINI}",
        f"out_dir={out}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    with pytest.raises(DroneVisionError, match=f"^weights .*best.pt: {WRONG_TASK}$"):
        evaluate(cfg)
    assert not out.exists()


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("export", f"best.pt: {WRONG_TASK}"),  # the same check as evaluate's
        ("benchmark", "is not an .onnx file"),  # takes exports only
    ],
)
def test_export_and_benchmark_refuse_a_classification_checkpoint_in_one_line(
    not_detectors: dict[str, Path], tmp_path: Path, stage: str, expected: str
) -> None:
    out = tmp_path / "out"
    key = "weights" if stage == "export" else "model"
    _one_line(_cli(f"dronevision.{stage}", f"{key}={not_detectors['classify']}", f"out_dir={out}"), expected, out)


def test_track_refuses_a_classification_checkpoint_in_one_line(not_detectors: dict[str, Path], tmp_path: Path) -> None:
    import cv2
    import numpy as np

    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    result = _cli("dronevision.track", f"model={not_detectors['classify']}", f"input={video}", f"out_dir={out}")
    _one_line(result, WRONG_TASK, out)


@pytest.mark.slow
def test_benchmark_refuses_a_classification_onnx_by_its_metadata(tmp_path: Path) -> None:
    from ultralytics import YOLO

    checkpoint = tmp_path / "cls.pt"
    YOLO("yolov8n-cls.yaml").save(checkpoint)
    target = Path(YOLO(str(checkpoint)).export(format="onnx", imgsz=32, simplify=False))  # beside it: cls.onnx
    assert target == tmp_path / "cls.onnx"
    out = tmp_path / "out"
    _one_line(_cli("dronevision.benchmark", f"model={target}", f"out_dir={out}"), f"cls.onnx: {WRONG_TASK}", out)


# --- the dataset a model was trained on ------------------------------------------------------------------------


def _write(folder: Path, name: str, content: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (  # a training's summary.json, two folders above train/weights/best.pt
            {"summary.json": {"epochs_completed": 1, "weights": "w", "dataset": {"path": "/d/data.yaml"}}},
            ("/d/data.yaml", "summary.json"),
        ),
        (  # an interrupted training: config.yaml only
            {"config.yaml": "task_name: train\ndataset:\n  path: /d/cfg\n"},
            ("/d/cfg", "config.yaml"),
        ),
        (  # an evaluation's summary names a dataset the model was not trained on
            {"summary.json": {"weights": "w", "dataset": {"path": "/d/val"}}},
            None,
        ),
        ({"config.yaml": "task_name: evaluate\ndataset:\n  path: /d/x\n"}, None),
        ({"summary.json": "{not json", "config.yaml": ": : :"}, None),
        ({}, None),
    ],
)
def test_find_training_dataset_reads_the_training_records(
    tmp_path: Path, layout: dict[str, object], expected: tuple[str, str] | None
) -> None:
    weights = tmp_path / "run" / "train" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    for name, content in layout.items():
        _write(tmp_path / "run", name, content)
    found = find_training_dataset(weights)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found[0] == expected[0] and found[1] == str(tmp_path / "run" / expected[1])


def test_find_training_dataset_follows_an_export_to_its_checkpoint(tmp_path: Path) -> None:
    weights = tmp_path / "run" / "train" / "weights" / "best.pt"
    weights.parent.mkdir(parents=True)
    _write(tmp_path / "run", "summary.json", {"epochs_completed": 1, "dataset": {"path": "/d/data.yaml"}})
    onnx = tmp_path / "export" / "model_fp32.onnx"
    _write(onnx.parent, "summary.json", {"weights": str(weights), "variants": {"fp32": {"path": str(onnx)}}})
    assert find_training_dataset(onnx) == ("/d/data.yaml", str(tmp_path / "run" / "summary.json"))
    other = tmp_path / "export" / "model_other.onnx"  # a file the export's summary does not name
    assert find_training_dataset(other) is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model trained for one epoch on a generated dataset by the train command, and a detector checkpoint that
    names no dataset (an untrained yolov8n saved as ultralytics saves models)."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("trained")
    data_yaml = make_yolo_dataset(root / "ds")
    store = f"sqlite:///{root}/mlflow.db"
    summary = train(
        compose_config(
            "train",
            "debug=fast",
            f"dataset.path={data_yaml.parent}",
            "train.fraction=1.0",
            f"out_dir={root / 'train'}",
            f"mlflow.tracking_uri={store}",
            "mlflow.experiment=faults-models",
        )
    )
    untrained = root / "untrained" / "best.pt"
    untrained.parent.mkdir()
    YOLO("yolov8n.yaml").save(untrained)
    return {"root": root, "store": store, "dataset": data_yaml, "summary": summary, "untrained": untrained}


def _evaluate_without_dataset(weights: Path, out: Path, store: str) -> dict:
    cfg = compose_config(
        "evaluate",
        f"weights={weights}",
        f"out_dir={out}",
        f"mlflow.tracking_uri={store}",
        "pictures.enabled=false",
        "ultralytics.enabled=false",
    )
    summary = evaluate(cfg)
    assert cfg.dataset.path == summary["dataset"]["path"], "the config holds the path used"
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("model", ["weights", "onnx"])
def test_evaluate_without_dataset_path_scores_the_training_dataset(
    trained: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture, model: str
) -> None:
    weights = Path(trained["summary"][model])
    with caplog.at_level(logging.INFO, logger="dronevision.evaluate.command"):
        summary = _evaluate_without_dataset(weights, tmp_path / "out", trained["store"])
    record = trained["root"] / "train" / "summary.json"
    assert summary["dataset"]["path"] == str(trained["dataset"].resolve())
    assert summary["dataset"]["path_from"] == str(record) and summary["dataset"]["n_images"] == 4
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dataset.path not given")]
    assert said == [
        f"dataset.path not given: using {trained['dataset'].resolve()}, the dataset {weights.name} was trained on"
        f" (from {record})"
    ]
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["dataset"]["path"] == str(trained["dataset"].resolve())


@pytest.mark.slow
def test_evaluate_without_records_takes_the_checkpoints_training_arguments(trained: dict, tmp_path: Path) -> None:
    alone = tmp_path / "copied" / "best.pt"  # no training records near it
    alone.parent.mkdir()
    shutil.copy2(trained["summary"]["weights"], alone)
    summary = _evaluate_without_dataset(alone, tmp_path / "out", trained["store"])
    # ultralytics trained on the train command's copy of data.yaml (absolute image lists of the same dataset)
    assert summary["dataset"]["path"] == str(trained["root"] / "train" / "data" / "data.yaml")
    assert summary["dataset"]["path_from"] == "the training arguments in best.pt"
    assert summary["dataset"]["n_images"] == 4


@pytest.mark.slow
def test_evaluate_without_any_dataset_is_one_line(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("dronevision.evaluate", f"weights={trained['untrained']}", f"out_dir={out}")
    _one_line(result, "dataset.path is required: ", out)
    assert "names no training dataset that still exists; give dataset.path=<folder>" in result.stderr
    preds = tmp_path / "preds"
    preds.mkdir()
    result = _cli("dronevision.evaluate", f"predictions={preds}", f"out_dir={out}")
    _one_line(result, "dataset.path is required with predictions=", out)


@pytest.fixture(scope="module")
def int8_export(trained: dict) -> tuple[dict, Path, list[str]]:
    """INT8 ONNX of the trained model, calibrated without export.calibration; and the export's log messages."""
    out = trained["root"] / "export"
    logger = logging.getLogger("dronevision.export.command")
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        summary = export(
            compose_config(
                "export",
                f"weights={trained['summary']['weights']}",
                f"out_dir={out}",
                "threads=2",
                "export.int8=true",
                "export.calibration_images=4",
                "export.force=true",  # a 1-epoch model's INT8 drop is noise
            )
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return summary, out, said


@pytest.mark.slow
def test_int8_export_without_calibration_uses_the_training_dataset(trained: dict, int8_export: tuple) -> None:
    summary, out, said = int8_export
    record = trained["root"] / "train" / "summary.json"
    assert summary["int8"]["dataset"] == str(trained["dataset"].resolve())
    assert summary["int8"]["dataset_from"] == str(record)
    assert summary["parity"]["dataset"] == str(trained["dataset"].resolve())  # parity falls back to calibration
    assert summary["variants"]["int8"]["path"] is not None
    assert [m for m in said if m.startswith("export.calibration not given")] == [
        f"export.calibration not given: using {trained['dataset'].resolve()}, the dataset best.pt was trained on"
        f" (from {record})"
    ]


@pytest.mark.slow
def test_evaluating_an_export_finds_the_training_dataset_through_the_export(
    trained: dict, int8_export: tuple, tmp_path: Path
) -> None:
    _, out, _ = int8_export
    summary = _evaluate_without_dataset(out / "model_fp32.onnx", tmp_path / "out", trained["store"])
    assert summary["dataset"]["path"] == str(trained["dataset"].resolve())
    assert summary["dataset"]["path_from"] == str(trained["root"] / "train" / "summary.json")


@pytest.mark.slow
def test_int8_export_without_any_dataset_keeps_the_one_line_refusal(trained: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _cli("dronevision.export", f"weights={trained['untrained']}", "export.int8=true", f"out_dir={out}")
    _one_line(result, "export.int8=true needs export.calibration=", out)
