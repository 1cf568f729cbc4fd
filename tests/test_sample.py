"""The sample stage on videos generated here: samplers, filters, output, bad input, executors, label joins."""

from __future__ import annotations

import fractions
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from dronevision.errors import DroneVisionError
from dronevision.sample import run
from dronevision.sample.command import dedupe_across_videos
from dronevision.sample.frames import Sampler, judge

from .conftest import REPO, compose_config, frame_records

FPS = 10


def pattern(seed: int, size: tuple[int, int] = (96, 160)) -> np.ndarray:
    """A sharp, distinct frame: random blocks upscaled without smoothing."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    fps: int = FPS,
    pts_ms: Sequence[int] | None = None,
    codec: str = "libx264",
) -> Path:
    """Encode BGR frames with PyAV; constant rate ``fps``, or variable with explicit timestamps in ms."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=None if pts_ms else fps)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": "12", "g": "10"}  # a key frame at least every second
    if pts_ms:
        stream.time_base = stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        if pts_ms:
            frame.pts, frame.time_base = pts_ms[i], fractions.Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def scripted_frames() -> list[np.ndarray]:
    """5 s at 10 fps, a new scene each second: s1 blurred, s2 = s0 again, s3 too dark, s4 fine."""
    scenes = [pattern(0), cv2.GaussianBlur(pattern(1), (0, 0), 6), pattern(0), pattern(3) // 12, pattern(4)]
    return [scenes[i // FPS] for i in range(5 * FPS)]


def test_uniform_sampling_with_filters_gives_a_reason_for_every_drop(compose_sample, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", scripted_frames())
    summary = run(compose_sample(f"input={video}", "sampling.skip_frames=null"))
    records = frame_records(tmp_path / "out")
    assert [r["pts_s"] for r in records] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [r["frame_index"] for r in records] == [0, 10, 20, 30, 40]
    assert [r["reason"] for r in records] == [None, "blurred", "duplicate", "underexposed", None]
    kept = sorted(p.name for p in (tmp_path / "out" / "frames").iterdir())
    assert kept == ["clip_000000000ms.jpg", "clip_000004000ms.jpg"]
    assert summary["decoded_frames"] == 50 and summary["kept_frames"] == 2
    assert summary["drops"] == {"blurred": 1, "duplicate": 1, "underexposed": 1}
    assert summary["footage_s"] == pytest.approx(5.0, abs=0.15) and summary["realtime_factor"] > 0
    assert set(summary["time_split_s"]) == {"decode", "filters", "write"}
    assert summary["errors"] == {}


def test_variable_frame_rate_is_sampled_by_time(compose_sample, tmp_path: Path) -> None:
    pts = [0, 50, 400, 1000, 1010, 2300, 2400, 3900]
    video = write_video(tmp_path / "vfr.mkv", [pattern(i) for i in range(len(pts))], pts_ms=pts)
    run(
        compose_sample(
            f"input={video}", "filters.min_sharpness=0", "filters.max_hash_distance=-1", "sampling.skip_frames=null"
        )
    )
    assert [r["pts_s"] for r in frame_records(tmp_path / "out")] == [0.0, 1.0, 2.3, 3.9]


def test_time_window_max_frames_and_keyframes(compose_sample, tmp_path: Path) -> None:
    video = write_video(tmp_path / "w.mp4", [pattern(i // 5) for i in range(60)])  # 6 s, new scene every 0.5 s
    run(
        compose_sample(
            f"input={video}",
            "start_s=2",
            "end_s=4.5",
            "sampling.every_s=0.5",
            "filters.min_sharpness=0",
            "sampling.skip_frames=null",
        )
    )
    times = [r["pts_s"] for r in frame_records(tmp_path / "out")]
    assert times == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert [r["frame_index"] for r in frame_records(tmp_path / "out")] == [20, 25, 30, 35, 40, 45]
    run(compose_sample(f"input={video}", "max_frames=3", "sampling.every_s=0.5", "filters.min_sharpness=0"))
    assert sum(r["kept"] for r in frame_records(tmp_path / "out")) == 3
    run(compose_sample(f"input={video}", "sampling=keyframes", "filters.min_sharpness=0"))
    import av

    with av.open(str(video)) as container:  # the key frames, as the container marks them
        stream = container.streams.video[0]
        expected = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.is_keyframe)
    key_times = [r["pts_s"] for r in frame_records(tmp_path / "out")]
    assert key_times == expected and 1 < len(expected) < 20  # key frames only, all of them


def test_skipping_b_frames_takes_the_next_decodable_frame_with_its_own_timestamp(compose_sample, tmp_path) -> None:
    import av

    video = write_video(tmp_path / "b.mp4", [pattern(i) for i in range(60)])  # 6 s, every frame different
    with av.open(str(video)) as container:  # the I and P frames, by their own timestamps
        stream = container.streams.video[0]
        ip = sorted(
            round(float(f.time), 6) for f in container.decode(stream) if int(f.pict_type) in (1, 2)
        )  # AV_PICTURE_TYPE_I, _P
    run(compose_sample(f"input={video}", "filters.min_sharpness=0"))  # the default: skip_frames=bidir
    times = [r["pts_s"] for r in frame_records(tmp_path / "out")]
    assert len(times) == 6 and all(t in ip for t in times)
    for second, t in enumerate(times):  # the first I/P frame at or after each second
        assert t == min(x for x in ip if x >= second - 1e-6)
    assert [r["frame_index"] for r in frame_records(tmp_path / "out")] == [round(t * FPS) for t in times]


def test_scene_sampler_takes_a_frame_per_scene(compose_sample, tmp_path: Path) -> None:
    video = write_video(tmp_path / "s.mp4", [pattern(i // 10) for i in range(40)])  # 4 scenes of 1 s
    run(compose_sample(f"input={video}", "sampling=scene", "filters.min_sharpness=0"))
    assert [r["frame_index"] for r in frame_records(tmp_path / "out")] == [0, 10, 20, 30]


def test_image_sequence_folder_is_read_as_a_video(compose_sample, tmp_path: Path) -> None:
    seq = tmp_path / "uav0001"
    seq.mkdir()
    for i in range(1, 61):  # VisDrone-VID style: 0000001.jpg ...
        cv2.imwrite(str(seq / f"{i:07d}.jpg"), pattern(i // 30))
    summary = run(compose_sample(f"input={seq}", "filters.min_sharpness=0"))
    assert [r["frame_index"] for r in frame_records(tmp_path / "out")] == [0, 30]
    assert summary["decoded_frames"] == 60 and summary["per_video"][0]["codec"] == "images"


def test_near_duplicates_across_videos_are_dropped_in_input_order(compose_sample, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", [pattern(0)] * 10 + [pattern(1)] * 10)
    write_video(folder / "b.avi", [pattern(1)] * 10 + [pattern(2)] * 10, codec="mpeg4")  # repeats a's 2nd second
    summary = run(compose_sample(f"input={folder}", "workers=2"))
    reasons = {(r["video"], r["pts_s"]): r["reason"] for r in frame_records(tmp_path / "out")}
    assert reasons == {("a", 0.0): None, ("a", 1.0): None, ("b", 0.0): "duplicate_across_videos", ("b", 1.0): None}
    assert len(list((tmp_path / "out" / "frames").iterdir())) == 3
    assert summary["drops"] == {"duplicate_across_videos": 1}


def test_dedupe_across_videos_keeps_first_occurrence() -> None:
    results = [
        {"video_id": v, "drops": {}, "kept": 1, "records": [{"kept": True, "hash": h, "file": f"frames/{v}"}]}
        for v, h in (("a", "00000000000000ff"), ("b", "00000000000000fe"), ("c", "ff00000000000000"))
    ]
    assert dedupe_across_videos(results, max_distance=2) == 1
    assert [r["records"][0]["kept"] for r in results] == [True, False, True]


# --- bad input ----------------------------------------------------------------------------------------------------


def _bad_videos(folder: Path) -> dict[str, str]:
    """Write one good and several bad videos; returns file -> expected start of the reason."""
    folder.mkdir()
    write_video(folder / "good.mp4", [pattern(i // 10) for i in range(30)])
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    full = write_video(folder / "full.mkv", [pattern(i // 10) for i in range(60)]).read_bytes()
    (folder / "full.mkv").unlink()
    (folder / "truncated.mkv").write_bytes(full[: len(full) // 3])
    unsupported = write_video(folder / "u.avi", [pattern(0)] * 5, codec="mjpeg")
    unsupported.write_bytes(unsupported.read_bytes().replace(b"MJPG", b"ZQZQ"))  # a codec FFmpeg does not know
    return {
        "empty.mp4": "empty file",
        "text.mp4": "not a readable video",
        "truncated.mkv": "truncated",
        "u.avi": "unsupported codec",
    }


def test_bad_videos_are_recorded_and_the_others_go_on(compose_sample, tmp_path: Path) -> None:
    expected = _bad_videos(tmp_path / "in")
    summary = run(compose_sample(f"input={tmp_path / 'in'}", "filters.min_sharpness=0"))
    errors = {Path(k).name: v for k, v in {**summary["errors"], **summary["damaged"]}.items()}
    assert set(errors) == set(expected)
    for name, start in expected.items():
        assert errors[name].startswith(start) and "\n" not in errors[name]
    # the cut video keeps the frames before the cut (tests/test_faults_footage.py); its only one repeats good's
    assert summary["failed_videos"] == 3 and summary["damaged_videos"] == 1 and summary["kept_frames"] == 3
    assert summary["drops"] == {"duplicate_across_videos": 1}
    files = {p.name for p in (tmp_path / "out" / "frames").iterdir()}
    assert files == {"good_000000000ms.jpg", "good_000001000ms.jpg", "good_000002000ms.jpg"}  # nothing partial


def test_cli_exits_non_zero_when_every_input_failed(tmp_path: Path) -> None:
    _bad_videos(tmp_path / "in")
    (tmp_path / "in" / "good.mp4").unlink()
    (tmp_path / "in" / "truncated.mkv").unlink()  # a cut video keeps its frames before the cut: not a failure
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "dronevision.sample", f"input={tmp_path / 'in'}", f"out_dir={out}"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: every input failed") and len(result.stderr.strip().splitlines()) == 1
    assert len(json.loads((out / "summary.json").read_text())["errors"]) == 3
    assert not list((out / "frames").iterdir())


def test_missing_input_is_one_line(compose_sample, tmp_path: Path) -> None:
    with pytest.raises(DroneVisionError, match="does not exist"):
        run(compose_sample(f"input={tmp_path / 'nope.mp4'}"))
    with pytest.raises(DroneVisionError, match="labels.path .* does not exist"):
        video = write_video(tmp_path / "v.mp4", [pattern(0)] * 3)
        run(compose_sample(f"input={video}", "labels.format=visdrone-vid", f"labels.path={tmp_path / 'x.txt'}"))


# --- pure parts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("every_s", "times", "expected"),
    [
        (1.0, [0.0, 0.5, 1.2, 1.9, 2.0], [0.0, 1.2, 2.0]),
        (1.0, [0.0, 3.5, 3.6, 4.0], [0.0, 3.5, 4.0]),  # a gap in the footage does not make a burst
        (0.0, [0.0, 0.1, 0.2], [0.0, 0.1, 0.2]),
        (2.0, [0.7], [0.7]),  # a video shorter than the stride still gives its first frame
    ],
)
def test_uniform_sampler_table(every_s: float, times: list[float], expected: list[float]) -> None:
    sampler = Sampler("uniform", every_s=every_s)
    assert [t for t in times if sampler.wants(t)] == expected


def test_judge_reasons() -> None:
    filters = {"min_sharpness": 15, "min_brightness": 20, "max_brightness": 235, "max_hash_distance": 4}
    sharp = cv2.cvtColor(pattern(0, (90, 160)), cv2.COLOR_BGR2GRAY)
    stats, reason = judge(sharp, filters=filters, seen=[])
    assert reason is None and stats["sharpness"] > 15
    assert judge(sharp, filters=filters, seen=[int(stats["hash"], 16)])[1] == "duplicate"
    assert judge(np.full((90, 160), 250, np.uint8), filters=filters, seen=[])[1] == "overexposed"
    assert judge(cv2.GaussianBlur(sharp, (0, 0), 6), filters=filters, seen=[])[1] == "blurred"


# --- executors ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_executor_matches_the_local_run(compose_sample, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        write_video(folder / f"v{i}.mp4", [pattern(10 * i + k // 10) for k in range(30)])
    local = run(compose_sample(f"input={folder}", "workers=2", f"out_dir={tmp_path / 'local'}"))
    import ray

    try:
        remote = run(compose_sample(f"input={folder}", "executor=ray", "workers=2", f"out_dir={tmp_path / 'ray'}"))
    finally:
        ray.shutdown()
    assert (tmp_path / "local" / "frames.jsonl").read_text() == (tmp_path / "ray" / "frames.jsonl").read_text()
    for frame in (tmp_path / "local" / "frames").iterdir():
        assert frame.read_bytes() == (tmp_path / "ray" / "frames" / frame.name).read_bytes()
    assert local["kept_frames"] == remote["kept_frames"] == 9


# --- labels ---------------------------------------------------------------------------------------------------------


def test_vid_annotations_join_the_kept_frames_and_feed_the_dataset_stage(compose_sample, tmp_path: Path) -> None:
    from dronevision.dataset import command as build

    frames = scripted_frames()
    video = write_video(tmp_path / "flight.mp4", frames)
    lines = [f"{n},{tid},{5 * tid + n % 7},{10 + tid},12,9,1,4,0,0" for n in range(1, 51) for tid in (1, 2)]
    (tmp_path / "flight.txt").write_text("\n".join(lines) + "\n")
    summary = run(
        compose_sample(f"input={video}", "labels.format=visdrone-vid", f"labels.path={tmp_path / 'flight.txt'}")
    )
    labelled = tmp_path / "out" / "labelled"
    assert summary["labels"]["annotations"]["frames"] == 2
    assert sorted(p.name for p in (labelled / "sequences" / "flight").iterdir()) == ["0000001.jpg", "0000041.jpg"]
    got = (labelled / "annotations" / "flight.txt").read_text().splitlines()
    assert got == [line for line in lines if line.split(",")[0] in ("1", "41")]  # frames 0 and 40 (1-based 1, 41)
    cfg = compose_config(
        "dataset_build",
        "source.format=visdrone-vid",
        f"source.path={labelled}",
        f"out_dir={tmp_path / 'ds'}",
        "split.val_fraction=0",
    )
    built = build.run(cfg)
    assert built["class_counts"] == {"train": {"car": 4}}
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert sorted(e["attrs"]["target_id"] for e in manifest["entries"]) == [[1, 2], [1, 2]]


@pytest.mark.slow
def test_flyover_to_sample_to_labels_to_dataset_to_one_epoch(compose_sample, compose_train, tmp_path: Path) -> None:
    """The README's command sequence, on two rendered flights (so the split can keep each flight whole)."""
    from dronevision.dataset import command as build
    from dronevision.synth import render_flyover
    from dronevision.train import run as train

    flights = tmp_path / "flights"
    for seed, name in ((1, "flightA"), (2, "flightB")):
        render_flyover(
            flights,
            dataset_dir=REPO / "data/samples/aerial-cars",
            n_frames=30,
            fps=10.0,
            frame_wh=(320, 192),
            seed=seed,
            name=name,
            grid=(2, 2),
        )
    summary = run(
        compose_sample(
            f"input={flights}",
            "labels.format=visdrone-vid",
            f"labels.path={flights / 'annotations'}",
            "sampling.every_s=0.5",
        )
    )
    assert summary["videos"] == 2 and summary["kept_frames"] > 4
    cfg = compose_config(
        "dataset_build",
        "source.format=visdrone-vid",
        f"source.path={tmp_path / 'out' / 'labelled'}",
        f"out_dir={tmp_path / 'ds'}",
        "taxonomy=vehicles",
        "split.val_fraction=0.5",
    )
    built = build.run(cfg)
    assert set(built["images"]) == {"train", "val"} and built["classes"][0] == "car"
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {s: len(g) for s, g in manifest["groups"].items()} == {"train": 1, "val": 1}
    result = train(compose_train(f"dataset.path={tmp_path / 'ds'}", "train.fraction=1.0", "export.enabled=false"))
    assert Path(result["weights"]).is_file() and result["dataset"]["n_train"] == built["images"]["train"]


@pytest.mark.slow
def test_prelabel_export_and_import_round_trip(compose_sample, tiny_weights: Path, tmp_path: Path) -> None:
    """Pre-label kept frames with a real (tiny, untrained) model, export for review, import via the dataset stage."""
    from dronevision.dataset import command as build

    weights = tiny_weights
    video = write_video(tmp_path / "v.mp4", [pattern(i // 10) for i in range(30)])
    summary = run(
        compose_sample(
            f"input={video}",
            f"prelabel.weights={weights}",
            "prelabel.conf=0.0",
            "prelabel.imgsz=64",
            "filters.min_sharpness=0",
        )
    )
    pre = tmp_path / "out" / "prelabel"
    assert summary["labels"]["prelabel"]["frames"] == 3 and summary["labels"]["prelabel"]["boxes"] > 0
    assert {p.name for p in pre.iterdir()} == {"yolo", "cvat.xml", "labelstudio.json"}
    counts = []
    for fmt, path in (("yolo", pre / "yolo"), ("cvat", pre / "cvat.xml"), ("labelstudio", pre / "labelstudio.json")):
        cfg = compose_config(
            "dataset_build",
            f"source.format={fmt}",
            f"source.path={path}",
            f"source.images_dir={tmp_path / 'out' / 'frames'}",
            f"out_dir={tmp_path / fmt}",
            "split.val_fraction=0",
        )
        built = build.run(cfg)
        manifest = json.loads((tmp_path / fmt / "manifest.json").read_text())
        counts.append((built["class_counts"], sorted(tuple(b[1:]) for e in manifest["entries"] for b in e["boxes"])))
    assert counts[0][0] == counts[1][0] == counts[2][0]
    for other in counts[1:]:  # the same boxes, to the manifest's 0.01 px
        assert np.allclose(np.array(counts[0][1]), np.array(other[1]), atol=0.011)


def test_cvat_video_tracks_join_the_kept_frames(compose_sample, tmp_path: Path) -> None:
    from dronevision.dataset.cvat import read_cvat
    from dronevision.dataset.records import Issues

    video = write_video(tmp_path / "task.ts", [pattern(i // 10) for i in range(30)])  # MPEG-TS
    xml = (
        "<annotations><version>1.1</version><meta><task><size>30</size><original_size><width>160</width>"
        "<height>96</height></original_size></task></meta>"
        '<track id="0" label="tank"><box frame="0" keyframe="1" outside="0" occluded="0" xtl="0" ytl="0" xbr="20" '
        'ybr="10"/><box frame="20" keyframe="1" outside="0" occluded="0" xtl="40" ytl="20" xbr="60" ybr="30"/>'
        '<box frame="25" keyframe="1" outside="1" occluded="0" xtl="40" ytl="20" xbr="60" ybr="30"/></track>'
        "</annotations>"
    )
    (tmp_path / "task.xml").write_text(xml)
    summary = run(
        compose_sample(
            f"input={video}",
            "labels.format=cvat-video",
            f"labels.path={tmp_path / 'task.xml'}",
            "sampling.skip_frames=null",
        )
    )
    assert summary["labels"]["annotations"]["frames"] == 3
    records = {r.name: r for r in read_cvat(tmp_path / "out" / "labelled" / "annotations.xml", issues=Issues())}
    assert records["task_000000000ms"].xyxy.tolist() == [[0, 0, 20, 10]]
    assert records["task_000001000ms"].xyxy.tolist() == [[20, 10, 40, 20]]  # frame 10: halfway to frame 20
    assert records["task_000002000ms"].xyxy.tolist() == [[40, 20, 60, 30]]
    assert all(r.labels in ((), ("tank",)) for r in records.values())
