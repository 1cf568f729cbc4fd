"""The altitude zoom of the aerial and light_zoom policies (issue 16 item 2): the same vehicles 3x smaller or larger,
as often zoomed out as in, with small boxes kept valid."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from dronevision.augment import load_policy
from dronevision.augment.policy import augment_sample, build_compose
from dronevision.cli import CONFIG_DIR


def _policy(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "augment" / f"{name}.yaml"))


def _is_zoom(t: dict) -> bool:  # the altitude entry: a OneOf of two Affines
    return t["_target_"].endswith("OneOf") and {s["_target_"] for s in t["transforms"]} == {"albumentations.Affine"}


def _altitude_compose(seed: int, name: str = "aerial"):  # the policy's altitude entry alone, applied every time
    cfg = _policy(name)
    (entry,) = [t for t in cfg["transforms"] if _is_zoom(t)]
    policy = load_policy({**cfg, "transforms": [{**entry, "p": 1.0}]}, imgsz=416)
    return build_compose(policy.transforms, min_visibility=policy.min_visibility, min_area=policy.min_area, seed=seed)


@pytest.mark.parametrize("name", ["aerial", "light_zoom"])
def test_zoom_spans_three_times_either_way_and_keeps_the_aspect(name: str) -> None:
    compose = _altitude_compose(seed=0, name=name)  # one compose, called again and again: a new zoom each time
    image = np.full((416, 416, 3), 90, np.uint8)
    box = np.array([[200.0, 200.0, 230.0, 215.0]])  # 30x15 px, near the centre so zoom-in keeps it whole
    ratios = []
    for _ in range(200):
        _, out, _ = augment_sample(compose, image, box, np.array([0]))
        if len(out) and out[0, 0] > 0 and out[0, 2] < 416 and out[0, 1] > 0 and out[0, 3] < 416:  # whole boxes
            w, h = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
            assert abs(w / 30 - h / 15) < 0.02  # the same scale on both axes
            ratios.append(w / 30)
    ratios = np.array(ratios)
    assert ratios.min() < 0.4 and ratios.max() > 2.5  # about 1/3 .. 3
    zoomed_out = (ratios < 1).mean()
    assert 0.3 < zoomed_out < 0.8  # out about as often as in (whole boxes of zoom-ins leave the frame more often)


def test_a_small_vehicle_survives_zooming_out() -> None:
    """A 10x10 px vehicle at a third of its size is 3.3 px wide, 11 px^2: above min_area (4), so it stays. A 40x40
    px box beside it tells the scale each draw used."""
    compose = _altitude_compose(seed=1)
    image = np.full((416, 416, 3), 90, np.uint8)
    boxes = np.array([[180.0, 200.0, 190.0, 210.0], [200.0, 200.0, 240.0, 240.0]])
    strong = 0
    for _ in range(200):
        _, out, ids = augment_sample(compose, image, boxes, np.array([0, 1]))
        reference = out[ids == 1]
        if len(reference) and (reference[0, 2] - reference[0, 0]) / 40 < 0.4:
            strong += 1
            small = out[ids == 0]
            assert len(small) == 1 and 0 < small[0, 2] - small[0, 0] < 4
    assert strong > 5


def test_light_zoom_is_light_plus_the_aerial_zoom_less_often() -> None:
    light, light_zoom, aerial = _policy("light"), _policy("light_zoom"), _policy("aerial")
    assert [t for t in light_zoom["transforms"] if not _is_zoom(t)] == light["transforms"]
    (zoom,) = [t for t in light_zoom["transforms"] if _is_zoom(t)]
    (aerial_zoom,) = [t for t in aerial["transforms"] if _is_zoom(t)]
    assert zoom["transforms"] == aerial_zoom["transforms"] and zoom["p"] == 0.3 < aerial_zoom["p"]
    assert (light_zoom["min_visibility"], light_zoom["min_area"]) == (aerial["min_visibility"], aerial["min_area"])
