"""The evaluate and compare commands end to end, and the analysts' notebook, on a tiny model trained here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dronevision.dataset import command as build
from dronevision.dataset import load_yolo_dataset
from dronevision.evaluate.command import run as evaluate
from dronevision.evaluate.compare import run as compare
from dronevision.synth import write_visdrone_det_set
from dronevision.train import run as train

from .conftest import REPO, VISDRONE_MINI, compose_config, make_yolo_dataset

PNGS = {"pr_coco.png", "pr_visdrone.png", "confusion_matrix.png", "per_class.png", "worst_images.png"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A VisDrone-format set with ignored regions, built into a dataset, and a model trained on it for one epoch."""
    root = tmp_path_factory.mktemp("evaluate")
    source = write_visdrone_det_set(
        root / "visdrone", n_images=16, boxes_per_image=6, n_videos=4, resolution_wh=(192, 128)
    )
    build.run(
        compose_config(
            "dataset_build",
            f"source.path={source}",
            f"out_dir={root / 'dataset'}",
            "workers=1",
            "split.val_fraction=0.25",
        )
    )
    store = f"sqlite:///{root}/mlflow.db"
    summary = train(
        compose_config(
            "train",
            "debug=fast",
            f"dataset.path={root / 'dataset'}",
            "train.fraction=1.0",
            "train.epochs=2",
            f"out_dir={root / 'train'}",
            f"mlflow.tracking_uri={store}",
            "mlflow.experiment=evaluate-test",
        )
    )
    return {"root": root, "store": store, "source": source, "dataset": root / "dataset", "summary": summary}


def _evaluate(trained: dict, out: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "evaluate",
        f"out_dir={out}",
        f"dataset.path={trained['dataset']}",
        f"mlflow.tracking_uri={trained['store']}",
        *overrides,
    )
    return evaluate(cfg)


@pytest.mark.slow
def test_evaluating_a_checkpoint_gives_both_protocols_pictures_and_an_mlflow_entry(
    trained: dict, tmp_path: Path
) -> None:
    weights = Path(trained["summary"]["weights"])
    summary = _evaluate(trained, tmp_path / "pt", f"weights={weights}", "predictions.format=visdrone")
    metrics = json.loads((tmp_path / "pt" / "metrics.json").read_text())
    for protocol, keys in (
        ("coco", {"AP", "AP50", "AP75", "AP_small", "AR_1", "AR_500"}),
        ("visdrone", {"AP", "AR_500"}),
    ):
        assert keys <= set(metrics[protocol]["overall"]) and metrics[protocol]["per_class"]
    assert set(metrics["ultralytics"]) >= {"map50", "map50_95", "minus_ours"}
    assert {p.name for p in (tmp_path / "pt").glob("*.png")} >= PNGS
    # one .txt per val image in the official format, best score first
    txts = sorted((tmp_path / "pt" / "predictions").glob("*.txt"))
    assert len(txts) == summary["dataset"]["n_images"]
    scores = [float(line.split(",")[4]) for line in txts[0].read_text().splitlines()]
    assert scores == sorted(scores, reverse=True)
    # logged to the training's own MLflow run
    assert summary["mlflow"]["attached_to_model_run"] and summary["mlflow"]["run_id"] == trained["summary"]["run_id"]
    client = MlflowClient(trained["store"])
    run = client.get_run(summary["mlflow"]["run_id"])
    assert "eval/val/coco/AP50" in run.data.metrics and "eval/val/visdrone/AP" in run.data.metrics
    assert "evaluate/metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}

    # the ONNX export goes through the same code path and gives the same numbers (within FP noise)
    onnx = _evaluate(trained, tmp_path / "onnx", f"weights={trained['summary']['onnx']}", "ultralytics.enabled=false")
    for key in ("AP", "AP50"):
        assert onnx["metrics"]["coco"][key] == pytest.approx(summary["metrics"]["coco"][key], abs=0.02)


@pytest.mark.slow
def test_an_openvino_ir_folder_is_evaluated_like_its_onnx(trained: dict, tmp_path: Path) -> None:
    import openvino as ov

    from dronevision.export.openvino import write_ir
    from dronevision.infer import read_metadata_props

    onnx = Path(trained["summary"]["onnx"])
    folder = write_ir(ov.Core().read_model(str(onnx)), tmp_path / "m_openvino_model", read_metadata_props(onnx)).parent
    from_onnx = _evaluate(trained, tmp_path / "onnx", f"weights={onnx}", "model.runtime=openvino", "protocol=coco")
    from_ir = _evaluate(trained, tmp_path / "ir", f"weights={folder}", "protocol=coco")  # runtime auto: openvino
    for key in ("AP", "AP50", "AR_100"):
        assert from_ir["metrics"]["coco"][key] == pytest.approx(from_onnx["metrics"]["coco"][key], abs=1e-4)
    # ultralytics' validator opened the same folder (its OpenVINO backend) for the side-by-side mAP
    metrics = json.loads((tmp_path / "ir" / "metrics.json").read_text())
    assert set(metrics["ultralytics"]) >= {"map50", "map50_95", "minus_ours"} and metrics["ultralytics"]["map50"] >= 0


def _perfect_visdrone_predictions(folder: Path) -> Path:
    """Every scored ground-truth box of visdrone-mini as a detection, in the official result format."""
    folder.mkdir()
    for ann in sorted((VISDRONE_MINI / "annotations").glob("*.txt")):
        lines = []
        for line in ann.read_text().splitlines():
            f = line.strip().rstrip(",").split(",")
            if len(f) >= 6 and f[5] not in ("0", "11") and f[4] != "0":
                lines.append(f"{f[0]},{f[1]},{f[2]},{f[3]},0.9,{f[5]},-1,-1")
        (folder / ann.name).write_text("\n".join(lines) + "\n")
    return folder


def test_scoring_detections_made_elsewhere_on_a_raw_visdrone_folder(tmp_path: Path) -> None:
    preds = _perfect_visdrone_predictions(tmp_path / "preds")
    cfg = compose_config(
        "evaluate",
        f"predictions={preds}",
        f"dataset.path={VISDRONE_MINI}",
        f"out_dir={tmp_path / 'out'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
    )
    summary = evaluate(cfg)
    assert summary["dataset"]["kind"] == "visdrone-det" and summary["weights"] is None
    assert summary["metrics"]["visdrone"]["AP"] == pytest.approx(1.0)
    assert summary["metrics"]["coco"]["AP50"] == pytest.approx(1.0)
    # a detection dropped from one file lowers recall
    first = sorted(preds.glob("*.txt"))[0]
    first.write_text("".join(first.read_text().splitlines(keepends=True)[1:]))
    lower = evaluate(
        compose_config(
            "evaluate",
            *[
                f"{k}={v}"
                for k, v in (
                    ("predictions", preds),
                    ("dataset.path", VISDRONE_MINI),
                    ("out_dir", tmp_path / "out2"),
                    ("mlflow.tracking_uri", f"sqlite:///{tmp_path}/mlflow.db"),
                )
            ],
        )
    )
    assert lower["metrics"]["visdrone"]["AR_500"] < 1.0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
def test_bad_input_is_one_line_each(trained: dict, tmp_path: Path) -> None:
    weights = trained["summary"]["weights"]
    store = f"mlflow.tracking_uri={trained['store']}"
    empty = make_yolo_dataset(tmp_path / "empty", n_val=0).parent  # a val split without images
    other = make_yolo_dataset(tmp_path / "other")  # one class: vehicle
    model_classes = list(load_yolo_dataset(trained["dataset"]).names.values())
    cases = [
        (  # weights and dataset with different class lists: both lists named
            ["dronevision.evaluate", f"weights={weights}", f"dataset.path={other}", store],
            f"have classes {model_classes} but dataset {other} has ['vehicle']",
        ),
        (["dronevision.evaluate", f"weights={weights}", f"dataset.path={empty}", store], "holds no images"),
        (  # a static ONNX export asked to run at another size
            [
                "dronevision.evaluate",
                f"weights={trained['summary']['onnx']}",
                f"dataset.path={trained['dataset']}",
                "model.imgsz=128",
                store,
            ],
            "static ONNX input",
        ),
        (["dronevision.evaluate.compare", "runs=[0123456789abcdef]", store], "run 0123456789abcdef does not exist"),
        (["dronevision.evaluate", f"dataset.path={trained['dataset']}", store], "exactly one of weights"),
    ]
    for args, expected in cases:
        result = _cli(*args, f"out_dir={tmp_path / 'out'}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, result.stderr[-1500:])
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_two_runs_side_by_side_and_the_notebook_runs(trained: dict, tmp_path: Path, monkeypatch) -> None:
    # a second checkpoint, not evaluated yet: compare evaluates it itself
    second = train(
        compose_config(
            "train",
            "debug=fast",
            f"dataset.path={trained['dataset']}",
            "train.fraction=1.0",
            "export.enabled=false",
            f"out_dir={tmp_path / 'second'}",
            f"mlflow.tracking_uri={trained['store']}",
            "mlflow.experiment=evaluate-test",
            "train.seed=3",
        )
    )
    _evaluate(trained, tmp_path / "eval-first", f"weights={trained['summary']['weights']}")
    ids = [trained["summary"]["run_id"], second["run_id"]]
    summary = compare(
        compose_config(
            "compare",
            f"runs=[{ids[0]},{ids[1]}]",
            f"out_dir={tmp_path / 'cmp'}",
            f"mlflow.tracking_uri={trained['store']}",
        )
    )
    assert [r["run_id"] for r in summary["runs"]] == ids
    assert [r["metrics_source"] for r in summary["runs"]] == ["recorded", "evaluated here"]
    header, rows = summary["table"]["header"], summary["table"]["rows"]
    assert {"AP", "AP_small", "frames/s"} <= set(header) and any(h.startswith("AP ") for h in header)
    assert all(row[header.index("frames/s")] > 0 for row in rows)
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000
    client = MlflowClient(trained["store"])
    logged = client.get_run(summary["mlflow"]["run_id"])
    assert logged.data.tags["compared_runs"] == ",".join(ids)
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "compare")} >= {"compare/compare.csv"}

    # the analysts' notebook, headless through a real Jupyter kernel
    import nbformat
    from nbclient import NotebookClient

    out = tmp_path / "notebook"
    for key, value in (
        ("TRACKING_URI", trained["store"]),
        ("RUNS", ",".join(ids)),
        ("DATASET", str(trained["dataset"])),
        ("OUT", str(out)),
    ):
        monkeypatch.setenv(key, value)
    nb = nbformat.read(REPO / "notebooks" / "evaluate_checkpoints.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    assert {p.name for p in out.glob("*.png")} == {"pr_curves.png", "per_class_ap.png", "samples.png"}
    tables = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "execute_result"
    ]
    assert any("AP50" in str(o["data"].get("text/plain", "")) for o in tables)
