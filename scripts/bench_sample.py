"""Sampling speed on a 1080p H.264 clip: dronevision.sample against `ffmpeg -vf fps=1`, and against real time.

Renders a 1080p flyover over the bundled aerial images (or takes --clip), then times, each in a fresh process on
the same machine:
  reference: ffmpeg -i clip.mp4 -vf fps=1 out_%04d.jpg
  ours:      python -m dronevision.sample input=clip.mp4 (one frame per second, blur/exposure/duplicate filters on)
             python -m dronevision.sample input=clip.mp4 sampling=keyframes sampling.every_s=1 (the fast path)
and prints a Markdown table with the ratio to ffmpeg and the real-time factor, then how our time splits between
decoding, filters and JPEG writing. Targets: at least as fast as ffmpeg, and at least 20x real time on 2 cores.

    python scripts/bench_sample.py [--seconds 60] [--clip my_clip.mp4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    """Wall time of a command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        raise SystemExit(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the rendered clip")
    parser.add_argument("--clip", type=Path, help="a real clip instead of the rendered one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.clip:
            clip = args.clip
        else:
            from dronevision.synth import render_flyover

            repo = Path(__file__).resolve().parents[1]
            info = render_flyover(
                tmp / "render",
                dataset_dir=repo / "data/samples/aerial-cars",
                fps=30.0,
                n_frames=30 * args.seconds,
                frame_wh=(1920, 1080),
                name="clip1080",
            )
            clip = Path(info["video"])
        rows = []
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg:
            (tmp / "ff").mkdir()
            seconds = timed([ffmpeg, "-v", "error", "-i", str(clip), "-vf", "fps=1", str(tmp / "ff" / "out_%04d.jpg")])
            rows.append(("ffmpeg -vf fps=1 (reference)", seconds, len(list((tmp / "ff").iterdir()))))
        runs = [
            ("dronevision.sample uniform 1/s, filters on", []),
            ("dronevision.sample keyframes (at most 1/s), filters on", ["sampling=keyframes", "sampling.every_s=1"]),
        ]
        summaries = []
        for i, (label, overrides) in enumerate(runs):
            out = tmp / f"ours{i}"
            seconds = timed([sys.executable, "-m", "dronevision.sample", f"input={clip}", f"out_dir={out}", *overrides])
            summaries.append(json.loads((out / "summary.json").read_text()))
            rows.append((label, seconds, summaries[-1]["kept_frames"]))
        summary = summaries[0]
    footage = summary["footage_s"]
    print(f"\n{clip.name}: {footage:.0f} s of 1080p H.264, {os.cpu_count()} CPU cores\n")
    print("| tool | seconds | frames written | x real time | speed vs ffmpeg |")
    print("|---|---:|---:|---:|---:|")
    reference = rows[0][1] if ffmpeg else None
    for name, seconds, frames in rows:
        ratio = f"{reference / seconds:.2f}x" if reference else "n/a (no ffmpeg: apt-get install ffmpeg)"
        print(f"| {name} | {seconds:.2f} | {frames} | {footage / seconds:.1f} | {ratio} |")
    split = summary["time_split_s"]
    total = sum(split.values())
    print(
        "\ndronevision.sample time split (inside the worker): "
        + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in split.items())
    )
    print(f"drops: {summary['drops']}")


if __name__ == "__main__":
    main()
