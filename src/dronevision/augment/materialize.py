"""Write K augmented copies of a dataset's train split into a new YOLO dataset, for tools that cannot augment online.

The new folder holds data.yaml, ``train/`` (every original image, linked, plus its K copies with their labels),
``val/`` and ``test/`` (linked, unchanged), manifest.json (per image: its source, copy index and hashes; the policy;
counts; negatives made) and summary.json. It is written into a temporary sibling folder and renamed at the end, so
there is never a half-written dataset at ``out_dir``. Copy ``k`` of image ``i`` is drawn with
``sample_seed(seed, i, k)``: the output depends on the seed only, not on the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dronevision.augment.io import load_sample, read_rows, write_image
from dronevision.augment.policy import Policy, augment_sample, sample_seed
from dronevision.dataset.plan import to_yolo_lines
from dronevision.dataset.writer import link_or_copy, publish, sha256_file
from dronevision.dataset.yolo import YoloDataset, label_path
from dronevision.errors import DroneVisionError
from dronevision.fsio import make_temp_dir

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def unique_stems(images: Sequence[Path]) -> list[str]:
    """File stems for a split's images, made unique (``a``, ``a_1``, ...) where two folders share a name.

    Examples:
        >>> unique_stems([Path("x/a.jpg"), Path("y/a.jpg"), Path("y/b.png")])
        ['a', 'a_1', 'b']
    """
    seen: Counter[str] = Counter()
    taken: set[str] = set()
    stems = []
    for image in images:
        stem = image.stem
        while stem in taken:
            seen[image.stem] += 1
            stem = f"{image.stem}_{seen[image.stem]}"
        taken.add(stem)
        stems.append(stem)
    return stems


def copy_stem(stem: str, copy: int) -> str:
    """The file stem of augmented copy ``copy`` (1-based) of an image.

    Examples:
        >>> copy_stem("frame_0001", 2)
        'frame_0001_aug2'
    """
    return f"{stem}_aug{copy}"


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; set before the worker processes fork."""

    policy: Policy
    root: Path
    copies: int
    seed: int
    n_classes: int


_JOB: _Job | None = None


def _files(root: Path, split: str, stem: str, suffix: str) -> tuple[Path, Path]:
    return root / split / "images" / f"{stem}{suffix}", root / split / "labels" / f"{stem}.txt"


def _entry(root: Path, image: Path, label: Path, *, source: Path, split: str, copy: int, boxes: int) -> dict:
    return {
        "file": image.relative_to(root).as_posix(),
        "label": label.relative_to(root).as_posix(),
        "split": split,
        "source": str(source),
        "copy": copy,
        "boxes": boxes,
        "sha256": {"image": sha256_file(image), "label": sha256_file(label)},
    }


def _link_original(root: Path, split: str, image: Path, stem: str, n_boxes: int) -> dict[str, Any]:
    """Link an image and its label (an empty label where it has none) into the new dataset."""
    dst, dst_label = _files(root, split, stem, image.suffix.lower())
    link_or_copy(image, dst)
    label = label_path(image)
    if label.is_file():
        link_or_copy(label, dst_label)
    else:
        dst_label.parent.mkdir(parents=True, exist_ok=True)
        dst_label.write_text("")
    return _entry(root, dst, dst_label, source=image, split=split, copy=0, boxes=n_boxes)


def _augment_one(task: tuple[int, str, str]) -> list[dict[str, Any]]:
    """The original train image and its K augmented copies, written; their manifest entries. Runs in a worker."""
    assert _JOB is not None
    index, image_str, stem = task
    image = Path(image_str)
    rgb, xyxy, ids = load_sample(image, n_classes=_JOB.n_classes)
    entries = [_link_original(_JOB.root, "train", image, stem, len(xyxy))]
    compose = _JOB.policy.compose()
    suffix = image.suffix.lower()
    for copy in range(1, _JOB.copies + 1):
        compose.set_random_seed(sample_seed(_JOB.seed, index, copy))
        out, boxes, out_ids = augment_sample(compose, rgb, xyxy, ids)
        dst, dst_label = _files(_JOB.root, "train", copy_stem(stem, copy), suffix)
        write_image(dst, out)
        h, w = out.shape[:2]
        dst_label.parent.mkdir(parents=True, exist_ok=True)
        dst_label.write_text(to_yolo_lines(out_ids.tolist(), boxes, (w, h)))
        entry = _entry(_JOB.root, dst, dst_label, source=image, split="train", copy=copy, boxes=len(boxes))
        entry["negative_made"] = bool(len(xyxy) and not len(boxes))
        entries.append(entry)
    return entries


def _augmented(tasks: list[tuple[int, str, str]], workers: int) -> Iterator[list[dict[str, Any]]]:
    """Run :func:`_augment_one` over the tasks, in forked worker processes when asked, in order, with progress."""
    from tqdm import tqdm

    pool = None
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(min(workers, len(tasks)))
    try:
        results = pool.imap(_augment_one, tasks, chunksize=4) if pool else map(_augment_one, tasks)
        yield from tqdm(results, total=len(tasks), desc="materialize", unit="img", leave=False)
    finally:
        if pool is not None:
            pool.terminate()


def materialize(
    policy: Policy,
    dataset: YoloDataset,
    out_dir: Path,
    *,
    copies: int,
    seed: int = 0,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the augmented dataset to ``out_dir`` (atomically); returns summary.json's content (also written there).

    Raises:
        DroneVisionError: ``out_dir`` exists (and not ``overwrite``), ``copies`` < 1, or an image cannot be read.
    """
    global _JOB
    started = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    if copies < 1:
        raise DroneVisionError(f"augment.materialize={copies}: the number of augmented copies must be at least 1")
    if out_dir.exists() and not overwrite:
        raise DroneVisionError(f"out_dir {out_dir} already exists (set overwrite=true to replace it)")
    if out_dir == dataset.root or dataset.root.is_relative_to(out_dir):
        raise DroneVisionError(f"out_dir {out_dir} holds the source dataset; choose another folder")
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.tmp-")  # renamed to out_dir when whole
    try:
        train = sorted(dataset.splits["train"])
        tasks = [(i, str(p), s) for i, (p, s) in enumerate(zip(train, unique_stems(train)))]
        _JOB = _Job(policy=policy, root=tmp, copies=copies, seed=seed, n_classes=len(dataset.names))
        entries: list[dict[str, Any]] = []
        for batch in _augmented(tasks, workers):
            entries += batch
        for split, images in dataset.splits.items():
            if split == "train":
                continue
            for image, stem in zip(images, unique_stems(images)):
                n_boxes = len(read_rows(image, n_classes=len(dataset.names)))
                entries.append(_link_original(tmp, split, image, stem, n_boxes))
        summary = _finish(tmp, policy, dataset, entries, copies=copies, seed=seed)
        seconds = time.perf_counter() - started
        summary.update(
            out_dir=str(out_dir),
            data_yaml=str(out_dir / "data.yaml"),
            manifest=str(out_dir / "manifest.json"),
            seconds=round(seconds, 2),
            augmented_per_s=round(len(train) * copies / seconds, 1),
        )
        from dronevision.cli import write_summary

        write_summary(tmp, summary)
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _JOB = None
    return summary


def _finish(
    root: Path, policy: Policy, dataset: YoloDataset, entries: list[dict[str, Any]], *, copies: int, seed: int
) -> dict[str, Any]:
    """Write data.yaml and manifest.json; returns the summary's counts."""
    splits = list(dict.fromkeys(e["split"] for e in entries))
    data_yaml = {"path": ".", **{s: f"{s}/images" for s in splits}, "names": dict(dataset.names)}
    (root / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    images = Counter(e["split"] for e in entries)
    boxes: Counter[str] = Counter()
    for e in entries:
        boxes[e["split"]] += e["boxes"]
    negatives = sum(e.get("negative_made", False) for e in entries)
    counts = {
        "policy": policy.name,
        "copies": copies,
        "seed": seed,
        "images": {s: images[s] for s in splits},
        "augmented_images": len(dataset.splits["train"]) * copies,
        "boxes": {s: boxes[s] for s in splits},
        "negatives_made": negatives,
    }
    manifest = {
        "version": MANIFEST_VERSION,
        "kind": "augmented",
        **counts,
        "policy_config": policy.config,
        "min_visibility": policy.min_visibility,
        "min_area": policy.min_area,
        "source": {"data_yaml": str(dataset.yaml_path), "images": dataset.counts()},
        "classes": [dataset.names[i] for i in sorted(dataset.names)],
        "files": {"data.yaml": sha256_file(root / "data.yaml")},
        "entries": entries,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    log.info(
        "materialized policy '%s': %d train images (%d augmented), %d negatives made",
        policy.name,
        images["train"],
        counts["augmented_images"],
        negatives,
    )
    return {"action": "materialize", **counts}
