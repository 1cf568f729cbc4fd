"""Check a command's overrides before anything runs: types, ranges, required values and unknown keys.

Hydra takes ``train.epochs=abc`` and ``+trian.epochs=5`` without a word; the first fails minutes later in a
traceback, after an MLflow run and an output folder were made, and the second is silently ignored. The configs
carry no schema, so the defaults are the schema: an override must have the type of the value it replaces (an
integer for an integer, a number for a float, true/false for a switch), a few well-known names have ranges, a
``???`` left in the config is a value the command needs, and a key that is in no config is a typo, ``+`` or not.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dronevision.errors import DroneVisionError, first_line

# integer settings that count things (a seconds value or a threshold that defaults to a whole number takes 1.5)
_COUNT = re.compile(
    r"(^|\.)(epochs|imgsz|max_det|batch|batch_size|n_frames|calibration_images|workers|seed|patience|every_n|"
    r"min_frames|copies|retries|threads|tile|streams|opset|region_grid)$"
)
# flags that pick another config (the check would compose the wrong one): Hydra checks those command lines itself
_OTHER_CONFIG = {"-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir"}
_FLAGS_WITHOUT_RUN = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version", "--shell-completion"}
_ABSENT = object()

# (name pattern, lowest, highest, what it is): a value outside is refused; None: no bound on that side
RANGES: tuple[tuple[str, float | None, float | None, str], ...] = (
    (r"(^|\.)(val_fraction|test_fraction)$", 0, 1, "a fraction of the images, 0..1"),
    (r"^train\.fraction$", 0, 1, "a fraction of the training set, 0..1"),
    (r"(^|\.)(conf|iou|min_conf|min_visibility|max_map_drop)$", 0, 1, "in 0..1"),
    (r"(^|\.)(epochs|imgsz|max_det|batch_size|n_frames|calibration_images)$", 1, None, "at least 1"),
    (r"(^|\.)(workers|seed|patience|every_n|min_frames|copies)$", 0, None, "at least 0"),
    (r"(^|\.)(threads)$", 1, None, "at least 1 (null: all cores)"),
    (r"(^|\.)(timeout_s|every_s|min_seconds|start_s|end_s)$", 0, None, "seconds, at least 0"),
)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, ListConfig)):
        return "a list"
    if isinstance(value, (dict, DictConfig)):
        return "a mapping"
    return "a string"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_problem(key: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` at ``key``; None when it can.

    Examples:
        >>> type_problem("train.epochs", "abc", 100)
        "train.epochs='abc': expected an integer (the default is 100)"
        >>> type_problem("train.epochs", 5, 100), type_problem("train.lr0", 1, 0.01), type_problem("x", None, 3)
        (None, None, None)
        >>> type_problem("train.imgsz", [640, 384], 640), type_problem("protocol", "coco", ["coco", "visdrone"])
        (None, None)
        >>> type_problem("start_s", 1.5, 0), type_problem("train.epochs", 2.5, 100)  # a count stays whole
        (None, 'train.epochs=2.5: expected an integer (the default is 100)')
        >>> type_problem("train.cache", "yes", False)
        "train.cache='yes': expected true or false (the default is False)"
    """
    if value is None or default is None or (isinstance(value, str) and "${" in value):
        return None  # null is how a setting is switched off; an interpolation is resolved later
    wanted = None
    if isinstance(default, bool):
        wanted = None if isinstance(value, bool) else "true or false"
    elif _numeric(default):
        if isinstance(value, (list, ListConfig)) and key.endswith("imgsz"):
            wanted = None if all(_numeric(v) for v in value) else "an integer or a list of integers"
        elif isinstance(value, str):
            try:
                float(value)
            except ValueError:
                wanted = _type_name(default)
        elif not _numeric(value) or (
            isinstance(default, int) and isinstance(value, float) and not value.is_integer() and _COUNT.search(key)
        ):
            wanted = _type_name(default)
    elif isinstance(default, (dict, DictConfig)):
        wanted = None if isinstance(value, (dict, DictConfig)) else "a mapping"
    elif isinstance(default, str) and isinstance(value, (list, dict, ListConfig, DictConfig)):
        wanted = "a string"
    if wanted is None:
        return None
    return f"{key}={value!r}: expected {wanted} (the default is {default!r})"


def range_problem(key: str, value: Any) -> str | None:
    """Why a number is out of the range its name implies (see :data:`RANGES`); None when it is in it.

    Examples:
        >>> range_problem("split.val_fraction", 1.5)
        'split.val_fraction=1.5: expected a fraction of the images, 0..1'
        >>> range_problem("train.epochs", 0), range_problem("train.epochs", 3), range_problem("train.batch", -1)
        ('train.epochs=0: expected at least 1', None, None)
    """
    if not _numeric(value):
        return None
    if isinstance(value, float) and math.isnan(value):
        return f"{key}=nan: expected a number"
    for pattern, low, high, what in RANGES:
        if re.search(pattern, key):
            if (low is not None and value < low) or (high is not None and value > high):
                return f"{key}={value!r}: expected {what}"
            return None
    return None


def _all_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(cfg, DictConfig):
        for k in cfg:
            name = f"{prefix}{k}"
            keys.append(name)
            node = cfg._get_node(k)
            if isinstance(node, DictConfig):
                keys += _all_keys(node, f"{name}.")
    return keys


def _lookup(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted ``key`` (None for a ``???`` one: no type to check), or ``_ABSENT`` without such a key.

    Examples:
        >>> cfg = OmegaConf.create({"dataset": {"path": "???", "split": "val"}})
        >>> _lookup(cfg, "dataset.path"), _lookup(cfg, "dataset.split"), _lookup(cfg, "dataset.name") is _ABSENT
        (None, 'val', True)
    """
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in list(node.keys()):  # `in` is False for a ??? value
            return _ABSENT
        child = node._get_node(part)
        if child._is_missing():
            return None
        node = node[part]
    return node


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def _values(override: Any) -> list[Any]:
    """The value(s) an override sets: one, or each of a sweep's choices (ranges and globs are not checked)."""
    if not override.is_sweep_override():
        return [override.value()]
    choices = getattr(override.value(), "list", None)
    return list(choices) if choices is not None else []


def check_overrides(
    config_name: str,
    overrides: Sequence[str],
    *,
    config_dir: Path,
    may_be_missing: Collection[str] = (),
    extra_defaults: Mapping[str, Any] | None = None,
    validators: Mapping[str, Callable[[str, Any], str | None]] | None = None,
) -> DictConfig | None:
    """Compose ``config_name`` with ``overrides`` as Hydra will, refusing what would fail or be ignored later.

    Args:
        config_name: the command's primary config (``train``, ``evaluate``, ...).
        overrides: the command line, as the user typed it.
        config_dir: the configs/ folder.
        may_be_missing: ``???`` keys the command fills in itself when not given (evaluate's ``dataset.path``).
        extra_defaults: keys that are not in the config but that the command accepts, with the defaults that give
            their types (train's ``train.<any ultralytics argument>``).
        validators: ``{prefix: check}``: keys under ``prefix`` are checked by ``check(key, value)`` (a problem or
            None) instead of by their defaults' types (ultralytics' own rules for ``train.*``: ``cache`` takes
            ``ram``, ``batch`` a fraction).

    Returns:
        The composed config (not resolved), or None for a command line that runs nothing (``--help``, ``--cfg``).

    Raises:
        DroneVisionError: one line naming the key, the value and what is expected.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    args = [a for a in overrides if not a.startswith("-")]
    if any(a.split("=")[0] in _FLAGS_WITHOUT_RUN | _OTHER_CONFIG for a in overrides if a.startswith("-")):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise DroneVisionError(f"cannot read the command line: {first_line(e)}") from None
    from dronevision.cli import config_groups

    groups = config_groups(config_name, config_dir)

    def is_choice(o: Any) -> bool:  # a group=option override, or Hydra's own settings
        key = o.key_or_group.split("@")[0]
        return ("." not in key and key in groups) or key.startswith("hydra")

    def line(o: Any) -> str:  # a sweep composes with its first choice
        return o.input_line if not o.is_sweep_override() else f"{o.input_line.partition('=')[0]}={_values(o)[0]}"

    usable = [o for o in parsed if not o.is_sweep_override() or _values(o)]
    first = [line(o) for o in usable]
    choices = [line(o) for o in usable if is_choice(o)]
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            defaults = compose(config_name, overrides=choices)
            known = _all_keys(defaults)
            extra = dict(extra_defaults or {})
            for o in parsed:
                key = o.key_or_group
                if o.is_delete() or is_choice(o):
                    continue
                default = _lookup(defaults, key)
                if default is _ABSENT:
                    default = extra.get(key, _ABSENT)
                if default is _ABSENT:
                    raise DroneVisionError(
                        f"unknown key {key} in the {config_name} config{_suggest(key, [*known, *extra])}"
                    )
                if OmegaConf.is_config(default):
                    default = OmegaConf.to_container(default)
                check = next((fn for prefix, fn in (validators or {}).items() if key.startswith(prefix)), None)
                for value in _values(o):
                    problem = check(key, value) if check else type_problem(key, value, default)
                    problem = problem or range_problem(key, value)
                    if problem:
                        raise DroneVisionError(problem)
            cfg = compose(config_name, overrides=first)
    except (HydraException, OmegaConfBaseException) as e:
        raise DroneVisionError(first_line(e)) from None
    except DroneVisionError:
        raise
    except Exception:  # noqa: BLE001 - a command line this check does not understand: Hydra will judge it
        return None
    missing = sorted(set(OmegaConf.missing_keys(cfg)) - set(may_be_missing))
    if missing:
        raise DroneVisionError(
            f"{missing[0]} is required: give {missing[0]}=<value>"
            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
        )
    return cfg


def out_dir_of(cfg: DictConfig) -> Path | None:
    """The run's output folder the config names, when it resolves outside a Hydra app (``${now:...}`` does)."""
    try:
        return Path(str(OmegaConf.select(cfg, "out_dir", throw_on_resolution_failure=True))).expanduser()
    except Exception:  # an interpolation that needs Hydra's runtime: Hydra will make the folder and say so
        return None
