"""Augmentation policies: a named list of albumentations transforms from ``configs/augment/<name>.yaml``.

The config is checked (transform names, arguments, probabilities, kernel and output sizes) before anything is
instantiated, so a typo is one line naming the transform and the valid choices. Boxes are pixel ``xyxy`` arrays
(albumentations' ``pascal_voc``); a box keeping less than ``min_visibility`` of its area after a transform, or
less than ``min_area`` square pixels, is dropped.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from dronevision.errors import DroneVisionError

if TYPE_CHECKING:
    import albumentations as A

POLICY_KEYS = ("name", "min_visibility", "min_area", "transforms")
LIST_COMMAND = "python -m dronevision.augment list"
COMPOSITIONS = ("OneOf", "SomeOf", "Sequential")
OWN_MODULE = "dronevision.augment.transforms"  # cheap pixel transforms of our own (Haze)

# Pixel transforms that cannot run inside a detector's training pipeline.
REFUSED_PIXEL = {
    "Normalize": "turns the image into floats; ultralytics normalises itself",
    "ToFloat": "turns the image into floats; ultralytics expects uint8",
    "FromFloat": "expects a float image; ultralytics passes uint8",
    "ToRGB": "expects a single-channel image",
    "TextImage": "needs text metadata per image",
    "FDA": "needs reference images per call",
    "HistogramMatching": "needs reference images per call",
    "PixelDistributionAdaptation": "needs reference images per call",
}
# Spatial transforms that albumentations accepts with boxes but that do not keep them exact or need extra inputs.
REFUSED_SPATIAL = {
    "ElasticTransform": "warps non-rigidly: boxes would only be approximated",
    "GridDistortion": "warps non-rigidly: boxes would only be approximated",
    "GridElasticDeform": "warps non-rigidly: boxes would only be approximated",
    "OpticalDistortion": "warps non-rigidly: boxes would only be approximated",
    "PiecewiseAffine": "warps non-rigidly: boxes would only be approximated",
    "ThinPlateSpline": "warps non-rigidly: boxes would only be approximated",
    "RandomGridShuffle": "shuffles tiles: objects are cut apart while their boxes are not",
    "Mosaic": "needs extra images as metadata (ultralytics has its own mosaic: train.mosaic)",
    "Lambda": "runs arbitrary code that cannot be written to a config or a checkpoint",
    "MaskDropout": "needs a mask",
    "CropNonEmptyMaskIfExists": "needs a mask",
    "ConstrainedCoarseDropout": "needs a mask",
    "RandomCropNearBBox": "needs a cropping_bbox input per image",
    "FrequencyMasking": "is for spectrograms",
    "TimeMasking": "is for spectrograms",
    "TimeReverse": "is for spectrograms",
}
ODD_KERNEL_KEYS = ("blur_limit",)  # kernel sizes: odd and at least 3 (0 = from sigma where the transform allows it)
ZERO_KERNEL_OK = frozenset({"GaussianBlur", "AdvancedBlur"})
SIZE_KEYS = ("height", "width", "size", "max_size", "min_max_height", "min_height", "min_width")


# --- the policy ------------------------------------------------------------------------------------------------


@dataclass
class Policy:
    """A validated, instantiated augmentation policy.

    Attributes:
        name: the policy's name (``configs/augment/<name>.yaml``).
        transforms: albumentations transforms, in order (what ultralytics' ``augmentations`` argument takes).
        min_visibility: a box keeping less than this fraction of its area after a transform is dropped.
        min_area: a box smaller than this many square pixels after a transform is dropped.
        config: the policy's config as given, for logging.
    """

    name: str
    transforms: list[Any]
    min_visibility: float = 0.0
    min_area: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def compose(self, *, seed: int | None = None) -> A.Compose:
        """An ``A.Compose`` over pixel ``xyxy`` boxes with their class ids (label field ``class_ids``)."""
        return build_compose(self.transforms, min_visibility=self.min_visibility, min_area=self.min_area, seed=seed)


def build_compose(
    transforms: Sequence[Any], *, min_visibility: float = 0.0, min_area: float = 0.0, seed: int | None = None
) -> A.Compose:
    """``A.Compose`` of ``transforms`` over ``pascal_voc`` (pixel xyxy) boxes, label field ``class_ids``."""
    import warnings

    import albumentations as A

    bbox_params = A.BboxParams(
        format="pascal_voc", label_fields=["class_ids"], min_visibility=min_visibility, min_area=min_area, clip=True
    )
    with warnings.catch_warnings():  # pixel-only policies: boxes pass through unchanged, which is what we want
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
        return A.Compose(list(transforms), bbox_params=bbox_params, seed=seed)


def augment_sample(
    compose: A.Compose, image: np.ndarray, boxes_xyxy: np.ndarray, class_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Augment one image and its pixel ``xyxy`` boxes; returns ``(image, boxes_xyxy, class_ids)`` after the policy.

    Boxes are clipped to the image first; a box with no area inside the image is dropped. Output boxes are rounded
    to 1/1000 pixel. ``class_ids`` can be any per-box integer labels (an ``arange`` gives the indices of the
    surviving boxes).

    Examples:
        >>> import albumentations as A
        >>> compose = build_compose([A.HorizontalFlip(p=1.0)])
        >>> image = np.zeros((10, 20, 3), np.uint8)
        >>> _, boxes, ids = augment_sample(compose, image, np.array([[0.0, 0, 5, 4]]), np.array([3]))
        >>> boxes.tolist(), ids.tolist()
        ([[15.0, 0.0, 20.0, 4.0]], [3])
    """
    h, w = image.shape[:2]
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    ids = np.asarray(class_ids).reshape(-1)
    if len(boxes) != len(ids):
        raise ValueError(f"{len(boxes)} boxes but {len(ids)} class ids")
    boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, ids = boxes[keep], ids[keep]
    out = compose(image=image, bboxes=boxes, class_ids=ids)
    # albumentations works on boxes normalised to 0..1 in float32: round its 1e-6 noise off (to 1/1000 px)
    new_boxes = np.round(np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4), 3).astype(np.float32)
    new_ids = np.asarray(out["class_ids"], dtype=ids.dtype).reshape(-1)
    return out["image"], new_boxes, new_ids


# --- which transforms are valid --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def transform_catalogue() -> tuple[dict[str, str], dict[str, str]]:
    """``(valid, refused)``: valid transform names -> kind (pixel / spatial / composition), refused -> reason."""
    import albumentations as A
    from albumentations.core.transforms_interface import DualTransform, ImageOnlyTransform

    from dronevision.augment import transforms as own

    valid: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name in dir(A):
        cls = getattr(A, name)
        if not inspect.isclass(cls) or name in ("ImageOnlyTransform", "DualTransform", "BasicTransform", "Transform3D"):
            continue
        if issubclass(cls, ImageOnlyTransform):
            if name in REFUSED_PIXEL:
                refused[name] = REFUSED_PIXEL[name]
            else:
                valid[name] = "pixel"
        elif issubclass(cls, DualTransform):
            declared = getattr(cls, "_targets", ())
            targets = declared if isinstance(declared, tuple) else (declared,)
            if name in REFUSED_SPATIAL:
                refused[name] = REFUSED_SPATIAL[name]
            elif any(getattr(t, "value", None) == "BBoxes" for t in targets):
                valid[name] = "spatial"
            else:
                refused[name] = "does not support bounding boxes"
    valid.update({name: "composition" for name in COMPOSITIONS})
    for name, cls in vars(own).items():
        if inspect.isclass(cls) and issubclass(cls, ImageOnlyTransform) and cls.__module__ == OWN_MODULE:
            valid[f"{OWN_MODULE}.{name}"] = "pixel"
    return valid, refused


def _resolve_target(target: Any, where: str) -> tuple[str, str]:
    """``(catalogue name, albumentations/own class path)`` of a ``_target_``, or a one-line error."""
    valid, refused = transform_catalogue()
    text = str(target)
    if text.startswith(f"{OWN_MODULE}."):
        name = text
    elif text.startswith("albumentations."):
        name = text.rsplit(".", 1)[-1]
    else:
        raise DroneVisionError(
            f"{where}: _target_ '{text}' is not an albumentations transform (write albumentations.<Name>;"
            f" all valid transforms: {LIST_COMMAND})"
        )
    if name in refused:
        raise DroneVisionError(f"{where}: albumentations.{name} is not allowed: it {refused[name]}")
    if name not in valid:
        close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise DroneVisionError(
            f"{where}: unknown transform '{text}'; {hint}{len(valid)} are valid (list them: {LIST_COMMAND})"
        )
    return name, name if name.startswith(OWN_MODULE) else f"albumentations.{name}"


def _class_of(path: str) -> type:
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _as_pair(value: Any) -> list[float] | None:
    """A scalar or a 2-sequence as a list of numbers, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str) and all(isinstance(v, (int, float)) for v in value):
        return list(value)
    return None


def check_transform(entry: Any, *, where: str, imgsz: int | None = None) -> None:
    """Check one transform entry of a policy (before instantiating it); raise one line on the first problem.

    Examples:
        >>> check_transform({"_target_": "albumentations.HorizontalFlip", "p": 0.5}, where="t[0]")
        >>> check_transform({"_target_": "albumentations.HorizontalFlip", "p": 1.5}, where="t[0]")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: t[0] (HorizontalFlip): p=1.5 is not a probability in [0, 1]
        >>> check_transform({"_target_": "albumentations.MotionBlur", "blur_limit": 4}, where="t[1]")
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: t[1] (MotionBlur): blur_limit 4 must be odd kernel sizes >= 3
    """
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        raise DroneVisionError(f"{where}: expected a mapping with _target_: albumentations.<Name>, got {entry!r}")
    name, path = _resolve_target(entry["_target_"], where)
    short = name.rsplit(".", 1)[-1]
    label = f"{where} ({short})"
    params = inspect.signature(_class_of(path).__init__).parameters
    accepted = [k for k, v in params.items() if k != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
    for key in entry:
        if key.startswith("_") and key != "_target_":
            continue  # Hydra's own keys (_args_, _convert_, ...)
        if key != "_target_" and key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DroneVisionError(
                f"{label}: '{key}' is not an argument of {short}{hint}; valid: {', '.join(accepted)}"
            )
    if "p" in entry:
        p = entry["p"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise DroneVisionError(f"{label}: p={p} is not a probability in [0, 1]")
    for key in ODD_KERNEL_KEYS:
        if key in entry:
            values = _as_pair(entry[key])
            ok = values is not None and all(
                (int(v) == v and v >= 3 and int(v) % 2 == 1) or (v == 0 and short in ZERO_KERNEL_OK) for v in values
            )
            if not ok or (values is not None and values != sorted(values)):
                raise DroneVisionError(f"{label}: {key} {entry[key]} must be odd kernel sizes >= 3")
    if short == "Downscale" and "scale_range" in entry:
        values = _as_pair(entry["scale_range"])
        if values is None or len(values) != 2 or not 0 < values[0] <= values[1] <= 1:
            raise DroneVisionError(f"{label}: scale_range {entry['scale_range']} must lie in (0, 1], low <= high")
    if imgsz is not None:
        for key in SIZE_KEYS:
            values = _as_pair(entry.get(key))
            if values and max(values) > imgsz:
                raise DroneVisionError(
                    f"{label}: {key}={entry[key]} is bigger than the training image size imgsz={imgsz}"
                )
    if short in COMPOSITIONS:
        children = entry.get("transforms")
        if not isinstance(children, Sequence) or isinstance(children, str) or not children:
            raise DroneVisionError(f"{label}: needs a non-empty list of transforms")
        for i, child in enumerate(children):
            check_transform(child, where=f"{where}.transforms[{i}]", imgsz=imgsz)


def check_policy_config(cfg: Mapping[str, Any], *, imgsz: int | None = None) -> None:
    """Check a policy's config: its keys, thresholds and every transform; one line on the first problem.

    Examples:
        >>> check_policy_config({"name": "p", "min_visibility": 0.3, "min_area": 4, "transforms": []})
        >>> check_policy_config({"name": "p", "min_visibility": 1.3, "transforms": []})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: augment.min_visibility=1.3 must be in [0, 1]
    """
    for key in cfg:
        if key not in POLICY_KEYS:
            close = difflib.get_close_matches(str(key), POLICY_KEYS, n=1)
            hint = f" (did you mean augment.{close[0]}?)" if close else ""
            raise DroneVisionError(f"augment.{key} is not a policy setting{hint}; valid: {', '.join(POLICY_KEYS)}")
    if not isinstance(cfg.get("name"), str) or not cfg["name"]:
        raise DroneVisionError("augment.name is required (the policy's name)")
    visibility = cfg.get("min_visibility", 0.0)
    if isinstance(visibility, bool) or not isinstance(visibility, (int, float)) or not 0 <= visibility <= 1:
        raise DroneVisionError(f"augment.min_visibility={visibility} must be in [0, 1]")
    area = cfg.get("min_area", 0.0)
    if isinstance(area, bool) or not isinstance(area, (int, float)) or area < 0:
        raise DroneVisionError(f"augment.min_area={area} must be a number of square pixels >= 0")
    transforms = cfg.get("transforms")
    if transforms is None:
        transforms = []
    if not isinstance(transforms, Sequence) or isinstance(transforms, str):
        raise DroneVisionError("augment.transforms must be a list of {_target_: albumentations.<Name>, ...}")
    for i, entry in enumerate(transforms):
        check_transform(entry, where=f"augment.transforms[{i}]", imgsz=imgsz)


def pydantic_reason(message: str) -> str:
    """One line out of albumentations' multi-line pydantic complaint: ``field: message; field: message``.

    Examples:
        >>> pydantic_reason(
        ...     "1 validation error for InitSchema\\nquality_range\\n  Value error, All values in (40, 190) must be"
        ...     " <= 100 [type=value_error, input_value=[40, 190]]\\n    For further information visit https://x"
        ... )
        'quality_range: Value error, All values in (40, 190) must be <= 100'
    """
    lines = message.strip().splitlines()
    if not lines or "validation error" not in lines[0]:
        return lines[-1].strip() if lines else ""
    problems, field_name = [], ""
    for line in lines[1:]:
        if not line.startswith(" "):
            field_name = line.strip()
        elif line.startswith("  ") and not line.startswith("   "):
            problems.append(f"{field_name}: {line.strip().split(' [type=')[0]}")
    return "; ".join(problems) or lines[-1].strip()


def _instantiate(entry: Mapping[str, Any], where: str) -> Any:
    """``hydra.utils.instantiate`` of one checked transform; albumentations' own complaint becomes one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(dict(entry), _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        failed = re.search(r"target '([\w.]+)'", str(e))  # the nested transform that failed, in a OneOf
        short = (failed.group(1) if failed else str(entry["_target_"])).rsplit(".", 1)[-1]
        raise DroneVisionError(f"{where} ({short}): {pydantic_reason(str(cause))}") from None


def load_policy(cfg: Mapping[str, Any] | Any, *, imgsz: int | None = None) -> Policy:
    """Validate a policy config (a mapping or the ``augment`` DictConfig), then instantiate its transforms.

    Args:
        cfg: ``name``, ``min_visibility``, ``min_area`` and ``transforms`` (``_target_`` entries).
        imgsz: the training image size, if known: crops and resizes larger than it are refused.

    Raises:
        DroneVisionError: on the first problem, in one line.

    Examples:
        >>> policy = load_policy({"name": "flip", "transforms": [{"_target_": "albumentations.HorizontalFlip"}]})
        >>> policy.name, [type(t).__name__ for t in policy.transforms], policy.min_visibility
        ('flip', ['HorizontalFlip'], 0.0)
    """
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    check_policy_config(raw, imgsz=imgsz)
    entries = raw.get("transforms") or []
    transforms = [_instantiate(e, f"augment.transforms[{i}]") for i, e in enumerate(entries)]
    return Policy(
        name=raw["name"],
        transforms=transforms,
        min_visibility=float(raw.get("min_visibility", 0.0)),
        min_area=float(raw.get("min_area", 0.0)),
        config=raw,
    )


def sample_seed(seed: int, index: int, copy: int) -> int:
    """A seed for one augmented copy that depends only on ``(seed, image index, copy)``, not on order or workers.

    Examples:
        >>> sample_seed(0, 0, 1) == sample_seed(0, 0, 1), sample_seed(0, 0, 1) == sample_seed(0, 1, 1)
        (True, False)
    """
    return int(np.random.SeedSequence([seed, index, copy]).generate_state(1)[0])
