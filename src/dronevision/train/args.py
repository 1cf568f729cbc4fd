"""From config to ultralytics: check the ``train`` group, resolve the model, rewrite command-line overrides."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dronevision.errors import DroneVisionError, first_line

# ultralytics train() arguments that dronevision sets itself, from dataset/model/augment/out_dir.
OWNED_ARGS = frozenset({"data", "model", "project", "name", "exist_ok", "pretrained", "mode", "task", "augmentations"})
FAMILIES = ("yolo", "rtdetr")


@dataclass(frozen=True)
class ModelSpec:
    """What to train: an ultralytics architecture YAML, optional local weights, and the model family.

    ``pruned``: ``weights`` is a pruned checkpoint, trained as it is (its channels differ from ``arch``'s).
    """

    arch: str
    weights: Path | None = None
    family: str = "yolo"
    pruned: bool = False


def ultralytics_train_args(train: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """The ``train`` config group as ultralytics ``train()`` arguments, unchanged, after checking each key.

    Args:
        train: the ``train`` group.
        known: ultralytics' default arguments (``ultralytics.cfg.DEFAULT_CFG_DICT``).

    Examples:
        >>> ultralytics_train_args({"epochs": 1, "imgsz": 64}, {"epochs": 100, "imgsz": 640, "data": None})
        {'epochs': 1, 'imgsz': 64}
        >>> ultralytics_train_args({"epoch": 1}, {"epochs": 100})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: train.epoch is not an ultralytics train argument (did you mean ...
    """
    args = dict(train)
    for key in args:
        if key in OWNED_ARGS:
            raise DroneVisionError(
                f"train.{key} is set by dronevision: use dataset.path, model, augment or out_dir instead"
            )
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean train.{close[0]}?)" if close else ""
            raise DroneVisionError(f"train.{key} is not an ultralytics train argument{hint}")
    return args


def train_overrides(overrides: list[str], known: Mapping[str, Any]) -> list[str]:
    """Let ``train.<arg>=v`` set any ultralytics train argument, listed in train/default.yaml or not.

    Examples:
        >>> train_overrides(["train.mixup=0.1", "model=yolo11n", "+train.epochs=2"], {"mixup": 0.0, "epochs": 100})
        ['++train.mixup=0.1', 'model=yolo11n', '+train.epochs=2']
    """
    rewritten = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        if sep and key.startswith("train.") and key.count(".") == 1:
            ultralytics_train_args({key.removeprefix("train."): None}, known)  # one-line error for a typo
            override = f"++{override}"
        rewritten.append(override)
    return rewritten


def check_resume_settings(train: Mapping[str, Any]) -> None:
    """``train.resume`` is a switch here: dronevision finds ``last.pt`` in ``out_dir`` itself.

    Examples:
        >>> check_resume_settings({"resume": True})
        >>> check_resume_settings({"resume": "runs/x/last.pt"})
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: train.resume must be true or false (got 'runs/x/last.pt'); ...
    """
    resume = train.get("resume", False)
    if not isinstance(resume, bool):
        raise DroneVisionError(
            f"train.resume must be true or false (got {resume!r}); "
            "resume a run with out_dir=<its folder> train.resume=true"
        )


def resolve_model(model: DictConfig) -> ModelSpec:
    """The architecture YAML, the optional local weights to start from, and the family; never a download."""
    from ultralytics.nn.tasks import yaml_model_load

    family = model.get("family", "yolo")
    if family not in FAMILIES:
        raise DroneVisionError(f"model.family {family!r} is not one of {', '.join(FAMILIES)}")
    weights = Path(model.weights).expanduser().resolve() if model.get("weights") else None
    if weights is not None and (not weights.is_file() or weights.suffix != ".pt"):
        raise DroneVisionError(f"model.weights {weights} does not exist or is not a .pt file")
    try:
        yaml_model_load(str(model.cfg))  # resolves 'yolov8n.yaml' to yolov8.yaml at scale n, as YOLO() does
    except FileNotFoundError:
        raise DroneVisionError(f"model.cfg {model.cfg}: no such ultralytics model YAML") from None
    return ModelSpec(str(model.cfg), weights, family)


def ultralytics_defaults() -> dict[str, Any]:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {f"train.{k}": v for k, v in DEFAULT_CFG_DICT.items()}


def ultralytics_check(key: str, value: Any) -> str | None:
    """ultralytics' own type and range rules for a ``train.<arg>`` value (its check runs only after a run began)."""
    from ultralytics.cfg import check_cfg

    name = key.removeprefix("train.")
    if name == "resume":
        return None  # dronevision's switch: checked by check_resume_settings
    try:
        check_cfg({name: value}, hard=True)
    except (TypeError, ValueError) as e:  # "'epochs=abc' is of invalid type str. 'epochs' must be an int ..."
        reason = re.sub(r"^'[^']*'\s*", "", first_line(e))
        return f"{key}={value!r}: {reason}"
    return None
