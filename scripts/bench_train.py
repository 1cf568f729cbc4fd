"""Training speed: dronevision's training against plain ultralytics, with identical arguments on the same data.

Both runs get the same ultralytics arguments, composed from ``configs/train.yaml`` (model YAML, epochs, imgsz,
batch, seed, workers, cache, deterministic, augmentations, ...), the same images and labels, and each starts in
a fresh interpreter so that no thread setting leaks from one to the other. "dronevision" is ``dronevision.train.run``
(training, then its evaluation of the best weights; ONNX export off, MLflow into a temporary SQLite store);
"plain ultralytics" is ``YOLO(<model yaml>).train(data=..., **the same arguments)`` with its MLflow callback
removed. Prints a Markdown table: wall time of the whole call and of training alone (trainer start to end, the
same ultralytics callbacks time both), seconds per epoch, the speed-up against plain ultralytics, final training
losses and the last epoch's mAP50.

Targets: on CPU dronevision trains >= 1.5x faster; on GPU its overhead is <= 5%.

    python scripts/bench_train.py                # 3 epochs on CPU, the last without mosaic: ~3 min on 2 cores
    python scripts/bench_train.py --quick        # 1 epoch: ~1 min
    python scripts/bench_train.py --device 0     # GPU: dronevision's overhead
    python scripts/bench_train.py --repeat 3 train.mosaic=0   # medians of 3 alternating pairs; more overrides
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REFERENCE, OURS = "plain ultralytics", "dronevision"
THREAD_ENV = ("OMP_", "GOMP_", "KMP_", "MKL_")  # read by the OpenMP / MKL runtimes when torch loads them
SHOWN_ARGS = ("epochs", "imgsz", "batch", "device", "workers", "cache", "seed", "deterministic", "amp", "close_mosaic")


# --- child processes: one training each ------------------------------------------------------------------------


def _watch_training(marks: dict[str, Any]) -> None:
    """Time every trainer of this process from its first callback to its last, whichever code runs it, and note
    the torch threads and autocast it trains with."""
    import torch
    from ultralytics.utils.callbacks.base import default_callbacks

    def on_train_start(trainer: Any) -> None:
        marks.update(threads=torch.get_num_threads(), autocast=bool(trainer.amp))

    default_callbacks["on_pretrain_routine_start"].insert(0, lambda trainer: marks.setdefault("start", time.time()))
    default_callbacks["on_train_start"].append(on_train_start)
    default_callbacks["on_train_end"].append(lambda trainer: marks.__setitem__("end", time.time()))


def _run_dronevision(spec: dict[str, Any]) -> Path:
    from hydra import compose, initialize_config_dir

    from dronevision.cli import CONFIG_DIR
    from dronevision.train import run

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=spec["overrides"])
    return Path(run(cfg)["out_dir"]) / "train"


def _run_plain(spec: dict[str, Any]) -> Path:
    """``YOLO(arch).train(...)`` with ultralytics' MLflow callback removed; offline as dronevision keeps it."""
    import ultralytics.engine.trainer as trainer_module
    from ultralytics import RTDETR, YOLO

    from dronevision.augment import load_policy

    def mlflow_off(trainer: Any) -> None:
        for event, fns in trainer.callbacks.items():
            trainer.callbacks[event] = [f for f in fns if "callbacks.mlflow" not in getattr(f, "__module__", "")]

    if str(spec["args"].get("device")).lower() not in ("cpu", "mps"):
        trainer_module.check_amp = lambda model: True  # as dronevision: the real check downloads a model
    model = RTDETR(spec["arch"]) if spec["family"] == "rtdetr" else YOLO(spec["arch"], task="detect")
    if spec["weights"]:
        model.load(spec["weights"])
    model.add_callback("on_pretrain_routine_start", mlflow_off)
    augmentations = load_policy(spec["augment"]).transforms  # what dronevision passes as `augmentations`
    project = spec["project"]
    model.train(
        data=spec["data"], project=project, name="train", exist_ok=True, augmentations=augmentations, **spec["args"]
    )
    return Path(project) / "train"


def child(spec_path: Path) -> None:
    """Run one case and print its timings as a ``RESULT {json}`` line."""
    spec = json.loads(spec_path.read_text())
    before = set(os.environ)
    import dronevision  # noqa: F401  (offline environment before ultralytics is imported)

    if spec["case"] == REFERENCE:  # plain ultralytics gets dronevision's offline settings, not its thread settings
        for key in set(os.environ) - before:
            if key.startswith(THREAD_ENV):
                del os.environ[key]
    os.environ["MLFLOW_TRACKING_URI"] = spec["tracking_uri"]  # anything MLflow still writes goes to the temp store
    marks: dict[str, Any] = {}
    _watch_training(marks)
    started = time.time()
    train_dir = (_run_dronevision if spec["case"] == OURS else _run_plain)(spec)
    total = time.time() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    result = {
        "total_s": total,
        "train_s": marks["end"] - marks["start"],
        "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage),
        "threads": marks["threads"],
        "autocast": marks["autocast"],
        "results_csv": str(train_dir / "results.csv"),
    }
    print("RESULT " + json.dumps(result))


# --- parent: compose, run, compare -----------------------------------------------------------------------------


def last_epoch(results_csv: Path) -> dict[str, float]:
    """The last row of ultralytics' results.csv (keys stripped, floats), the number of epochs and the median
    seconds per epoch (training and validation; robust to a few epochs slowed by other processes)."""
    with results_csv.open() as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    times = [row["time"] for row in rows]
    epoch_s = statistics.median(b - a for a, b in zip([0.0, *times], times))
    return {**rows[-1], "n_epochs": len(rows), "epoch_s": epoch_s}


def run_case(case: str, spec: dict[str, Any], tmp: Path, index: int, *, max_wait_s: float) -> dict[str, Any]:
    """Run one case in a fresh interpreter; its result includes the CPU seconds other processes used meanwhile."""
    from dronevision.benchmark.measure import busy_cpu_s, wait_for_quiet

    if case == OURS:
        spec = {**spec, "overrides": [*spec["overrides"], f"out_dir={tmp}/dronevision{index}"]}
    else:
        spec = {**spec, "project": str(tmp / f"plain{index}")}
    spec_path = tmp / f"spec{index}.json"
    spec_path.write_text(json.dumps({**spec, "case": case}))
    waited = wait_for_quiet(max_wait_s)
    print(f"[{index}] {case} (waited {waited:.0f} s for a quiet machine) ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    busy = busy_cpu_s()
    done = subprocess.run(cmd, capture_output=True, text=True)
    busy = busy_cpu_s() - busy if busy is not None else float("nan")
    (tmp / f"log{index}.txt").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{case} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    others = max(0.0, busy - result["cpu_s"])
    return {**result, **last_epoch(Path(result["results_csv"])), "case": case, "others_cpu_s": others}


def compose_cases(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The two children's specs from one composed config, and the ultralytics arguments both get."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from dronevision.cli import CONFIG_DIR
    from dronevision.dataset import load_yolo_dataset, write_data_yaml
    from dronevision.train import resolve_model, ultralytics_train_args

    overrides = [
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
        f"paths.log_dir={tmp}/logs",
        f"train.epochs={args.epochs}",
        f"train.close_mosaic={args.close_mosaic}",
        f"train.imgsz={args.imgsz}",
        f"train.batch={args.batch}",
        f"train.device={args.device}",
        "train.plots=false",
        "export.enabled=false",
        "augment=none",  # ultralytics' own augmentation only; e.g. augment=light gives both the same transforms
        *args.overrides,
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    train_args = ultralytics_train_args(OmegaConf.to_container(cfg.train, resolve=True), DEFAULT_CFG_DICT)
    train_args.pop("resume", None)
    model = resolve_model(cfg.model)
    data_yaml = write_data_yaml(load_yolo_dataset(cfg.dataset.path), tmp / "data" / "data.yaml")
    common = {"tracking_uri": f"sqlite:///{tmp}/mlflow.db"}
    plain = {
        **common,
        "data": str(data_yaml),
        "arch": model.arch,
        "weights": str(model.weights) if model.weights else None,
        "family": model.family,
        "args": train_args,
        "augment": OmegaConf.to_container(cfg.augment, resolve=True),
    }
    ours = {**common, "overrides": overrides}
    return plain, ours, {**train_args, "model": model.arch, "data": str(cfg.dataset.path)}


def machine(device: str) -> str:
    from ultralytics.utils import NUM_THREADS

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores (ultralytics alone: {NUM_THREADS} torch threads on CPU)"
    if device.lower() not in ("cpu", "mps"):
        import torch

        text += f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU found"
    return text


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in keys}}


def table(rows: dict[str, dict[str, Any]]) -> str:
    ref = rows[REFERENCE]
    lines = [
        "| run | s total | s training | s / epoch (median) | speed-up: total | speed-up: training"
        " | speed-up: median epoch | CPU s | torch threads | autocast | box loss | cls loss | dfl loss | mAP50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for case, r in rows.items():
        name = f"{case} (reference)" if case == REFERENCE else case
        lines.append(
            f"| {name} | {r['total_s']:.1f} | {r['train_s']:.1f} | {r['epoch_s']:.1f}"
            f" | {ref['total_s'] / r['total_s']:.2f}x | {ref['train_s'] / r['train_s']:.2f}x"
            f" | {ref['epoch_s'] / r['epoch_s']:.2f}x | {r['cpu_s']:.0f}"
            f" | {r['threads']:.0f} | {'on' if r['autocast'] else 'off'}"
            f" | {r['train/box_loss']:.4f} | {r['train/cls_loss']:.4f} | {r['train/dfl_loss']:.4f}"
            f" | {r['metrics/mAP50(B)']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--close-mosaic", type=int, default=1, help="final epochs without mosaic (train.close_mosaic)")
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, or a GPU index such as 0")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of each; the table shows medians")
    parser.add_argument("--quick", action="store_true", help="one epoch (with mosaic): about a minute on 2 cores")
    parser.add_argument(
        "--wait-quiet", type=float, default=120, help="before each run, wait up to this many seconds for idle CPUs"
    )
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them (default: a temporary folder)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="more config overrides for both runs, e.g. train.mosaic=0")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.quick:
        args.epochs, args.close_mosaic = 1, 0
    runs: dict[str, list[dict[str, Any]]] = {REFERENCE: [], OURS: []}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as name:
        tmp = args.keep.resolve() if args.keep else Path(name)
        tmp.mkdir(parents=True, exist_ok=True)
        plain, ours, shown = compose_cases(args, tmp)
        order = [(REFERENCE, plain), (OURS, ours)]
        for i in range(args.repeat):
            for case, spec in order if i % 2 == 0 else order[::-1]:
                index = len(runs[REFERENCE]) + len(runs[OURS])
                runs[case].append(run_case(case, spec, tmp, index, max_wait_s=args.wait_quiet))
    rows = {case: median_row(r) for case, r in runs.items()}
    gpu = args.device.lower() not in ("cpu", "mps")
    print(f"\nMachine: {machine(args.device)}")
    print(f"Model {shown['model']} from scratch, data {shown['data']}")
    print("Arguments (identical in both): " + ", ".join(f"{k}={shown.get(k)}" for k in SHOWN_ARGS))
    print(f"Runs: {args.repeat} of each, alternating" + (" (table: medians)" if args.repeat > 1 else "") + "\n")
    print(table(rows))
    ratio = rows[REFERENCE]["train_s"] / rows[OURS]["train_s"]
    if rows[REFERENCE]["autocast"] != rows[OURS]["autocast"]:
        print("\nWARNING: the runs differ in autocast (mixed precision): their speeds and results are not comparable")
    if gpu:
        overhead = rows[OURS]["train_s"] / rows[REFERENCE]["train_s"] - 1
        print(f"\nGPU: dronevision's training overhead {overhead:+.1%} (target <= 5%)")
    else:
        print(f"\nCPU: dronevision trains {ratio:.2f}x as fast as plain ultralytics (target >= 1.5x)")
    if args.repeat > 1:
        each = [f"{a['train_s'] / b['train_s']:.2f}" for a, b in zip(runs[REFERENCE], runs[OURS])]
        print("Training speed-up of each pair: " + ", ".join(each))
    others = "; ".join(f"{case}: " + ", ".join(f"{r['others_cpu_s']:.0f}" for r in runs[case]) for case in runs)
    print(f"CPU seconds used by other processes during each run (they distort the timings): {others}")


if __name__ == "__main__":
    main()
