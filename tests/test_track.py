"""The track stage: sightings counted on synthetic flyovers, MOT metrics, the archive report, resume, Ray, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from dronevision.cli import CONFIG_DIR
from dronevision.errors import DroneVisionError
from dronevision.schema import Detections
from dronevision.synth.flyover import render_flyover
from dronevision.track.mot import load_truth, mot_metrics
from dronevision.track.report import creation_day, day_from_name, per_day, video_day
from dronevision.track.sightings import TrackLog, truth_sightings
from dronevision.track.video import make_tracker, tracker_input
from tests.conftest import REPO, compose_config

BUNDLED = REPO / "data" / "samples" / "aerial-cars"


def _decode(path: Path) -> tuple[int, tuple[int, int]]:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    return len(frames), frames[0].shape[:2]


# --- the counting check: real tracker, real frames, detections from the flyover's known objects -------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counted_sightings_are_within_10_percent_of_the_unique_objects(tmp_path: Path, seed: int) -> None:
    """BoT-SORT with the default settings, on the decoded frames of a moving camera (its motion compensation reads
    them), fed the flyover's true boxes as a fair detector gives them: 10% missed per frame, 1.5 px of jitter,
    confidences 0.45-0.9, and a stray low-confidence box in 30% of frames. The truth: objects the flyover's
    ground truth shows on at least ``min_frames`` frames."""
    from dronevision.sample.decode import read_frames

    flight = render_flyover(tmp_path, dataset_dir=BUNDLED, n_frames=100, fps=10, name="f", seed=seed)
    truth = load_truth("visdrone-vid", flight["annotations"])
    defaults = OmegaConf.load(CONFIG_DIR / "track.yaml").sightings
    tracker = make_tracker(OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "tracker" / "botsort.yaml")))
    rng = np.random.default_rng(seed)
    log = TrackLog(thumbnail=0)
    _, frames = read_frames(flight["video"])
    for frame in frames:
        _, xyxy = truth.get(frame.index, (None, np.zeros((0, 4))))
        kept = xyxy[rng.random(len(xyxy)) > 0.1]
        boxes = kept + rng.normal(0, 1.5, kept.shape)
        conf = rng.uniform(0.45, 0.9, len(kept))
        if rng.random() < 0.3:
            x, y = rng.uniform(0, 600), rng.uniform(0, 320)
            boxes, conf = np.r_[boxes, [[x, y, x + 20, y + 20]]], np.r_[conf, 0.2]
        image = frame.bgr()
        det = Detections(xyxy=boxes, class_id=np.zeros(len(boxes)), confidence=conf)
        rows = np.asarray(tracker.update(tracker_input(det, image.shape[:2]), image)).reshape(-1, 8)
        log.update(frame.index, frame.time, rows)
    counted = len(log.sightings({0: "car"}, min_frames=defaults.min_frames, min_conf=defaults.min_conf))
    unique = truth_sightings(truth, min_frames=defaults.min_frames)
    assert unique >= 30, "the flyover shows too few objects for a 10% check"
    assert abs(counted - unique) <= 0.1 * unique, f"{counted} sightings counted, {unique} unique objects"


# --- pure parts -------------------------------------------------------------------------------------------------


def test_a_sighting_needs_its_frames_or_seconds_and_its_confidence() -> None:
    log = TrackLog(thumbnail=0)
    for f in range(10):
        rows = [[0, 0, 10, 10, 1, 0.9, 2]]  # track 1: 10 frames, 0.9
        rows += [[20, 20, 30, 30, 2, 0.3, 0]] if f < 6 else []  # track 2: 6 frames, never above 0.3
        rows += [[40, 40, 50, 50, 3, 0.8, 0]] if f < 2 else []  # track 3: 2 frames, 0.1 s
        rows += [[60, 60, 70, 70, 4, 0.8, 1 if f == 9 else 0]]  # track 4: class 0 on 9 of 10 frames
        log.update(f, f / 10, np.array(rows, float))
    names = {0: "car", 1: "truck", 2: "tank"}
    assert [s["id"] for s in log.sightings(names, min_frames=3, min_conf=0.4)] == [1, 4]
    assert [s["id"] for s in log.sightings(names, min_frames=3, min_conf=0.2)] == [1, 2, 4]
    assert [s["id"] for s in log.sightings(names, min_seconds=0.1, min_conf=0.4)] == [1, 3, 4]
    first = log.sightings(names, min_frames=1)[0]
    assert (first["class"], first["first_s"], first["last_s"], first["frames"]) == ("tank", 0.0, 0.9, 10)
    assert log.sightings(names)[-1]["class"] == "car"


def test_mot_metrics_are_perfect_for_the_truth_and_count_an_identity_switch() -> None:
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    truth = {f: (np.array([1, 2]), boxes + f) for f in range(10)}
    perfect = mot_metrics(truth, {f: (np.array([7, 8]), b) for f, (_, b) in truth.items()}, range(10))
    assert (perfect["MOTA"], perfect["IDF1"], perfect["id_switches"]) == (1.0, 1.0, 0)
    assert perfect["HOTA"] == pytest.approx(1.0, abs=1e-6)
    swapped = {f: (np.array([7, 8]) if f < 5 else np.array([8, 7]), b) for f, (_, b) in truth.items()}
    scored = mot_metrics(truth, swapped, range(10))
    assert scored["id_switches"] == 2 and scored["IDF1"] < 1.0 and scored["MOTA"] == pytest.approx(0.9)
    missed = mot_metrics(truth, {}, range(10))
    assert missed["misses"] == 20 and missed["MOTA"] == 0.0


def test_the_day_comes_from_the_name_then_the_container_then_the_file_time(tmp_path: Path) -> None:
    import av

    video = tmp_path / "flight.mp4"
    with av.open(str(video), "w", format="mp4") as container:
        container.metadata["creation_time"] = "2025-07-04T10:00:00.000000Z"
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    pattern = OmegaConf.load(CONFIG_DIR / "track.yaml").day.pattern
    assert creation_day(video).isoformat() == "2025-07-04"
    assert video_day(video, ["name", "creation_time", "file_time"], pattern) == ("2025-07-04", "creation_time")
    named = video.rename(tmp_path / "DJI_20260314_0001.mp4")
    assert video_day(named, ["name", "creation_time"], pattern) == ("2026-03-14", "name")
    assert day_from_name("cam_2026-13-01.mp4", pattern) is None  # no 13th month
    os.utime(named, (0, 86400 * 365))
    assert video_day(named, ["file_time"], pattern) == ("1971-01-01", "file_time")
    with pytest.raises(DroneVisionError, match="day.sources: unknown 'exif'"):
        video_day(named, ["exif"], pattern)
    rows = per_day([{"error": None, "day": "2026-03-14", "sightings": {"car": 2}, "footage_s": 5.0},
                    {"error": "truncated", "day": "2026-03-14"}])  # fmt: skip
    assert rows == [{"day": "2026-03-14", "class": "car", "sightings": 2, "videos": 1, "footage_s": 5.0}]


def test_the_annotated_writer_makes_an_mp4_of_every_frame_with_even_sides(tmp_path: Path) -> None:
    from dronevision.track.draw import Annotator, Mp4Writer

    writer = Mp4Writer(tmp_path / "a.mp4", fps=5)
    annotator = Annotator({0: "car"}, trail=3)
    for k in range(7):
        image = np.full((45, 81, 3), 90, np.uint8)
        writer.write(annotator.draw(image, np.array([[10 + k, 10, 30 + k, 25, 3, 0.9, 0, 0]], float)))
    assert not (tmp_path / "a.mp4").exists()  # only the .part until closed
    assert writer.close() == tmp_path / "a.mp4" and not (tmp_path / "a.mp4.part").exists()
    assert _decode(tmp_path / "a.mp4") == (7, (44, 80))


# --- the command, with a real model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three short flyovers (one named with its day), their ground truth, a corrupt video, and a seeded untrained
    yolov8n ("car") exported to ONNX, whose boxes are arbitrary but plentiful and the same on every run."""
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    from dronevision.mlflow_run import MlflowRun

    root = tmp_path_factory.mktemp("track")
    flights = root / "flights"
    for name, seed in (("DJI_20260314_a", 1), ("flightB", 2), ("flightC", 3)):
        render_flyover(flights, dataset_dir=BUNDLED, n_frames=20, fps=10, name=name, seed=seed, frame_wh=(320, 192))
    broken = root / "with-broken"
    broken.mkdir()
    (broken / "flightA.mp4").write_bytes((flights / "DJI_20260314_a.mp4").read_bytes())
    (broken / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "car"}
    model.eval()
    for head in model.model[-1].cv3:
        head[-1].bias.data.fill_(0.5)
    model.args = {"imgsz": 160, "task": "detect"}
    weights = root / "seeded.pt"
    torch.save({"model": model, "train_args": {"imgsz": 160, "task": "detect"}, "epoch": -1}, weights)
    onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=160, dynamic=True, simplify=False, verbose=False))
    training = MlflowRun(f"sqlite:///{root}/mlflow.db", "dronevision", "train").start()  # the run the model came from
    training.end()
    (root / "mlflow_run.json").write_text(
        json.dumps({"run_id": training.run_id, "tracking_uri": training.tracking_uri})
    )
    return {"root": root, "flights": flights, "broken": broken, "pt": weights, "onnx": onnx, "run": training.run_id}


def _track(footage: dict[str, Any], out: Path, *overrides: str) -> dict[str, Any]:
    from dronevision.track import run

    cfg = compose_config(
        "track",
        f"weights={footage['onnx']}",
        f"input={footage['flights']}",
        f"out_dir={out}",
        f"mlflow.tracking_uri=sqlite:///{footage['root']}/mlflow.db",
        "detector.threads=1",
        "sightings.min_conf=0.1",
        "sightings.min_frames=3",
        *overrides,
    )
    return run(cfg)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_track_writes_the_per_video_and_merged_reports(footage: dict[str, Any], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    labels = ("labels.format=visdrone-vid", f"labels.path={footage['flights']}/annotations")
    summary = _track(footage, out, *labels)
    assert (summary["videos"], summary["failed_videos"], summary["skipped_videos"]) == (3, 0, 0)
    assert summary["frames_decoded"] == summary["frames_processed"] == 60 and summary["footage_s"] == 6.0
    assert summary["sightings"] > 0 and summary["per_class"]["car"]["detections"] >= summary["sightings"]
    assert set(summary["time_split_s"]) == {"decode", "detect", "track", "write"}
    assert all(v["setup_s"] > 0 and v["seconds"] > 0 for v in summary["per_video"])
    assert summary["setup_seconds"] == pytest.approx(sum(v["setup_s"] for v in summary["per_video"]), abs=0.01)
    merged = _rows(out / "sightings.csv")
    assert len(merged) == summary["sightings"] == sum(v["n_sightings"] for v in summary["per_video"])
    for video in summary["per_video"]:
        folder = out / "videos" / video["video_id"]
        assert _decode(folder / "annotated.mp4") == (20, (192, 320))
        assert {"MOTA", "IDF1", "HOTA", "id_switches"} <= set(video["mot"]) and video["mot"]["gt_objects"] > 0
        rows = [json.loads(line) for line in (folder / "tracks.jsonl").read_text().splitlines()]
        assert {r["frame"] for r in rows} <= set(range(1, 21)) and rows[0]["x"] == -1
        sightings = json.loads((folder / "sightings.json").read_text())
        assert all((folder / s["thumbnail"]).is_file() for s in sightings)
        assert (folder / "contact_sheet.png").is_file() == bool(sightings)
        for s in sightings:  # a sighting's frames are tracked boxes under its id
            assert sum(1 for r in rows if r["id"] == s["id"]) == s["frames"] >= 3
    day = next(v for v in summary["per_video"] if v["video_id"] == "DJI_20260314_a")
    assert (day["day"], day["day_source"]) == ("2026-03-14", "name")
    per_day_rows = _rows(out / "sightings_per_day.csv")
    assert sum(int(r["sightings"]) for r in per_day_rows) == summary["sightings"]
    assert (out / "sightings_per_day.png").is_file()
    run = MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
    assert run.data.tags["dronevision.stage"] == "track" and run.data.metrics["sightings"] == summary["sightings"]
    assert run.data.tags["dronevision.training_run_id"] == footage["run"] == summary["mlflow"]["training_run_id"]
    assert "track/sightings.csv" in {
        a.path for a in MlflowClient(summary["mlflow"]["tracking_uri"]).list_artifacts(run.info.run_id, "track")
    }
    assert json.loads((out / "summary.json").read_text())["sightings"] == summary["sightings"]

    again = _track(footage, out, *labels)  # same model, content and settings: nothing to do, the same report
    assert again["skipped_videos"] == 3 and _rows(out / "sightings.csv") == merged
    changed = _track(footage, out, *labels, "sightings.min_frames=4")  # a setting changed: tracked again
    assert changed["skipped_videos"] == 0 and changed["sightings"] <= summary["sightings"]


@pytest.mark.slow
def test_the_warm_up_compiles_the_session_the_videos_frames_use(footage: dict[str, Any]) -> None:
    """OpenVINO compiles a session per input shape; after the warm-up on blank frames of the video's size, tracking
    its real frames compiles nothing more (so no compilation falls inside the video's timed seconds)."""
    from dronevision.infer import load_detector
    from dronevision.sample.decode import read_frames
    from dronevision.track.video import warm_up

    detector = load_detector(footage["onnx"], runtime="openvino", conf=0.1, threads=1)
    info, frames = read_frames(footage["flights"] / "flightB.mp4")
    assert info["size_hw"] == (192, 320)
    warm_up(detector, info["size_hw"], 4)
    compiled = len(detector._sessions)
    detector.predict([f.bgr() for f in list(frames)[:4]], batch=4)
    assert len(detector._sessions) == compiled


@pytest.mark.slow
def test_one_corrupt_video_of_several_is_recorded_and_the_others_go_on(footage: dict[str, Any], tmp_path: Path) -> None:
    summary = _track(footage, tmp_path / "out", f"input={footage['broken']}")
    assert (summary["videos"], summary["failed_videos"]) == (2, 1)
    error = summary["errors"][str(footage["broken"] / "broken.mp4")]
    assert "not a readable video" in error and "\n" not in error
    assert not (tmp_path / "out" / "videos" / "broken").exists()
    with pytest.raises(DroneVisionError, match="every input failed"):
        _track(footage, tmp_path / "out2", f"input={footage['broken']}/broken.mp4")


@pytest.mark.slow
def test_another_models_results_and_unknown_classes_are_refused(footage: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    _track(footage, out, f"input={footage['flights']}/flightB.mp4")
    with pytest.raises(DroneVisionError, match="holds the results of another model .*overwrite=true"):
        _track(footage, out, f"weights={footage['pt']}", f"input={footage['flights']}/flightB.mp4")
    replaced = _track(footage, out, f"weights={footage['pt']}", f"input={footage['flights']}/flightB.mp4",
                      "overwrite=true", "detector.runtime=torch")  # fmt: skip
    assert replaced["skipped_videos"] == 0 and replaced["runtime"] == "torch"
    with pytest.raises(DroneVisionError, match=r"classes \['tank'\] are not in the model's classes \['car'\]"):
        _track(footage, tmp_path / "out2", "classes=[tank]")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "killed"])
def test_an_interrupted_run_resumes_without_losing_or_doubling_a_sighting(
    footage: dict[str, Any], tmp_path: Path, sig: signal.Signals
) -> None:
    """Stopped after its first video (SIGTERM: it cleans up and exits 143; SIGKILL: nothing runs, a partial video
    folder may stay), a re-run skips the finished video, redoes the rest and reports what an uninterrupted run does."""
    reference = _track(footage, tmp_path / "reference")
    out = tmp_path / "out"
    args = [
        sys.executable, "-m", "dronevision.track", f"model={footage['onnx']}", f"input={footage['flights']}",
        f"out_dir={out}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "detector.threads=1",
        "sightings.min_conf=0.1", "sightings.min_frames=3",
    ]  # fmt: skip
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = out / "videos" / "DJI_20260314_a" / "result.json"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert process.returncode == 143 and "interrupted by SIGTERM" in err, err[-2000:]
        assert not list((out / "videos").glob(".tmp-*")), "the video in progress left a partial folder"
    else:
        assert process.returncode == -signal.SIGKILL
    assert first.exists() and not (out / "summary.json").exists()
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= summary["skipped_videos"] < 3
    assert not list((out / "videos").glob(".tmp-*"))
    assert _rows(out / "sightings.csv") == _rows(tmp_path / "reference" / "sightings.csv")
    assert summary["sightings"] == reference["sightings"]


@pytest.mark.slow
def test_ray_gives_the_local_result(footage: dict[str, Any], tmp_path: Path) -> None:
    import ray

    local = _track(footage, tmp_path / "local")
    try:
        on_ray = _track(footage, tmp_path / "ray", "executor=ray", "workers=2")
    finally:
        ray.shutdown()
    assert _rows(tmp_path / "ray" / "sightings.csv") == _rows(tmp_path / "local" / "sightings.csv")
    assert on_ray["per_class"] == local["per_class"] and on_ray["frames_processed"] == local["frames_processed"]
    for name in ("DJI_20260314_a", "flightB"):
        a = (tmp_path / "local" / "videos" / name / "tracks.jsonl").read_text()
        assert a == (tmp_path / "ray" / "videos" / name / "tracks.jsonl").read_text()


def test_cvat_video_ground_truth_is_interpolated_and_scored(tmp_path: Path) -> None:
    xml = tmp_path / "annotations.xml"
    xml.write_text(
        """<annotations><version>1.1</version>
  <meta><task><size>4</size><original_size><width>64</width><height>48</height></original_size></task></meta>
  <track id="7" label="car" source="manual">
    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="0" ytl="0" xbr="10" ybr="10" z_order="0"/>
    <box frame="2" keyframe="1" outside="0" occluded="0" xtl="4" ytl="2" xbr="14" ybr="12" z_order="0"/>
    <box frame="3" keyframe="1" outside="1" occluded="0" xtl="4" ytl="2" xbr="14" ybr="12" z_order="0"/>
  </track></annotations>"""
    )
    truth = load_truth("cvat-video", xml)
    assert sorted(f for f, (ids, _) in truth.items() if len(ids)) == [0, 1, 2]  # outside from frame 3
    assert truth[1][0].tolist() == [7] and truth[1][1].tolist() == [[2.0, 1.0, 12.0, 11.0]]
    scored = mot_metrics(truth, {f: (np.array([1]), b) for f, (ids, b) in truth.items() if len(ids)}, range(4))
    assert (scored["MOTA"], scored["IDF1"], scored["gt_objects"]) == (1.0, 1.0, 1)
    with pytest.raises(DroneVisionError, match="labels.format must be visdrone-vid or cvat-video"):
        load_truth("mot17", xml)
