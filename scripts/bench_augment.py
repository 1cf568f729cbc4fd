"""Augmentation speed of every shipped policy at 640x640, against the target of 150 images/s for ``aerial``.

Real aerial-cars images (data/samples/aerial-cars, train split) are letterboxed to 640x640 with their boxes, then
each policy of configs/augment/ runs through :func:`dronevision.augment.augment_sample`, as training and
materialize run it. OpenCV is held to one thread per process, like a DataLoader worker. Each case warms up, then
counts images over ``--min-time`` seconds, in ``--rounds`` interleaved rounds (the median round is reported), in
one process and in ``--procs`` forked processes together (training decodes and augments in that many workers).
Rates are given per wall-clock second and per CPU second (``time.process_time``): on a machine shared with other
work the second is the rate of unshared cores; the 1-minute load average is printed to judge which to trust.

    python scripts/bench_augment.py [--min-time 3] [--rounds 3] [--procs 2] [--per-transform]

``--per-transform`` also times each transform of ``aerial`` alone at p=1, with its expected cost at its own p.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dronevision.augment import Policy, augment_sample, build_compose, load_policy
from dronevision.augment.io import load_sample
from dronevision.cli import CONFIG_DIR, group_options
from dronevision.dataset import load_yolo_dataset

TARGET_IMAGES_PER_S = 150.0
TARGET_POLICY = "aerial"
DATASET = Path(__file__).resolve().parents[1] / "data" / "samples" / "aerial-cars"

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


def letterbox(rgb: np.ndarray, xyxy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit an image into a ``size`` square (grey padding, centred) and move its boxes with it."""
    import cv2

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    canvas = np.full((size, size, 3), 114, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, xyxy * scale + np.array([left, top, left, top], dtype=np.float32)


def load_images(n: int, size: int) -> list[Sample]:
    dataset = load_yolo_dataset(DATASET)
    samples = []
    for image in sorted(dataset.splits["train"])[:n]:
        rgb, xyxy, ids = load_sample(image, n_classes=len(dataset.names))
        boxed, boxes = letterbox(rgb, xyxy, size)
        samples.append((boxed, boxes, ids))
    return samples


def policies() -> dict[str, Policy]:
    return {
        name: load_policy(OmegaConf.load(CONFIG_DIR / "augment" / f"{name}.yaml")) for name in group_options("augment")
    }


def count_for(
    transforms: list, samples: list[Sample], seconds: float, seed: int, *, warmup: int = 16
) -> tuple[float, float]:
    """``(images per wall-clock second, images per CPU second)`` of one process running ``transforms`` over
    ``samples`` for about ``seconds``. The second is what an unshared core gives, whatever else runs meanwhile."""
    import cv2

    cv2.setNumThreads(1)
    policy_compose = build_compose(transforms, min_visibility=0.3, min_area=4, seed=seed)
    for i in range(warmup):
        augment_sample(policy_compose, *samples[i % len(samples)])
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        augment_sample(policy_compose, *samples[n % len(samples)])
        n += 1
    return n / elapsed, n / (time.process_time() - cpu)


_CASE: tuple[list, list[Sample], float] | None = None


def _worker(seed: int) -> tuple[float, float]:
    assert _CASE is not None
    transforms, samples, seconds = _CASE
    return count_for(transforms, samples, seconds, seed)


def parallel_rate(transforms: list, samples: list[Sample], seconds: float, procs: int) -> tuple[float, float]:
    """The sums over ``procs`` forked processes running together of :func:`count_for`'s two rates."""
    global _CASE
    _CASE = (transforms, samples, seconds)
    with mp.get_context("fork").Pool(procs) as pool:
        rates = pool.map(_worker, range(procs))
    return float(sum(r[0] for r in rates)), float(sum(r[1] for r in rates))


def per_transform(policy: Policy, samples: list[Sample], seconds: float) -> list[tuple[str, float, float]]:
    """``(transform, CPU ms at p=1, expected CPU ms at its p)`` for each transform of a policy."""
    import albumentations as A

    rows = []
    for t in policy.transforms:
        forced = A.from_dict({"transform": {**A.to_dict(t)["transform"], "p": 1.0}})
        ms = 1000 / count_for([forced], samples, seconds, 0)[1]
        rows.append((type(t).__name__, ms, ms * t.p))
    base = 1000 / count_for([], samples, seconds, 0)[1]
    rows.append(("(compose + boxes, no transform)", base, base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=3.0, help="seconds counted per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2, help="processes of the parallel measurement")
    parser.add_argument("--images", type=int, default=64, help="distinct images cycled through")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--per-transform", action="store_true")
    args = parser.parse_args()

    samples = load_images(args.images, args.size)
    shipped = policies()
    load_before = os.getloadavg()[0]
    one: dict[str, list[tuple[float, float]]] = {name: [] for name in shipped}
    many: dict[str, list[tuple[float, float]]] = {name: [] for name in shipped}
    for _ in range(args.rounds):  # interleaved, so that a slow spell of the machine does not hit one policy only
        for name, policy in shipped.items():
            one[name].append(count_for(policy.transforms, samples, args.min_time, 0))
            many[name].append(parallel_rate(policy.transforms, samples, args.min_time, args.procs))

    cpu = platform.processor() or platform.machine()
    print(
        f"\nAugmented images/s at {args.size}x{args.size} (aerial-cars, {len(samples)} images letterboxed),"
        f" {os.cpu_count()} cores ({cpu}), OpenCV 1 thread per process, median of {args.rounds} rounds of"
        f" {args.min_time:g} s; target {TARGET_IMAGES_PER_S:g} images/s for '{TARGET_POLICY}'. 1-minute load"
        f" average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (above ~0.5, other work shared the cores)\n"
    )
    p = args.procs
    print(
        f"| policy | transforms | 1 process | {p} processes | {p} processes / target"
        f" | 1 process, per CPU-s | {p} processes, per CPU-s | {p} processes per CPU-s / target |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, policy in shipped.items():
        wall1, cpu1 = (statistics.median(r[i] for r in one[name]) for i in (0, 1))
        wall2, cpu2 = (statistics.median(r[i] for r in many[name]) for i in (0, 1))
        mark = " (target)" if name == TARGET_POLICY else ""
        ratio_wall, ratio_cpu = wall2 / TARGET_IMAGES_PER_S, cpu2 / TARGET_IMAGES_PER_S
        print(
            f"| {name} | {len(policy.transforms)} | {wall1:.0f} | {wall2:.0f} | {ratio_wall:.2f}x{mark}"
            f" | {cpu1:.0f} | {cpu2:.0f} | {ratio_cpu:.2f}x{mark} |"
        )
    print(
        "\nimages/s: wall clock. per CPU-s: images per second of CPU time the processes got, i.e. the rate of"
        " cores not shared with other work."
    )

    if args.per_transform:
        print(f"\nPer transform of '{TARGET_POLICY}', one process (CPU ms per image):\n")
        print("| transform | CPU ms at p=1 | expected CPU ms at its p |")
        print("|---|---:|---:|")
        for name, ms, expected in per_transform(shipped[TARGET_POLICY], samples, max(1.0, args.min_time / 2)):
            print(f"| {name} | {ms:.2f} | {expected:.2f} |")


if __name__ == "__main__":
    main()
