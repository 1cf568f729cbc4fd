"""Altitude robustness: plain YOLOv8n against dronevision's recipe, same budget, scored on zoomed test images.

1. trains, from scratch with the same budget (``--epochs`` at ``--imgsz``, batch ``--batch``, one class) on the
   train split of the bundled aerial-cars data (validation on its ``valid`` split):

   - **plain**: ultralytics alone, ``YOLO("yolov8n.yaml").train(data=..., device="cpu", workers=0, seed=..., ...)``,
     with its MLflow callback removed and torch on all cores once ultralytics has picked the device (as
     dronevision's trainer does; ultralytics alone leaves one core idle);
   - **recipe**: ``python -m dronevision.train dataset.path=<data> train.epochs=E train.imgsz=S <--recipe>``
     (default none: the default recipe, today ``augment=light``; e.g. ``--recipe experiment=altitude`` for the
     altitude recipe, yolov8s with ``light_zoom``; ``--recipe augment=aerial``), ONNX export off;

   each in a process of its own, its output in ``<out>/<name>.log``;
2. scores both ``best.pt`` on the TEST split at zoom 0.5, 1, 2 and 3 with ``python -m dronevision.evaluate
   ... dataset.split=test scales=[0.5,1,2,3] protocol=coco`` (COCO mAP50 and mAP50-95 per scale, see
   docs/evaluate.md "Altitude shift"): z < 1 as seen from higher up (shrunk, tiled), z > 1 from lower down (crops
   enlarged); each three times: with plain inference, with ``--infer`` (default ``slicing=altitude``: multi-scale
   inference for footage of unknown altitude, docs/evaluate.md) and with ``--known`` (default
   ``scales_known_gsd=true``: each variant's altitude known, so GSD-aware inference resizes it back to the training
   scale), so that the table shows what training and inference each bring;
3. prints Markdown tables per scale (mAP50, then mAP50-95; columns: plain, plain + infer, plain + known altitude,
   and the same for the recipe), the recipe's targets (mAP50 >= 0.71 at 1x, >= 0.65 at 2x, >= 0.55 at 3x) met or
   not in each of its columns, how far the recipe's 1x gap to plain is from noise (``--bootstrap``: a paired
   bootstrap over the test images, which are few: 15 in aerial-cars), the training time of each with the ratio,
   the command line, the CPU and the date, and writes it all to ``<out>/bench_altitude.json``.

    python scripts/bench_altitude.py                        # 30 epochs at 416 each: hours on a 2-core CPU
    python scripts/bench_altitude.py --recipe experiment=altitude
    python scripts/bench_altitude.py --seed 1 --out runs/bench_altitude_seed1   # the same, another draw: the noise
    python scripts/bench_altitude.py --skip-plain           # reuse <out>/plain's best.pt, train the recipe again
    python scripts/bench_altitude.py --skip-plain --skip-recipe --infer "slicing=altitude slicing.scales_focus=1"
    python scripts/bench_altitude.py --epochs 1 --imgsz 64 --fraction 0.1 --bootstrap 20 --out /tmp/smoke   # smoke
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_altitude")

REPO = Path(__file__).resolve().parents[1]
AERIAL_CARS = REPO / "data" / "samples" / "aerial-cars"
SCALES = (0.5, 1.0, 2.0, 3.0)
TARGETS = {1.0: 0.71, 2.0: 0.65, 3.0: 0.55}  # the recipe's mAP50 on the test split (issue 16)
# ultralytics' integrations dronevision's trainer drops too: its MLflow run, and Ray Tune (on whenever ray is installed)
DROPPED_CALLBACKS = ("ultralytics.utils.callbacks.mlflow", "ultralytics.utils.callbacks.raytune")


def scale_name(z: float) -> str:
    """A scale as dronevision.evaluate spells it in metrics.json ("0.5", "1", "2", "3")."""
    return f"{z:g}"


# --- child process: plain ultralytics --------------------------------------------------------------------------


def train_plain_child(spec_path: Path) -> None:
    """``YOLO("yolov8n.yaml").train(...)`` as the spec says; writes ``run.json`` (weights, seconds) beside it."""
    spec = json.loads(spec_path.read_text())
    import dronevision  # noqa: F401  (offline environment before ultralytics is imported)

    os.environ["MLFLOW_TRACKING_URI"] = spec["tracking_uri"]  # anything MLflow still writes goes to --out
    from ultralytics import YOLO

    from dronevision.train.speed import keep_threads

    def on_pretrain_routine_start(trainer: Any) -> None:  # the device is picked; no model or dataloader yet
        """No MLflow run (and no Ray Tune reports: on whenever ray is installed); torch on all cores."""
        for event, fns in trainer.callbacks.items():
            trainer.callbacks[event] = [f for f in fns if getattr(f, "__module__", "") not in DROPPED_CALLBACKS]
        if trainer.device.type == "cpu":
            keep_threads(os.cpu_count() or 1)

    model = YOLO(spec["arch"], task="detect")
    model.add_callback("on_pretrain_routine_start", on_pretrain_routine_start)
    started = time.perf_counter()
    model.train(**spec["args"])
    seconds = time.perf_counter() - started
    save_dir = Path(model.trainer.save_dir)
    best = Path(model.trainer.best)
    weights = best if best.is_file() else Path(model.trainer.last)
    record = {"weights": str(weights), "seconds": round(seconds, 2), "results_csv": str(save_dir / "results.csv")}
    (Path(spec["project"]) / "run.json").write_text(json.dumps(record, indent=2))


# --- parent: train, evaluate, compare --------------------------------------------------------------------------


def run_logged(cmd: list[str], log_path: Path) -> None:
    """A command in a process of its own, its output in ``log_path`` (and its tail in the error if it fails)."""
    log.info("running: %s  (output: %s)", shlex.join(cmd), log_path)
    with log_path.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"{shlex.join(cmd)} failed (exit {done.returncode}), see {log_path}:\n{tail}")


def train_seconds(results_csv: Path) -> float | None:
    """The training loop's seconds (epochs with their validation): the ``time`` of results.csv's last row."""
    if not results_csv.is_file():
        return None
    with results_csv.open() as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    return float(rows[-1]["time"]) if rows and rows[-1].get("time") else None


def train_plain(args: argparse.Namespace) -> dict[str, Any]:
    """Plain ultralytics YOLOv8n into ``<out>/plain`` (or the run already there with ``--skip-plain``)."""
    from dronevision.dataset import load_yolo_dataset, write_data_yaml

    project = args.out / "plain"
    record_path = project / "run.json"
    if not args.skip_plain:
        shutil.rmtree(project, ignore_errors=True)  # ultralytics appends to an existing results.csv
        project.mkdir(parents=True)
        # ultralytics resolves a data.yaml's relative `path` against the working directory, not the file (the
        # bundled `path: .` fails): the same absolute image lists as dronevision.train writes for itself
        data_yaml = write_data_yaml(load_yolo_dataset(args.data), project / "data" / "data.yaml")
        spec = {
            "arch": "yolov8n.yaml",
            "project": str(project),
            "tracking_uri": f"sqlite:///{args.out / 'mlflow.db'}",
            "args": {
                "data": str(data_yaml),
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "device": args.device,
                "workers": 0,
                "seed": args.seed,
                "fraction": args.fraction,
                "plots": False,
                "project": str(project),
                "name": "train",
                "exist_ok": True,
            },
        }
        spec_path = project / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        run_logged([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)], args.out / "plain.log")
    elif not record_path.is_file():
        raise SystemExit(f"--skip-plain: {record_path} not found; train it once without --skip-plain")
    record = json.loads(record_path.read_text())
    return {**record, "train_s": train_seconds(Path(record["results_csv"]))}


def train_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """dronevision's recipe through its train command into ``<out>/recipe`` (or reuse it with ``--skip-recipe``)."""
    out = args.out / "recipe"
    summary_path = out / "summary.json"
    if not args.skip_recipe:
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            sys.executable, "-m", "dronevision.train", f"dataset.path={args.data}", f"train.epochs={args.epochs}",
            f"train.imgsz={args.imgsz}", f"train.batch={args.batch}", f"train.device={args.device}",
            f"train.fraction={args.fraction}", f"train.seed={args.seed}", "train.plots=false", "export.enabled=false",
            *shlex.split(args.recipe), f"out_dir={out}", f"mlflow.tracking_uri=sqlite:///{args.out / 'mlflow.db'}",
            "mlflow.experiment=bench-altitude",
        ]  # fmt: skip
        run_logged(cmd, args.out / "recipe.log")
    elif not summary_path.is_file():
        raise SystemExit(f"--skip-recipe: {summary_path} not found; train it once without --skip-recipe")
    summary = json.loads(summary_path.read_text())
    return {
        "weights": summary["weights"],
        "seconds": summary.get("seconds"),
        "results_csv": str(out / "train" / "results.csv"),
        "train_s": train_seconds(out / "train" / "results.csv"),
    }


def evaluate(name: str, weights: str, args: argparse.Namespace, infer: str = "") -> dict[str, dict[str, Any]]:
    """``python -m dronevision.evaluate`` on the test split at every scale, with ``infer``'s overrides; its
    ``altitude.per_scale``."""
    out = args.out / f"eval-{name}"
    scales = "[" + ",".join(scale_name(z) for z in SCALES) + "]"
    cmd = [
        sys.executable, "-m", "dronevision.evaluate", f"weights={weights}", f"dataset.path={args.data}",
        "dataset.split=test", f"scales={scales}", "protocol=coco", "pictures.enabled=false", *shlex.split(infer),
        f"out_dir={out}", f"mlflow.tracking_uri=sqlite:///{args.out / 'mlflow.db'}",
    ]  # fmt: skip
    run_logged(cmd, args.out / f"eval-{name}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["altitude"]["per_scale"]


def training_box_px(data: Path, imgsz: int) -> float:
    """The train split's median box side in pixels as a model at ``imgsz`` sees it (letterboxed): the
    ``slicing.scales_box_px`` of both models (neither was trained on a dataset-stage build with a manifest)."""
    from dronevision.dataset.writer import object_size
    from dronevision.evaluate.ground_truth import load_ground_truth

    truth = load_ground_truth(data, "train")
    box_wh = [(b.xyxy[:, 2:] - b.xyxy[:, :2]) * imgsz / max(size) for b, size in zip(truth.boxes, truth.sizes)]
    return object_size(box_wh)["median_side_px"]


def bootstrap_difference(
    truth: Any, first: list[Any], second: list[Any], *, rounds: int = 200, seed: int = 0
) -> dict[str, float]:
    """COCO mAP50 of two models' predictions on the same images, and how far their difference is from noise.

    Paired bootstrap over images: each round draws ``len(truth.images)`` images with replacement and scores both
    models on that draw (the project's own COCO protocol). Returns ``first``, ``second``, ``difference`` (second
    minus first, on all images), ``low`` and ``high`` (the 2.5th and 97.5th percentiles of the difference over the
    rounds) and ``p_second_better`` (the share of rounds where ``second`` scores higher).
    """
    import dataclasses

    import numpy as np

    from dronevision.evaluate.command import compute_metrics

    def ap50(idx: Any, predictions: list[Any]) -> float:
        drawn = dataclasses.replace(
            truth, **{f: [getattr(truth, f)[i] for i in idx] for f in ("images", "sizes", "boxes", "ignored")}
        )
        return compute_metrics("coco", drawn, [predictions[i] for i in idx])["overall"]["AP50"] or 0.0

    everything = range(len(truth.images))
    a, b = ap50(everything, first), ap50(everything, second)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(truth.images), len(truth.images)) for _ in range(rounds)]
    diffs = np.array([ap50(idx, second) - ap50(idx, first) for idx in draws])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "first": a,
        "second": b,
        "difference": b - a,
        "low": float(low),
        "high": float(high),
        "p_second_better": float((diffs > 0).mean()),
        "rounds": rounds,
        "n_images": len(truth.images),
    }


def noise_at_1x(args: argparse.Namespace, runs: dict[str, Any]) -> dict[str, float]:
    """:func:`bootstrap_difference` of plain and the recipe on the test split at 1x, with evaluate's own detector
    settings (the table's 1x row, as is): is the recipe's 1x gap to plain larger than the test images can show?"""
    import numpy as np

    from dronevision.evaluate.command import default_model_settings, load_evaluation_detector, predict
    from dronevision.evaluate.ground_truth import load_ground_truth
    from dronevision.infer import SliceSettings

    truth = load_ground_truth(args.data, "test")
    model = default_model_settings()
    predictions = []
    for name in ("plain", "recipe"):
        detector = load_evaluation_detector(Path(runs[name]["weights"]), model, threads=None)
        found = predict(detector, truth, settings=SliceSettings(), batch=16, progress=False)[0]
        # COCO's AP counts the 100 best per image: the rest only slows each of the rounds' COCOeval down
        predictions.append([d[np.argsort(-d.confidence, kind="stable")[:100]] for d in found])
    return bootstrap_difference(truth, *predictions, rounds=args.bootstrap)


def _f(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


COLUMNS = ("plain", "plain+infer", "plain+known", "recipe", "recipe+infer", "recipe+known")  # trained by + scored with
RECIPE = ("recipe", "recipe+infer", "recipe+known")


def report(record: dict[str, Any]) -> str:
    """The final human summary: the table per scale, the targets, the training times."""
    a = record["args"]
    plain, recipe = record["runs"]["plain"], record["runs"]["recipe"]
    lines = [
        f"Command: {record['command']}",
        f"Date: {record['date']}; CPU: {record['cpu']} ({record['cores']} cores); device {a['device']}",
        f"Both from scratch, {a['epochs']} epochs at {a['imgsz']} px, batch {a['batch']}, fraction {a['fraction']},"
        f" seed {a.get('seed', 0)},"
        f" on {a['data']} (train; val: valid); scored on its test split, COCO protocol",
        f"plain: ultralytics YOLOv8n; recipe: python -m dronevision.train {a['recipe'] or '(its defaults)'};"
        f" +infer: python -m dronevision.evaluate {record.get('infer', a['infer'])};"
        f" +known: python -m dronevision.evaluate {a.get('known', '')}",
    ]
    for metric in ("map50", "map50_95"):
        lines += ["", f"| {metric} | " + " | ".join(COLUMNS) + " |", "|---:|" + "---:|" * len(COLUMNS)]
        for row in record["table"]:
            cells = [_f(row.get(c, {}).get(metric)) for c in COLUMNS]
            lines.append(f"| {row['scale']}x | " + " | ".join(cells) + " |")
    lines.append("")
    for t in record["targets"]:
        verdicts = ", ".join(f"{c} {_f(t.get(c))} {'met' if (t.get(c) or 0) >= t['target'] else 'not met'}"
                             for c in RECIPE)  # fmt: skip
        lines.append(f"Target {t['scale']}x: mAP50 >= {t['target']:.2f}: {verdicts}")
    noise = record.get("noise_1x")
    if noise:
        lines.append(
            f"1x, recipe - plain, mAP50: {noise['difference']:+.3f}; 95% paired bootstrap interval over the"
            f" {noise['n_images']} test images: [{noise['low']:+.3f}, {noise['high']:+.3f}]; the recipe scores"
            f" higher in {noise['p_second_better']:.0%} of {noise['rounds']} draws"
        )
    lines.append("")
    lines.append("| run | training s (results.csv) | whole command s | training time / plain |")
    lines.append("|---|---:|---:|---:|")
    for name, run in (("plain", plain), ("recipe", recipe)):
        ratio = run["train_s"] / plain["train_s"] if run["train_s"] and plain["train_s"] else None
        lines.append(f"| {name} | {_f(run['train_s'], '.0f')} | {_f(run['seconds'], '.0f')} | {_f(ratio, '.2f')}x |")
    lines.append(f"\nJSON: {record['json']}")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of each run (the same budget)")
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="training seed of both runs (another seed: the noise)")
    parser.add_argument("--device", default="cpu", help="training device of both runs: cpu, or a GPU index")
    parser.add_argument("--data", type=Path, default=AERIAL_CARS, help="a YOLO dataset (folder or data.yaml)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_altitude"), help="every output lands here")
    parser.add_argument(
        "--recipe", default="", help='dronevision.train overrides (none: the default recipe), e.g. "augment=aerial"'
    )
    parser.add_argument(
        "--infer", default="slicing=altitude", help="dronevision.evaluate overrides of the +infer columns"
    )
    parser.add_argument(
        "--known", default="scales_known_gsd=true", help="dronevision.evaluate overrides of the +known columns"
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="fraction of the training images (both runs; < 1 for smoke runs)"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=200, help="paired bootstrap rounds of the 1x gap recipe - plain (0: none)"
    )
    parser.add_argument("--skip-plain", action="store_true", help="reuse <out>/plain instead of training it")
    parser.add_argument("--skip-recipe", action="store_true", help="reuse <out>/recipe instead of training it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    return parser


def main(args: argparse.Namespace) -> dict[str, Any]:
    from dronevision.benchmark.measure import cpu_name

    args.out = args.out.expanduser().resolve()
    args.data = args.data.expanduser().resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    runs = {"plain": train_plain(args), "recipe": train_recipe(args)}
    box_px = training_box_px(args.data, args.imgsz)
    infer = f"{args.infer} slicing.scales_box_px={box_px}"
    scores = {}
    for name, run in runs.items():
        scores[name] = evaluate(name, run["weights"], args)
        scores[f"{name}+infer"] = evaluate(f"{name}-infer", run["weights"], args, infer)
        scores[f"{name}+known"] = evaluate(f"{name}-known", run["weights"], args, args.known)
    table = []
    for z in SCALES:
        row: dict[str, Any] = {"scale": scale_name(z)}
        for column in COLUMNS:
            got = scores[column].get(scale_name(z), {})
            row[column] = {key: got.get(key) for key in ("map50", "map50_95")}
        table.append(row)
    targets = []
    for z, target in TARGETS.items():
        got = {c: scores[c].get(scale_name(z), {}).get("map50") for c in RECIPE}
        targets.append(
            {"scale": scale_name(z), "target": target, **got, "met": [c for c in RECIPE if (got[c] or 0) >= target]}
        )
    noise = noise_at_1x(args, runs) if args.bootstrap > 0 else None
    record = {
        "command": command,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "child"},
        "runs": runs,
        "infer": infer,
        "per_scale": scores,
        "table": table,
        "targets": targets,
        "noise_1x": noise,
        "json": str(args.out / "bench_altitude.json"),
    }
    Path(record["json"]).write_text(json.dumps(record, indent=2))
    print("\n" + report(record))
    return record


if __name__ == "__main__":
    cli_args = get_args_parser().parse_args()
    if cli_args.child:
        train_plain_child(cli_args.child)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        main(cli_args)
