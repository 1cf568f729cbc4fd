"""Faults and hostile inputs in the sample stage (issue 15): damaged footage, still images posing as videos, time
windows outside the video, and near-duplicates on footage where only small things move."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from dronevision.errors import DroneVisionError
from dronevision.sample import run
from dronevision.sample.command import frame_name
from dronevision.sample.frames import changed_regions, find_duplicate, hamming

from .conftest import frame_records

pytestmark = pytest.mark.faults

FPS = 10


def scenes(seconds: int, size_wh: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """A new sharp scene (random blocks) every second, at ``FPS``."""
    rng = np.random.default_rng(0)
    w, h = size_wh
    per_second = [
        cv2.resize(rng.integers(30, 225, (h // 8, w // 8, 3), dtype=np.uint8), size_wh, interpolation=cv2.INTER_NEAREST)
        for _ in range(seconds)
    ]
    return [per_second[i // FPS] for i in range(seconds * FPS)]


def encode(path: Path, frames: Sequence[np.ndarray], *, options: Mapping[str, str] | None = None) -> Path:
    """H.264 at ``FPS`` with a key frame every second; ``options`` go to the container (e.g. faststart)."""
    import av

    container = av.open(str(path), "w", options=dict(options or {}))
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "20", "g": str(FPS)}
    for image in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def decodable(path: Path) -> list[float]:
    """The timestamps PyAV decodes from ``path`` before it stops (at the end or at an error)."""
    import av

    times: list[float] = []
    with av.open(str(path)) as container, contextlib.suppress(av.error.FFmpegError):
        times.extend(float(f.time) for f in container.decode(container.streams.video[0]))
    return times


# --- footage that is damaged but readable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "overrides", "reason"),
    [
        # the index (moov, in front) says 100 frames; FFmpeg fails on the first packet past the cut
        ("cut.mp4", {"movflags": "faststart"}, ["decode_threads=1"], "damaged"),
        # the same with frame threads, which may end the stream quietly instead of failing
        ("cut.mp4", {"movflags": "faststart"}, [], "damaged|truncated"),
        ("cut.mkv", None, [], "truncated"),  # ends early without a decoding error
    ],
)
def test_cut_video_keeps_the_frames_before_the_damage_and_records_where(
    compose_sample, tmp_path: Path, name: str, options: dict | None, overrides: list[str], reason: str
) -> None:
    import av

    full = encode(tmp_path / f"full{Path(name).suffix}", scenes(10), options=options).read_bytes()
    if options:  # faststart: the index (moov) comes before the data (mdat)
        assert full.index(b"moov") < full.index(b"mdat")
    video = tmp_path / name
    video.write_bytes(full[: int(len(full) * 0.6)])
    if options:
        with av.open(str(video)) as container:
            assert container.streams.video[0].frames == 100  # the index is whole, the data is not
    times = decodable(video)
    assert 20 < len(times) < 90
    summary = run(compose_sample(f"input={video}", "sampling.skip_frames=null", *overrides))

    assert summary["failed_videos"] == 0 and summary["errors"] == {}
    assert summary["damaged_videos"] == 1
    stopped = summary["per_video"][0]["damaged"]
    assert stopped["frames_decoded"] == len(times) and stopped["stopped_at_s"] == pytest.approx(times[-1], abs=1e-3)
    line = summary["damaged"][str(video)]
    assert line == stopped["reason"] and "\n" not in line
    assert re.match(rf"({reason}): decoding stopped at {times[-1]:.1f} s of 10.0 s after {len(times)} frames", line)
    seconds = [s for s in range(10) if s <= times[-1]]  # one frame per second, every one a new scene
    assert [r["pts_s"] for r in frame_records(tmp_path / "out")] == seconds
    kept = sorted(p.name for p in (tmp_path / "out" / "frames").iterdir())
    assert kept == [frame_name(video.stem, s) for s in seconds] and summary["kept_frames"] == len(seconds)


# --- not footage --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_image_named_mp4_is_refused_as_not_footage(compose_sample, tmp_path: Path, suffix: str) -> None:
    image = tmp_path / f"photo{suffix}"
    cv2.imwrite(str(image), scenes(1)[0])
    video = image.rename(tmp_path / "photo.mp4")
    with pytest.raises(DroneVisionError, match=r"every input failed .*: not a video: a single still image"):
        run(compose_sample(f"input={video}"))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["errors"][str(video)].startswith("not a video: a single still image (")
    assert summary["kept_frames"] == 0 and not list((tmp_path / "out" / "frames").iterdir())


# --- time windows outside the video -------------------------------------------------------------------------------


def test_start_past_a_videos_end_is_recorded_for_that_video(compose_sample, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    encode(folder / "short.mp4", scenes(2))
    encode(folder / "long.mp4", scenes(5))
    summary = run(compose_sample(f"input={folder}", "start_s=3"))
    assert summary["errors"] == {str(folder / "short.mp4"): "start_s=3 is past the end of the video (duration 2.0 s)"}
    assert [(r["video"], r["pts_s"]) for r in frame_records(tmp_path / "out")] == [("long", 3.0), ("long", 4.0)]


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (("start_s=3", "end_s=1"), "end_s=1 is before start_s=3: the time window holds no footage"),
        (("start_s=-1",), "start_s=-1 is negative"),
    ],
)
def test_impossible_window_is_one_line_before_anything_runs(
    compose_sample, tmp_path: Path, window: tuple[str, ...], message: str
) -> None:
    video = encode(tmp_path / "v.mp4", scenes(2))
    with pytest.raises(DroneVisionError, match=message) as caught:
        run(compose_sample(f"input={video}", *window))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


# --- near-duplicates when only small things move ------------------------------------------------------------------


def traffic(*, moving: bool, noise: float, drift: float = 0.0, seconds: int = 6, seed: int = 1) -> list[np.ndarray]:
    """A hovering drone's view at 640x360: a still textured scene with a road and a flat lot, and five vehicles of
    12x6 px (2 % of the width) driving at 50-90 px/s, or parked; ``noise`` is the sensor's (grey levels), ``drift``
    the hover's (up to this many pixels, sub-pixel, either way)."""
    w, h = 640, 360
    rng = np.random.default_rng(seed)
    coarse = rng.integers(50, 200, (h // 24, w // 24, 3), dtype=np.uint8)
    fine = rng.normal(0, 18, (h // 4, w // 4)).astype(np.float32)
    scene = (
        cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        + cv2.resize(fine, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
    )
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    scene[150:190] = 105  # a road
    scene[0:100, 0:170] = 120  # a flat parking lot
    vehicles = [
        (rng.uniform(0, w), rng.uniform(10, h - 20), rng.choice([-1, 1]) * rng.uniform(50, 90), rng.integers(0, 256, 3))
        for _ in range(5)
    ]
    frames = []
    for i in range(seconds * FPS):
        image = scene.copy()
        for x0, y, speed, colour in vehicles:
            x = int((x0 + speed * i / FPS * moving) % w)
            cv2.rectangle(image, (x, int(y)), (x + 12, int(y) + 6), tuple(int(c) for c in colour), -1)
        if drift:
            shift = np.float32([[1, 0, rng.uniform(-drift, drift)], [0, 1, rng.uniform(-drift, drift)]])
            image = cv2.warpAffine(image, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
        frames.append(np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8))
    return frames


def test_hovering_over_moving_traffic_keeps_its_frames_and_over_a_still_scene_does_not(
    compose_sample, tmp_path: Path
) -> None:
    moving = encode(tmp_path / "traffic.mp4", traffic(moving=True, noise=2))
    summary = run(compose_sample(f"input={moving}", f"out_dir={tmp_path / 'moving'}"))
    records = frame_records(tmp_path / "moving")
    assert [r["pts_s"] for r in records] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert all(r["kept"] for r in records) and summary["drops"] == {}
    assert all(r["changed_regions"] > 0 for r in records[1:])
    # the whole frame's hash hardly changes: by it alone (region_grid=0, the old rule) all are near-duplicates
    first = int(records[0]["hash"], 16)
    assert all(hamming(int(r["hash"], 16), first) <= 4 for r in records)
    whole = run(compose_sample(f"input={moving}", f"out_dir={tmp_path / 'whole'}", "filters.region_grid=0"))
    assert whole["kept_frames"] == 1 and whole["drops"] == {"duplicate": 5}

    still = encode(tmp_path / "still.mp4", traffic(moving=False, noise=3, drift=1.0))
    summary = run(compose_sample(f"input={still}", f"out_dir={tmp_path / 'still'}"))
    records = frame_records(tmp_path / "still")
    assert summary["kept_frames"] == 1 and summary["drops"] == {"duplicate": 5}
    assert [r["changed_regions"] for r in records] == [None, 0, 0, 0, 0, 0]


def _scene(seed: int = 0) -> np.ndarray:
    """A 90x160 textured grey thumbnail (what 320x180 analysis frames give)."""
    small = np.random.default_rng(seed).integers(40, 210, (23, 40), dtype=np.uint8)
    return cv2.resize(small, (160, 90), interpolation=cv2.INTER_CUBIC)


def _changed(change: str) -> np.ndarray:
    image = _scene().astype(np.float32)
    if change == "noise":
        image += np.random.default_rng(1).normal(0, 3, image.shape)
    elif change == "exposure":
        image += 20
    elif change == "drift":  # sub-pixel
        image = cv2.warpAffine(image, np.float32([[1, 0, 0.7], [0, 1, -0.5]]), (160, 90), borderMode=cv2.BORDER_REFLECT)
    elif change == "drift 3 px":
        image = np.roll(image, (3, -2), axis=(0, 1))
    elif change == "car":
        image[10:13, 20:24] = 0  # top-left cell
    elif change == "two cars":
        image[10:13, 20:24] = 0
        image[70:73, 140:144] = 255  # bottom-right cell
    elif change == "one pixel":
        image[50, 50] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("noise", 0),
        ("exposure", 0),
        ("drift", 0),
        ("drift 3 px", 0),
        ("one pixel", 0),
        ("car", 1),
        ("two cars", 2),
    ],
)
def test_changed_regions_counts_what_moved_not_noise_drift_or_exposure(change: str, expected: int) -> None:
    assert changed_regions(_scene(), _changed(change), grid=4, min_change=12) == expected


@pytest.mark.parametrize(
    ("h", "change", "thumbs", "expected"),
    [
        (0xFF00, "car", "same", (False, None)),  # the hash differs: a new frame, whatever its regions
        (0xFF, "car", None, (True, None)),  # hash only: the old rule
        (0xFF, "noise", "same", (True, 0)),
        (0xFF, "car", "same", (False, 1)),  # the hash matches but a region changed
    ],
)
def test_find_duplicate_needs_the_hash_and_every_region(h: int, change: str, thumbs: str | None, expected) -> None:
    earlier = [_scene()] if thumbs else None
    got = find_duplicate(h, _changed(change), seen=[0xFE], thumbs=earlier, max_distance=4, grid=4, min_change=12)
    assert got == expected
