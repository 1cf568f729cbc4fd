"""GSD-aware and multi-scale inference: the arithmetic, DJI SRT and sidecar parsing, bad files, the scale merge."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dronevision.errors import DroneVisionError
from dronevision.infer import (
    Detector,
    GsdScaler,
    GsdSettings,
    SliceSettings,
    altitude_at,
    gsd_from_altitude,
    merge_scales,
    parse_sidecar,
    parse_srt,
    predict_images,
    resize_factor,
    scaled_predict,
)
from dronevision.infer.gsd import altitude_track
from dronevision.infer.multiscale import pad_to, scaled_size, unscale_detections, view_factor
from dronevision.schema import Detections

DJI = """1
00:00:00,000 --> 00:00:00,033
<font size="28">FrameCnt: 1, DiffTime: 33ms
2023-05-01 10:00:00.123
[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [focal_len: 24.00] [latitude: 47.123] [longitude: 8.456] \
[rel_alt: 120.500 abs_alt: 560.300] </font>

2
00:00:01,000 --> 00:00:01,033
<font size="28">FrameCnt: 31, DiffTime: 33ms
2023-05-01 10:00:01.123
[iso: 100] [shutter: 1/1000.0] [fnum: 2.8] [ev: 0] [focal_len: 24.00] [latitude: 47.123] [longitude: 8.456] \
[rel_alt: 130.500 abs_alt: 570.300] </font>
"""

OLD_DJI = """1
00:00:00,000 --> 00:00:01,000
F/2.8, SS 1000, ISO 100, EV 0, DZOOM 1.000, GPS (8.4560, 47.1230, 19), D 25.30m, H 120.5m, H.S 0.00m/s, V.S 0.00m/s

2
00:00:01,000 --> 00:00:02,000
F/2.8, SS 1000, ISO 100, EV 0, DZOOM 1.000, GPS (8.4560, 47.1230, 19), D 25.30m, H 60.25m, H.S 0.00m/s, V.S 0.00m/s
"""

CAMERA = {"focal_mm": 8.8, "sensor_width_mm": 13.2}


# --- arithmetic ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("altitude", "focal", "sensor", "width", "want"),
    [
        (100, 8.8, 13.2, 5472, 100 * 13.2 / (8.8 * 5472)),
        (120, 24.0, 36.0, 3840, 120 * 36 / (24 * 3840)),
        (50, 10.0, 10.0, 1000, 0.05),
    ],
)
def test_gsd_from_altitude(altitude: float, focal: float, sensor: float, width: int, want: float) -> None:
    got = gsd_from_altitude(altitude, focal_mm=focal, sensor_width_mm=sensor, image_width_px=width)
    assert got == pytest.approx(want)


@pytest.mark.parametrize("altitude", [0, -5, None])
def test_gsd_from_altitude_refuses_altitudes_not_above_ground(altitude: float | None) -> None:
    with pytest.raises(ValueError, match="altitude"):
        gsd_from_altitude(altitude, focal_mm=8.8, sensor_width_mm=13.2, image_width_px=100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("footage", "train", "want"),
    [(0.05, 0.10, 0.5), (0.10, 0.10, 1.0), (0.15, 0.10, 1.5), (0.01, 0.10, 0.25), (1.0, 0.10, 4.0)],
)
def test_resize_factor_is_footage_over_training_gsd_clamped(footage: float, train: float, want: float) -> None:
    assert resize_factor(footage, train) == pytest.approx(want)


def test_clamping_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    scaler = GsdScaler(GsdSettings(train_m=0.1, value_m=0.001))
    with caplog.at_level(logging.WARNING, logger="dronevision.infer.gsd"):
        assert scaler.factor(640) == scaler.factor(640) == 0.25
    assert len(caplog.records) == 1 and "clamped to 0.25" in caplog.records[0].getMessage()
    assert scaler.summary() == {"source": "config", "factor": 0.25, "clamped": True, "warning": None}


@pytest.mark.parametrize(
    ("config", "width", "want"),
    [
        ({"train_m": 0.1, "value_m": 0.05}, 640, 0.5),
        ({"train_m": 0.05, "altitude_m": 50, "focal_mm": 10, "sensor_width_mm": 10}, 1000, 1.0),  # 0.05 m/px
        ({"train_m": None, "value_m": 0.05}, 640, None),  # no training GSD: off
        ({}, 640, None),
    ],
)
def test_config_factor(config: dict, width: int, want: float | None) -> None:
    got = GsdScaler(GsdSettings.from_config(config)).factor(width)
    assert got is None if want is None else got == pytest.approx(want)


@pytest.mark.parametrize(
    "config",
    [{"train_m": 0}, {"train_m": -0.1}, {"value_m": "a"}, {"altitude_m": 100}, {"train": 0.1}],
)
def test_bad_gsd_settings_are_refused(config: dict) -> None:
    with pytest.raises(DroneVisionError, match="slicing.gsd"):
        SliceSettings.from_config({"gsd": config})


@pytest.mark.parametrize("scales", [[], [0], [-1.0], ["a"], [True]])
def test_bad_scales_are_refused(scales: list) -> None:
    with pytest.raises(DroneVisionError, match="slicing.scales"):
        SliceSettings.from_config({"scales": scales})


def test_defaults_do_not_scale() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="track")
    settings = SliceSettings.from_config(cfg.slicing)
    assert not settings.scaling and settings.scales is None and not settings.gsd.active
    assert SliceSettings.from_config(OmegaConf.to_container(cfg.slicing)) == settings
    assert SliceSettings.from_config({"scales": [0.5, 1], "gsd": {"train_m": 0.1}}).scales == (0.5, 1.0)


# --- SRT telemetry ---------------------------------------------------------------------------------------------


def test_parse_dji_srt() -> None:
    entries = parse_srt(DJI)
    assert [(a, b) for a, b, _ in entries] == [(0.0, 0.033), (1.0, 1.033)]
    first = entries[0][2]
    assert first["rel_alt"] == 120.5 and first["abs_alt"] == 560.3 and first["focal_len"] == 24.0
    assert first["line"] == 1 and entries[1][2]["line"] == 7
    assert altitude_track(entries) == [(0.0, 0.033, 120.5), (1.0, 1.033, 130.5)]


def test_parse_old_dji_srt_height() -> None:
    entries = parse_srt(OLD_DJI)
    assert [e[2]["h"] for e in entries] == [120.5, 60.25]
    assert "d" not in entries[0][2]  # D 25.30m is the distance, not an altitude
    assert altitude_track(entries) == [(0.0, 1.0, 120.5), (1.0, 2.0, 60.25)]


def test_parse_altitude_key() -> None:
    entries = parse_srt("1\n00:00:00,000 --> 00:00:00,500\n[altitude: 99.5] [latitude: 1.0]\n")
    assert altitude_track(entries) == [(0.0, 0.5, 99.5)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "x.SRT:1: no SRT blocks"),
        ("1\nnot a time\nrel_alt: 3\n", "x.SRT:1: not an SRT block"),
        (DJI + "\n3\n00:00:02,000 -> 00:00:02,033\n", "x.SRT:13: not an SRT block"),
    ],
)
def test_bad_srt_is_refused_naming_file_and_line(text: str, match: str) -> None:
    with pytest.raises(DroneVisionError, match=match):
        parse_srt(text, source="x.SRT")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (DJI.replace("rel_alt: 130.500", "rel_alt: 0.000"), r"x.SRT:7: altitude rel_alt = 0 m"),
        (DJI.replace("rel_alt: 120.500", "rel_alt: -2.5"), r"x.SRT:1: altitude rel_alt = -2.5 m"),
        (DJI.replace("[rel_alt: 130.500 abs_alt: 570.300]", ""), "x.SRT:7: no altitude"),
    ],
)
def test_missing_zero_or_negative_altitude_is_refused(text: str, match: str) -> None:
    with pytest.raises(DroneVisionError, match=match):
        altitude_track(parse_srt(text, source="x.SRT"), source="x.SRT")


@pytest.mark.parametrize(
    ("t", "want"),
    [(-1.0, 100.0), (0.5, 100.0), (1.0, 105.0), (1.5, 110.0), (3.5, 125.0), (5.5, 140.0), (99.0, 140.0)],
)
def test_altitude_at(t: float, want: float) -> None:
    track = [(0.0, 1.0, 100.0), (1.0, 2.0, 110.0), (5.0, 6.0, 140.0)]
    assert altitude_at(track, t) == pytest.approx(want)


# --- per video: sidecar, SRT, bad files ------------------------------------------------------------------------


def test_sidecar_gsd(tmp_path: Path) -> None:
    (tmp_path / "flight.gsd.json").write_text('{"gsd_m": 0.05}')
    scaler = GsdScaler.for_video(tmp_path / "flight.mp4", GsdSettings(train_m=0.1))
    assert scaler.factor(1920, 3.0) == 0.5
    assert scaler.summary() == {"source": "sidecar", "factor": 0.5, "clamped": False, "warning": None}


def test_sidecar_altitude_with_its_camera(tmp_path: Path) -> None:
    (tmp_path / "flight.gsd.json").write_text('{"altitude_m": 50, "focal_mm": 10, "sensor_width_mm": 10}')
    scaler = GsdScaler.for_video(tmp_path / "flight.mp4", GsdSettings(train_m=0.025))
    assert scaler.factor(1000) == pytest.approx(2.0)  # 0.05 m/px footage, 0.025 m/px training


def test_srt_track_recomputes_the_factor_only_when_the_altitude_moves(tmp_path: Path) -> None:
    (tmp_path / "DJI_0001.SRT").write_text(OLD_DJI)
    settings = GsdSettings(train_m=gsd_from_altitude(120.5, **CAMERA, image_width_px=1000), **CAMERA)
    scaler = GsdScaler.for_video(tmp_path / "DJI_0001.MP4", settings)
    assert scaler.source == "srt"
    assert scaler.factor(1000, 0.0) == pytest.approx(1.0)
    assert scaler.factor(1000, 0.55) == pytest.approx(1.0)  # 2.7 % lower: the factor is kept
    assert scaler.factor(1000, 2.0) == pytest.approx(0.5)  # half the altitude: objects twice as large
    assert scaler.summary()["factor"] == [0.5, 1.0]


def test_settings_off_read_no_file(tmp_path: Path) -> None:
    (tmp_path / "v.gsd.json").write_text("not json")
    assert GsdScaler.for_video(tmp_path / "v.mp4", GsdSettings()).summary() is None
    assert GsdScaler.for_video(tmp_path / "v.mp4", GsdSettings(train_m=0.1, sidecar=False)).factor(640) is None


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("v.gsd.json", '{\n  "gsd_m": 0.05,\n}', "v.gsd.json:3: not JSON"),
        ("v.gsd.json", '{\n  "altitude_m": 0,\n  "focal_mm": 8.8,\n  "sensor_width_mm": 13.2\n}', "v.gsd.json:2"),
        ("v.gsd.json", '{"gsd": 0.05}', "v.gsd.json:1: neither gsd_m nor altitude_m"),
        ("v.SRT", "garbage\n", "v.SRT:1: not an SRT block"),
        ("v.SRT", DJI.replace("rel_alt: 130.500", "rel_alt: -1.0"), "v.SRT:7: altitude rel_alt = -1 m"),
        ("v.SRT", DJI.replace("[rel_alt: 120.500 abs_alt: 560.300]", ""), "v.SRT:1: no altitude"),
    ],
)
def test_bad_file_is_one_warning_and_no_scaling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, text: str, where: str
) -> None:
    (tmp_path / name).write_text(text)
    with caplog.at_level(logging.WARNING):
        scaler = GsdScaler.for_video(tmp_path / "v.mp4", GsdSettings(train_m=0.1, value_m=0.05, **CAMERA))
        assert scaler.factor(1920, 0.0) is None  # not even the config's value: this video's own data is broken
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(tmp_path / where) in warnings[0] and "without GSD scaling" in warnings[0]
    summary = scaler.summary()
    assert summary is not None and summary["source"] is None and summary["factor"] is None
    assert str(tmp_path / where) in summary["warning"]


def test_srt_without_a_camera_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "v.SRT").write_text(DJI)
    with caplog.at_level(logging.WARNING):
        scaler = GsdScaler.for_video(tmp_path / "v.mp4", GsdSettings(train_m=0.1))
    assert scaler.factor(1920) is None and "focal_mm" in caplog.text and str(tmp_path / "v.SRT") in caplog.text


def test_parse_sidecar_refuses_non_objects() -> None:
    with pytest.raises(DroneVisionError, match="s.json:1: expected a JSON object"):
        parse_sidecar("[1, 2]", source="s.json")


# --- multi-scale mapping and merge -----------------------------------------------------------------------------


def test_boxes_found_at_two_scales_merge_into_one_in_original_pixels() -> None:
    # one object at (40, 20, 80, 60) in a 128x96 frame: at half size it is found at (20, 10, 40, 30)
    half = Detections(xyxy=[[20.2, 10.1, 40.1, 29.8]], class_id=[1], confidence=[0.7])
    full = Detections(xyxy=[[40, 20, 80, 60], [0, 0, 5, 5]], class_id=[1, 1], confidence=[0.8, 0.3])
    for merge in ("nms", "nmm"):
        det = merge_scales([half, full], [(0.5, 0.5), (1.0, 1.0)], (128, 96), merge=merge, match="iou")
        assert len(det) == 2
        assert np.allclose(det.xyxy[0], [40, 20, 80, 60], atol=0.5) and det.confidence[0] == 0.8
        assert det.class_id.tolist() == [1, 1]


def test_focus_ranks_the_boxes_of_the_surer_scale_first() -> None:
    # a frame from one altitude: at half size the model is sure of three cars; at full size it sees one doubtful
    # thing elsewhere, scored higher than the least sure car
    half = Detections(xyxy=[[0, 0, 8, 8], [20, 0, 28, 8], [40, 0, 48, 8]], class_id=[0] * 3, confidence=[0.9, 0.9, 0.5])
    full = Detections(xyxy=[[0, 60, 30, 90]], class_id=[0], confidence=[0.6])
    plain = merge_scales([half, full], [(0.5, 0.5), (1.0, 1.0)], (128, 96))
    focused = merge_scales([half, full], [(0.5, 0.5), (1.0, 1.0)], (128, 96), focus=2.0)
    assert plain.confidence.tolist() == pytest.approx([0.9, 0.9, 0.6, 0.5])  # the doubtful box ranks third
    # weight (0.6 / mean(0.9, 0.9, 0.5)) ** 2 = 0.58: it now ranks last; the sure scale's confidences are kept
    assert focused.confidence.tolist() == pytest.approx([0.9, 0.9, 0.5, 0.6 * (0.6 / (2.3 / 3)) ** 2])
    assert focused.xyxy[-1].tolist() == [0, 60, 30, 90]


def test_size_weighting_keeps_the_box_of_the_scale_where_the_car_looks_as_in_training() -> None:
    # a 48 px car (3x the training's 16 px): at full size the model finds it too small and surer (0.8), at a third
    # of the size it finds it whole (0.6); NMS alone keeps the wrong one, the size weighting the right one
    full = Detections(xyxy=[[10, 10, 44, 44]], class_id=[0], confidence=[0.8])  # 34 px in its view: too large
    third = Detections(xyxy=[[2, 2, 18, 18]], class_id=[0], confidence=[0.6])  # 16 px in its view
    factors = [(1.0, 1.0), (1 / 3, 1 / 3)]
    plain = merge_scales([full, third], factors, (96, 96), match="ios")
    weighted = merge_scales([full, third], factors, (96, 96), match="ios", box_px=16)
    assert len(plain) == 1 and plain.xyxy[0].tolist() == [10, 10, 44, 44]
    assert len(weighted) == 1 and np.allclose(weighted.xyxy[0], [6, 6, 54, 54]) and weighted.confidence[0] == 0.6


@pytest.mark.parametrize(
    ("xyxy", "factor", "want"),
    [
        ([[10, 10, 20, 30]], (2.0, 2.0), [[5, 5, 10, 15]]),
        ([[10, 10, 40, 30]], (0.5, 0.5), [[20, 20, 64, 48]]),  # clipped to the 64x48 original
        ([[0, 0, 33, 24]], (33 / 64, 0.5), [[0, 0, 64, 48]]),  # rounding: the ratio of the sizes, per axis
    ],
)
def test_unscale_detections(xyxy: list, factor: tuple, want: list) -> None:
    det = Detections(xyxy=xyxy, class_id=[0] * len(xyxy), confidence=[0.5] * len(xyxy))
    assert np.allclose(unscale_detections(det, factor, (64, 48)).xyxy, want)


def test_unscale_no_boxes() -> None:
    empty = Detections.empty(with_confidence=True)
    assert len(merge_scales([empty, empty], [(0.5, 0.5), (1.0, 1.0)], (64, 48))) == 0
    assert scaled_size((1920, 1080), 0.25) == (480, 270)


def _scene(wh: tuple[int, int] = (128, 96)) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((wh[1], wh[0], 3), 90, np.uint8)
    for x, y, w, h in ((10, 12, 30, 20), (60, 40, 40, 30), (20, 60, 16, 16)):
        image[y : y + h, x : x + w] = rng.integers(150, 255, 3, dtype=np.uint8)
    return image


class SizedBlobDetector(Detector):
    """Finds white squares 8-24 px wide as its 64x64 input shows them (letterboxed, as a model's): a model trained
    at one altitude. Boxes come back in the pixels of the image it was given."""

    names, runtime, threads = {0: "blob"}, "fake", 1

    @property
    def input_hw(self) -> tuple[int, int]:
        return 64, 64

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        import cv2

        out = []
        for image in images_bgr:
            h, w = image.shape[:2]
            r = min(64 / h, 64 / w)
            n, _, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 200).astype(np.uint8))
            boxes = [[x, y, x + bw, y + bh] for x, y, bw, bh, _ in stats[1:n].tolist() if 8 <= bw * r <= 24]
            xyxy = np.array(boxes, float).reshape(-1, 4)
            out.append(Detections(xyxy=xyxy, class_id=np.zeros(len(xyxy)), confidence=np.full(len(xyxy), 0.9)))
        return out


def _squares(wh: tuple[int, int], *boxes: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((wh[1], wh[0], 3), np.uint8)
    for x, y, side in boxes:
        image[y : y + side, x : x + side] = 255
    return image


def test_smaller_scales_find_objects_seen_from_lower_down() -> None:
    # a 48 px square in a frame the model's size: 3x the size it knows (a 3x zoom), missed at the model's own view
    image, want = _squares((64, 64), (8, 10, 48)), [8, 10, 56, 58]
    detector = SizedBlobDetector()
    assert len(scaled_predict(detector, [image], SliceSettings(scales=(1.0,)))[0]) == 0
    # a third of the size, padded (not enlarged back by the letterbox): found, in the frame's own pixels
    [det] = scaled_predict(detector, [image], SliceSettings(scales=(1 / 3, 0.5, 1.0), merge="nms", match="iou"))
    assert len(det) == 1 and np.allclose(det.xyxy[0], want, atol=3.5)
    # the same from a known GSD (footage 0.1 m/px, training 0.3 m/px): factor 1/3, no scales asked
    gsd = SliceSettings(gsd=GsdSettings(train_m=0.3, value_m=0.1))
    [det] = list(predict_images(detector, [image], settings=gsd))
    assert len(det) == 1 and np.allclose(det.xyxy[0], want, atol=3.5)


def test_larger_scales_find_objects_seen_from_higher_up_in_tiles() -> None:
    # 128x128 frames: the letterbox halves them; a 10 px square (5 px to the model) is missed, a 32 px one found
    image = _squares((128, 128), (20, 30, 10), (80, 70, 32))
    detector = SizedBlobDetector()
    [plain] = scaled_predict(detector, [image], SliceSettings(scales=(1.0,)))
    assert plain.xyxy.tolist() == [[80, 70, 112, 102]]
    # at 2x the frame is 128x128 to the model: too large for its 64x64 input, so it is seen in 64 px tiles
    [det] = scaled_predict(detector, [image], SliceSettings(scales=(1.0, 2.0), merge="nms", match="iou"))
    assert sorted(det.xyxy.round().tolist()) == [[20, 30, 30, 40], [80, 70, 112, 102]]


class HaloBlobDetector(SizedBlobDetector):
    """Also reports, at confidence 0.01, one box around each whole input: the weak boxes a model gives at
    evaluate's conf 0.001."""

    def _predict_batch(self, images_bgr: list[np.ndarray]) -> list[Detections]:
        out = []
        for image, det in zip(images_bgr, super()._predict_batch(images_bgr)):
            h, w = image.shape[:2]
            halo = Detections(xyxy=np.array([[0.0, 0.0, w, h]]), class_id=np.zeros(1), confidence=np.array([0.01]))
            out.append(Detections.merge([det, halo]))
        return out


def test_tiles_of_a_frame_larger_than_the_input_merge_by_nms_whatever_the_group_says() -> None:
    # SAHI's NMM (SliceSettings' default) would unite the square with the weak box around its tile
    image = _squares((64, 64), (20, 30, 6))
    settings = SliceSettings(gsd=GsdSettings(train_m=1.0, value_m=2.0))  # seen from twice as high: enlarged 2x
    assert (settings.merge, settings.match) == ("nmm", "ios")  # SliceSettings' own defaults are SAHI's
    [det] = scaled_predict(HaloBlobDetector(), [image], settings, factors=2.0)
    assert [20, 30, 26, 36] in det.xyxy.round().tolist()


@pytest.mark.parametrize("config", ["evaluate", "track", "sample"])
def test_slicing_altitude_preset(config: str) -> None:
    from tests.conftest import compose_config

    settings = SliceSettings.from_config(compose_config(config, "slicing=altitude").slicing)
    assert settings.scales == (0.333, 0.5, 1.0) and settings.scales_focus == 0.5 and settings.scaling
    assert settings.scales_box_sigma == 0.4 and settings.scales_box_px is None  # the model's own
    assert (settings.merge, settings.match, settings.enabled) == ("nms", "iou", False)
    with pytest.raises(DroneVisionError, match="scales_focus must be a number >= 0"):
        SliceSettings(scales_focus=-1)


@pytest.mark.parametrize("config", ["evaluate", "compare", "track", "sample"])
def test_every_stage_merges_tiles_by_nms_unless_nmm_is_asked_for(config: str) -> None:
    from tests.conftest import compose_config

    settings = SliceSettings.from_config(compose_config(config).slicing)
    assert (settings.merge, settings.match) == ("nms", "iou")
    assert (settings.tile, settings.overlap, settings.full_frame, settings.enabled) == (640, 0.2, True, False)
    nmm = SliceSettings.from_config(compose_config(config, "slicing.merge=nmm", "slicing.match=ios").slicing)
    assert (nmm.merge, nmm.match) == ("nmm", "ios")
    # sliced, with a weak box around each tile: NMS keeps the square, NMM unites it with its tile's weak box
    image, square = _squares((128, 128), (20, 30, 10)), [20, 30, 30, 40]
    for asked, kept in ((settings, True), (nmm, False)):
        sliced = replace(asked, enabled=True, tile=64, full_frame=False)
        [det] = scaled_predict(HaloBlobDetector(), [image], sliced, factors=1.0)
        assert (square in det.xyxy.round().tolist()) is kept


def test_pad_and_view_arithmetic() -> None:
    padded = pad_to(np.full((10, 20, 3), 7, np.uint8), (16, 16))
    assert padded.shape == (16, 20, 3) and (padded[:10] == 7).all() and (padded[10:] == 114).all()
    assert view_factor((1920, 1080), None, (640, 640), sliced=False) == pytest.approx(1 / 3)
    assert view_factor((1920, 1080), None, (640, 640), sliced=True) == 1.0
    assert view_factor((1920, 1080), 0.25, (640, 640), sliced=False) == 0.25


@pytest.mark.slow
def test_multiscale_runs_a_real_model_in_original_pixels(tiny_weights: Path) -> None:
    import cv2

    from dronevision.infer import load_detector

    image = _scene()
    detector = load_detector(tiny_weights, imgsz=32, conf=0.001, device="cpu")
    assert detector.input_hw == (32, 32)
    plain = detector.predict([image])[0]
    # one scale of 1.0: exactly the plain path
    [one] = scaled_predict(detector, [image], SliceSettings(scales=(1.0,)))
    assert np.allclose(one.xyxy, plain.xyxy) and np.allclose(one.confidence, plain.confidence)
    # half the model's view (128x96 -> 32x24 -> 16x12), padded to its 32x32 input: those boxes, in image pixels
    small = pad_to(cv2.resize(image, (16, 12), interpolation=cv2.INTER_AREA), (32, 32))
    want = unscale_detections(detector.predict([small])[0], (16 / 128, 12 / 96), (128, 96))
    [half] = scaled_predict(detector, [image], SliceSettings(scales=(0.5,)))
    assert len(half) > 0 and np.allclose(half.xyxy, want.xyxy) and np.allclose(half.confidence, want.confidence)
    # both, through the loop evaluate, pre-labelling and track share; a GSD factor of 2 from the config as well
    for settings in (
        SliceSettings(scales=(0.5, 1.0), merge="nms", match="iou"),
        SliceSettings(scales=(0.5, 1.0), gsd=GsdSettings(train_m=0.1, value_m=0.2)),
        SliceSettings(enabled=True, tile=64, scales=(0.5, 1.0)),
    ):
        dets = list(predict_images(detector, [image, image], settings=settings))
        assert len(dets) == 2 and len(dets[0]) > 0
        for det in dets:
            assert (det.xyxy >= 0).all() and (det.xyxy[:, 2] <= 128).all() and (det.xyxy[:, 3] <= 96).all()
        assert np.allclose(dets[0].xyxy, dets[1].xyxy)


@pytest.mark.slow
def test_track_records_the_gsd_of_each_video(tiny_weights: Path, tmp_path: Path) -> None:
    from dronevision.synth.flyover import render_flyover
    from dronevision.track import run
    from tests.conftest import REPO, compose_config

    flights = tmp_path / "flights"
    for name, seed in (("good", 1), ("bad", 2)):
        render_flyover(
            flights, dataset_dir=REPO / "data" / "samples" / "aerial-cars", n_frames=6, fps=10, name=name,
            seed=seed, frame_wh=(160, 96),
        )  # fmt: skip
    (flights / "good.gsd.json").write_text('{"gsd_m": 0.05}')
    (flights / "bad.SRT").write_text(DJI.replace("rel_alt: 120.500", "rel_alt: 0.0"))
    cfg = compose_config(
        "track",
        f"weights={tiny_weights}",
        f"input={flights}",
        f"out_dir={tmp_path / 'out'}",
        "mlflow.tracking_uri=null",
        "detector.threads=1",
        "detector.imgsz=32",
        "detector.device=cpu",
        "detector.runtime=torch",
        "video.enabled=false",
        "slicing.gsd.train_m=0.1",
        "slicing.gsd.focal_mm=8.8",
        "slicing.gsd.sensor_width_mm=13.2",
        "slicing.scales=[1.0,1.5]",
    )
    summary = run(cfg)
    per_video = {v["video_id"]: v for v in summary["per_video"]}
    assert summary["failed_videos"] == 0 and per_video["good"]["frames_processed"] == 6
    assert per_video["good"]["gsd"] == {"source": "sidecar", "factor": 0.5, "clamped": False, "warning": None}
    bad = per_video["bad"]["gsd"]
    assert bad["source"] is None and bad["factor"] is None and f"{flights / 'bad.SRT'}:1:" in bad["warning"]
