"""Tracking speed on a 1080p H.264 clip: the track stage against its detector alone, ultralytics' own tracking, and
decoding alone.

Renders a 1080p25 flyover over the bundled aerial images (or takes --clip) and a YOLOv8n at 640 (seeded, untrained:
speed does not depend on the weights; or --weights, a local .pt) with its ONNX export, then measures in one run:
  (a) detector only: the track stage's detector (same runtime, batch and threads) on the clip's frames, decoded
      beforehand and held in memory; against `python -m dronevision.track` on every frame with the annotated video.
      Target: tracking frames/s >= 0.8x detector-only frames/s. Also printed: the ceiling that decoding alone sets
      (detector and decoder each keep every core busy, so on the CPU their times per frame add).
  (b) ultralytics: `YOLO(pt).track(source=clip, stream=True)` with its defaults (and `predict` alone), on the same
      .pt; against our track run on the FP32 ONNX, and on the fastest CPU path (the export stage's OpenVINO INT8 IR,
      NNCF-calibrated on 32 bundled aerial images). Target: >= 3x ultralytics' tracking frames/s.
  (c) one processed frame per second of footage, no annotated video: the track run's real-time factor against
      decoding the clip alone (PyAV, every frame, as the track stage decodes) and against `ffmpeg -f null` where
      ffmpeg is installed. Target: within 20% of decoding alone (tracking seconds <= 1.2x decoding seconds).
Track runs are timed from their summary.json (`tracking_seconds`: decode, detect, track and write, without the
process start, model load and per-video setup: opening the video, the tracker, the detector's first call);
ultralytics from its first result on; each runs in its own process. Prints Markdown tables and the time split.

    python scripts/bench_track.py [--seconds 30] [--clip clip.mp4] [--weights yolov8n.pt] [--runtime openvino]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> str:
    """Run a command that must succeed; its stdout."""
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr[-3000:]}")
    return done.stdout


def in_process(code: str, *args: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh Python process."""
    return json.loads(run([sys.executable, "-c", code, *args]).strip().splitlines()[-1])


SEEDED = """
import sys, torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
torch.manual_seed(0)
model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
model.names = {0: "car"}
model.eval()
model.args = {"imgsz": 640, "task": "detect"}
torch.save({"model": model, "train_args": {"imgsz": 640, "task": "detect"}, "epoch": -1}, sys.argv[1])
print('{}')
"""

EXPORT = """
import json, sys
from ultralytics import YOLO
onnx = YOLO(sys.argv[1]).export(format="onnx", imgsz=640, dynamic=True, simplify=True, verbose=False)
print(json.dumps({"onnx": onnx}))
"""

DETECT_ONLY = """
import json, sys, time
from pathlib import Path
from dronevision.infer import load_detector
from dronevision.sample.decode import read_frames
clip, model, runtime, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
_, frames = read_frames(Path(clip))
images = [f.bgr() for f in frames]
detector = load_detector(Path(model), runtime=runtime, conf=0.1)
detector.predict(images[:batch], batch=batch)  # warm-up
started = time.perf_counter()
for i in range(0, len(images), batch):
    detector.predict(images[i : i + batch], batch=batch)
seconds = time.perf_counter() - started
print(json.dumps({"frames": len(images), "seconds": seconds, "runtime": detector.runtime}))
"""

ULTRALYTICS = """
import json, sys, time
from ultralytics import YOLO
clip, weights, mode = sys.argv[1], sys.argv[2], sys.argv[3]
model = YOLO(weights)
call = model.track if mode == "track" else model.predict
started, frames = None, 0
for _ in call(source=clip, stream=True, verbose=False, imgsz=640, device="cpu"):
    if started is None:  # timed from its first frame on: its setup (predictor, warm-up, tracker) is not, as ours is not
        started = time.perf_counter()
    else:
        frames += 1
print(json.dumps({"frames": frames, "seconds": time.perf_counter() - started}))
"""

DECODE_ONLY = """
import json, sys, time
from pathlib import Path
from dronevision.sample.decode import read_frames
_, frames = read_frames(Path(sys.argv[1]))  # opened before the clock starts, as the track stage's videos are
started = time.perf_counter()
n = sum(1 for _ in frames)
print(json.dumps({"frames": n, "seconds": time.perf_counter() - started}))
"""


def track(clip: Path, model: Path, out: Path, *overrides: str) -> dict:
    """A track run in its own process; its summary.json."""
    run([sys.executable, "-m", "dronevision.track", f"model={model}", f"input={clip}", f"out_dir={out}",
         f"mlflow.tracking_uri=sqlite:///{out.parent}/mlflow.db", *overrides])  # fmt: skip
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="length of the rendered 1080p25 clip")
    parser.add_argument("--clip", type=Path, help="a real clip instead of the rendered one")
    parser.add_argument("--weights", type=Path, help="a local YOLOv8n .pt (default: a seeded, untrained one)")
    parser.add_argument("--runtime", default="openvino", help="the track stage's runtime for the ONNX model")
    parser.add_argument("--batch", type=int, default=4, help="frames per model call (detector.batch)")
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="skip the OpenVINO INT8 IR run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = args.clip
        if clip is None:
            from dronevision.synth import render_flyover

            info = render_flyover(tmp / "render", dataset_dir=REPO / "data/samples/aerial-cars", fps=25.0,
                                  n_frames=25 * args.seconds, frame_wh=(1920, 1080), name="clip1080")  # fmt: skip
            clip = Path(info["video"])
        weights = args.weights or tmp / "yolov8n-seeded.pt"
        if args.weights is None:
            in_process(SEEDED, str(weights))
        onnx = Path(in_process(EXPORT, str(weights))["onnx"])
        batch = f"detector.batch={args.batch}"

        ir = None
        if args.int8:
            run([sys.executable, "-m", "dronevision.export", f"weights={weights}", f"out_dir={tmp / 'export'}",
                 "export.openvino_int8=true", f"export.calibration={REPO / 'data/samples/aerial-cars'}",
                 "export.calibration_images=32", "export.force=true", "export.imgsz=640", "export.dynamic=true",
                 ])  # fmt: skip
            ir = tmp / "export" / "model_int8_openvino_model"
        detect = in_process(DETECT_ONLY, str(clip), str(onnx), args.runtime, str(args.batch))
        every = track(clip, onnx, tmp / "every", f"detector.runtime={args.runtime}", batch)
        fastest = track(clip, ir, tmp / "int8", "detector.runtime=openvino", batch) if ir else None
        bare = (
            track(clip, ir, tmp / "int8-bare", "detector.runtime=openvino", batch, "video.enabled=false")
            if ir
            else None
        )
        their_track = in_process(ULTRALYTICS, str(clip), str(weights), "track")
        their_predict = in_process(ULTRALYTICS, str(clip), str(weights), "predict")
        sparse = track(clip, onnx, tmp / "sparse", f"detector.runtime={args.runtime}", batch, "every_s=1",
                       "video.enabled=false")  # fmt: skip
        decode = in_process(DECODE_ONLY, str(clip))
        ffmpeg = shutil.which("ffmpeg")
        ffmpeg_s = None
        if ffmpeg:
            started = time.perf_counter()
            run([ffmpeg, "-v", "error", "-i", str(clip), "-f", "null", "-"])
            ffmpeg_s = time.perf_counter() - started

    footage = every["footage_s"]
    fps = lambda r: r["frames"] / r["seconds"]  # noqa: E731
    ours = every["frames_per_s"]
    print(f"\n{clip.name}: {footage:.1f} s of 1080p H.264 ({every['frames_decoded']} frames), YOLOv8n at 640, "
          f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}\n")  # fmt: skip
    print("| (a, b) every frame | frames/s | ratio | target |")
    print("|---|---:|---:|---|")
    print(f"| detector only ({detect['runtime']}, batch {args.batch}, frames in memory) | {fps(detect):.1f} | 1.00 | |")
    ceiling = 1 / (1 / fps(detect) + 1 / fps(decode))  # each already keeps every core busy: their times add
    print(f"| ceiling of (a): the detector plus decoding alone, nothing else | {ceiling:.1f} | "
          f"{ceiling / fps(detect):.2f} | |")  # fmt: skip
    print(f"| dronevision.track, annotated video on | {ours:.1f} | {ours / fps(detect):.2f} | >= 0.8 |")
    print(f"| ultralytics model.track(source=clip) (.pt, its defaults) | {fps(their_track):.1f} | "
          f"{ours / fps(their_track):.2f}x (ours / theirs) | >= 3 |")  # fmt: skip
    print(f"| ultralytics model.predict(source=clip) alone | {fps(their_predict):.1f} | "
          f"{ours / fps(their_predict):.2f}x (ours / theirs) | |")  # fmt: skip
    if fastest:
        int8 = fastest["frames_per_s"]
        print(f"| dronevision.track on the OpenVINO INT8 IR, annotated video on | {int8:.1f} | "
              f"{int8 / fps(their_track):.2f}x (ours / ultralytics track) | >= 3 |")  # fmt: skip
        plain = bare["frames_per_s"]  # as ultralytics' track, which writes no video by default
        print(f"| dronevision.track on the OpenVINO INT8 IR, no video (as ultralytics' track) | {plain:.1f} | "
              f"{plain / fps(their_track):.2f}x (ours / ultralytics track) | >= 3 |")  # fmt: skip
    print("\n| (c) one frame per second, no video | seconds | x real time | tracking / decoding |")
    print("|---|---:|---:|---:|")
    print(f"| decode only (PyAV, every frame) | {decode['seconds']:.2f} | {footage / decode['seconds']:.1f} | 1.00 |")
    if ffmpeg_s is not None:
        print(f"| ffmpeg -i clip -f null - | {ffmpeg_s:.2f} | {footage / ffmpeg_s:.1f} | |")
    ts = sparse["tracking_seconds"]
    print(f"| dronevision.track every_s=1 video.enabled=false | {ts:.2f} | {footage / ts:.1f} | "
          f"{ts / decode['seconds']:.2f} (target <= 1.2) |")  # fmt: skip
    for label, summary in (("every frame", every), ("every_s=1", sparse), ("INT8 IR, every frame", fastest)):
        if summary is None:
            continue
        split = summary["time_split_s"]
        total = sum(split.values())
        parts = ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in split.items())
        print(f"\ntime split, {label}: {parts}")


if __name__ == "__main__":
    main()
