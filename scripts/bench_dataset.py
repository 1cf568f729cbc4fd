"""Dataset stage speed and memory on a generated VisDrone-style set, against the target of 300 images/s.

Generates VisDrone-DET folders (640x360 JPEGs, 60 boxes per image, an ignored region in every third image, so
a third of the images are masked and re-encoded), converts each with the real dataset stage in a fresh process
(no tiling, all cores), and prints a Markdown table: images/s, the ratio to the target, and peak memory. Two
sizes show whether memory grows with the number of images.

    python scripts/bench_dataset.py [--sizes 1000 5000] [--boxes 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from dronevision.synth import write_visdrone_det_set

TARGET_IMAGES_PER_S = 300.0

CHILD = """
import json, resource, sys
from hydra import compose, initialize_config_dir
from dronevision.cli import CONFIG_DIR
from dronevision.dataset.command import run
with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
    cfg = compose("dataset_build", overrides=sys.argv[1:])
summary = run(cfg)
summary["rss_main_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
summary["rss_worker_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print("RESULT " + json.dumps(summary))
"""


def convert(source: Path, out: Path) -> dict:
    """Run one build in a fresh interpreter and return its summary with peak memory."""
    cmd = [sys.executable, "-c", CHILD, f"source.path={source}", f"out_dir={out}", f"paths.log_dir={out.parent}/logs"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--boxes", type=int, default=60)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            source = write_visdrone_det_set(Path(tmp) / f"src{n}", n_images=n, boxes_per_image=args.boxes)
            summary = convert(source, Path(tmp) / f"out{n}")
            rows.append((n, sum(summary["boxes"].values()), summary))
    print(f"\nVisDrone-style 640x360 JPEGs, {args.boxes} boxes/image, 1/3 masked; {os.cpu_count()} cores, no tiling\n")
    print("| images | boxes | seconds | images/s | vs target 300/s | peak RSS main | peak RSS per worker |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, boxes, s in rows:
        print(
            f"| {n} | {boxes} | {s['seconds']:.1f} | {s['images_per_s']:.0f} | "
            f"{s['images_per_s'] / TARGET_IMAGES_PER_S:.2f}x | {s['rss_main_mb']:.0f} MB | "
            f"{s['rss_worker_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
