"""``python -m dronevision.augment preview|materialize|list ...``: look at a policy, or bake it into a dataset.

Tests call :func:`run`; :func:`main` is the Hydra entry point (``configs/augment_cmd.yaml``). Hydra takes only
``key=value`` arguments, so a leading ``preview`` / ``materialize`` / ``list`` word becomes ``action=<word>``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dronevision.augment.policy import Policy, load_policy, transform_catalogue
from dronevision.cli import hydra_main, write_summary
from dronevision.dataset import YoloDataset, load_yolo_dataset
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)

ACTIONS = ("preview", "materialize", "list")
COMMAND_KEYS = ("materialize",)  # keys of the command's `augment` node that are not part of the policy


def rewrite_action(overrides: list[str]) -> list[str]:
    """Turn a leading action word into ``action=<word>``; refuse any other bare word in one line.

    Examples:
        >>> rewrite_action(["preview", "augment=aerial"])
        ['action=preview', 'augment=aerial']
        >>> rewrite_action(["n=4"])
        ['n=4']
        >>> rewrite_action(["previw"])
        Traceback (most recent call last):
        ...
        dronevision.errors.DroneVisionError: unknown action 'previw'; valid: preview, materialize, list
    """
    if overrides and "=" not in overrides[0] and not overrides[0].startswith("-"):
        if overrides[0] not in ACTIONS:
            raise DroneVisionError(f"unknown action '{overrides[0]}'; valid: {', '.join(ACTIONS)}")
        return [f"action={overrides[0]}", *overrides[1:]]
    return list(overrides)


def policy_config(augment: Mapping[str, Any] | DictConfig) -> dict[str, Any]:
    """The policy part of the command's ``augment`` node (without the command's own keys).

    Examples:
        >>> policy_config({"name": "none", "transforms": [], "materialize": 2})
        {'name': 'none', 'transforms': []}
    """
    raw = OmegaConf.to_container(augment, resolve=True) if isinstance(augment, DictConfig) else dict(augment)
    return {k: v for k, v in raw.items() if k not in COMMAND_KEYS}


def _check_common(cfg: DictConfig) -> tuple[Policy, YoloDataset, Path]:
    """Everything both actions need, checked before anything is written."""
    imgsz = cfg.get("imgsz")
    if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 1):
        raise DroneVisionError(f"imgsz={imgsz} must be a positive integer (or null)")
    policy = load_policy(policy_config(cfg.augment), imgsz=imgsz)
    dataset = load_yolo_dataset(cfg.dataset.path)
    return policy, dataset, Path(str(cfg.out_dir)).expanduser().resolve()


def _preview(cfg: DictConfig, started: float) -> dict[str, Any]:
    from dronevision.augment.preview import write_preview

    policy, dataset, out_dir = _check_common(cfg)
    n = int(cfg.n)
    grid = out_dir / "preview.png"
    samples = write_preview(policy, dataset, grid, n=n, split=str(cfg.split), seed=int(cfg.seed))
    summary = {
        "action": "preview",
        "policy": policy.name,
        "policy_config": policy.config,
        "dataset": str(dataset.yaml_path),
        "split": str(cfg.split),
        "n": n,
        "seed": int(cfg.seed),
        "images": [s["image"] for s in samples],
        "boxes_before": sum(s["boxes_before"] for s in samples),
        "boxes_after": sum(s["boxes_after"] for s in samples),
        "out_dir": str(out_dir),
        "grid": str(grid),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_summary(out_dir, summary)
    print(
        f"dronevision augment: preview of policy '{policy.name}', {n} images of the {cfg.split} split "
        f"({summary['boxes_before']} -> {summary['boxes_after']} boxes)\n  grid     {grid}"
    )
    return summary


def _materialize(cfg: DictConfig, started: float) -> dict[str, Any]:
    from dronevision.augment.materialize import materialize

    policy, dataset, out_dir = _check_common(cfg)
    copies = cfg.augment.get("materialize", 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise DroneVisionError(f"augment.materialize={copies}: the number of augmented copies must be at least 1")
    summary = materialize(
        policy,
        dataset,
        out_dir,
        copies=copies,
        seed=int(cfg.seed),
        overwrite=bool(cfg.overwrite),
        workers=int(cfg.workers or os.cpu_count() or 1),
    )
    n = summary["images"]
    print(
        f"dronevision augment: policy '{policy.name}' x{copies}: {sum(n.values())} images "
        f"({', '.join(f'{k} {v}' for k, v in n.items())}), {summary['negatives_made']} negatives made, "
        f"in {time.perf_counter() - started:.1f} s\n"
        f"  dataset  {out_dir}  (train with: python -m dronevision.train dataset.path={out_dir} augment=none)"
    )
    return summary


def _list() -> dict[str, Any]:
    valid, refused = transform_catalogue()
    kinds: dict[str, list[str]] = {}
    for name, kind in sorted(valid.items()):
        kinds.setdefault(kind, []).append(name)
    lines = [f"{kind} ({len(names)}): {', '.join(names)}" for kind, names in sorted(kinds.items())]
    lines.append(f"refused ({len(refused)}): {', '.join(sorted(refused))}")
    print("dronevision augment: transforms a policy may use (as _target_: albumentations.<Name>)\n" + "\n".join(lines))
    return {"action": "list", "valid": kinds, "refused": refused}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.action``: ``preview`` (PNG grid), ``materialize`` (augmented dataset) or ``list``; returns the
    summary (also written as summary.json in ``out_dir`` by preview and materialize).

    Raises:
        DroneVisionError: bad input, before anything is written.
    """
    started = time.perf_counter()
    action = str(cfg.action)
    if action == "preview":
        return _preview(cfg, started)
    if action == "materialize":
        return _materialize(cfg, started)
    if action == "list":
        return _list()
    raise DroneVisionError(f"unknown action '{action}'; valid: {', '.join(ACTIONS)}")


main = hydra_main("augment_cmd", run, rewrite_action)

if __name__ == "__main__":
    main()
