"""Build one validated, leakage-free, optionally tiled YOLO dataset from one or more annotated sources.

Run ``python -m dronevision.dataset source.format=visdrone source.path=<dir> out_dir=<dir>``; tests call :func:`run`.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dronevision.cli import hydra_main, write_summary
from dronevision.dataset.plan import SPLITS, Item, Taxonomy, assign_splits, group_of, plan_items, to_yolo_lines
from dronevision.dataset.records import Issues, SourceImage
from dronevision.dataset.writer import DatasetWriter, link_or_copy, publish, sha256_file
from dronevision.errors import DroneVisionError
from dronevision.fsio import make_temp_dir, write_error

log = logging.getLogger(__name__)

FORMATS = ("visdrone", "visdrone-vid", "coco", "yolo", "voc", "cvat", "labelstudio")


# --- I/O adapters ----------------------------------------------------------------------------------------------


def read_source(source: Mapping[str, Any], issues: Issues) -> Iterable[SourceImage]:
    """Dispatch to the reader of ``source.format``; readers of per-image files stream their records."""
    fmt, path = source.get("format"), source.get("path")
    if fmt not in FORMATS:
        raise DroneVisionError(f"unknown source.format '{fmt}'; valid: {', '.join(FORMATS)}")
    if not path:
        raise DroneVisionError("source.path is required (a folder or file to read)")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DroneVisionError(f"source.path {path} does not exist")
    images_dir = Path(source["images_dir"]).expanduser().resolve() if source.get("images_dir") else None
    if fmt == "visdrone":
        from dronevision.dataset.visdrone import read_visdrone_det

        records = read_visdrone_det(path, issues=issues, keep_others=bool(source.get("keep_others")))
    elif fmt == "visdrone-vid":
        from dronevision.dataset.visdrone import read_visdrone_vid

        records = read_visdrone_vid(
            path,
            issues=issues,
            frame_stride=int(source.get("frame_stride") or 1),
            keep_others=bool(source.get("keep_others")),
        )
    elif fmt == "yolo":
        from dronevision.dataset.yolo import read_yolo

        names = list(source["names"]) if source.get("names") else None
        records = read_yolo(path, issues=issues, names=names, keep_splits=bool(source.get("keep_splits")))
    elif fmt == "coco":
        from dronevision.dataset.coco import read_coco

        records = read_coco(path, issues=issues, images_dir=images_dir)
    elif fmt == "voc":
        from dronevision.dataset.voc import read_voc

        records = read_voc(path, issues=issues, images_dir=images_dir)
    elif fmt == "labelstudio":
        from dronevision.dataset.labelstudio import read_label_studio

        records = read_label_studio(path, issues=issues, images_dir=images_dir)
    else:
        from dronevision.dataset.cvat import read_cvat

        records = read_cvat(
            path, issues=issues, images_dir=images_dir, frame_stride=int(source.get("frame_stride") or 1)
        )
    if source.get("split"):
        return (replace(r, split=str(source["split"])) for r in records)
    return records


def check_image(path: Path) -> tuple[int, int] | None:
    """Size from the header, after checking that the file is a complete image; None when it is not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            wh, fmt = im.size, im.format
        with path.open("rb") as f:
            f.seek(-12, os.SEEK_END)
            tail = f.read()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return None  # truncated: no end-of-image marker
    if fmt == "PNG" and b"IEND" not in tail:
        return None
    return wh


def write_item(item: Item, root: Path) -> dict[str, str]:
    """Write one output image (linked, or decoded, masked/cropped and encoded) and its label file; their hashes."""
    target, label = root / item.file, root / item.label_file
    target.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    if not item.rewrite:
        link_or_copy(item.record.image, target)
    else:
        import cv2

        image = cv2.imread(str(item.record.image), cv2.IMREAD_COLOR)
        if image is None:
            raise DroneVisionError(f"{item.record.image}: cannot be decoded as an image")
        x1, y1, x2, y2 = item.window_xyxy
        crop = np.ascontiguousarray(image[y1:y2, x1:x2])
        if item.mask and len(item.ignore_xyxy):
            mean = np.round(cv2.mean(image)[:3]).astype(np.uint8)  # the whole image's mean colour
            for bx1, by1, bx2, by2 in np.round(item.ignore_xyxy).astype(int).tolist():
                crop[by1:by2, bx1:bx2] = mean
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if target.suffix in (".jpg", ".jpeg") else []
        ok, encoded = cv2.imencode(target.suffix, crop, params)
        if not ok:
            raise DroneVisionError(f"{target}: could not be encoded as {target.suffix}")
        target.write_bytes(encoded.tobytes())  # a full disk is an OSError naming its errno (imwrite says False)
    label.write_text(to_yolo_lines(item.class_ids, item.xyxy, item.resolution_wh))
    return {item.file: sha256_file(target), item.label_file: sha256_file(label)}


def _sources(cfg: DictConfig) -> list[dict[str, Any]]:
    sources = OmegaConf.to_container(cfg.sources, resolve=True) if cfg.get("sources") else None
    if sources:
        defaults = OmegaConf.to_container(cfg.source, resolve=True)
        return [{**defaults, **s} for s in sources]
    return [OmegaConf.to_container(cfg.source, resolve=True)]


@dataclass
class _Index:
    """Pass 1 over the sources: which records survive the checks, their size, group and split; O(1) per image."""

    kept: dict[str, tuple[str, tuple[int, int], str]] = field(default_factory=dict)  # name -> (image, wh, group)
    forced: dict[str, str] = field(default_factory=dict)  # name -> split forced by its source
    labels: set[str] = field(default_factory=set)


def _index(sources: Sequence[Mapping[str, Any]], pattern: str | None, issues: Issues) -> _Index:
    index = _Index()
    for source in sources:
        for record in read_source(source, issues):
            if record.name in index.kept:
                issues.report(
                    "duplicate_name",
                    str(record.image),
                    f"file name '{record.name}' also comes from {index.kept[record.name][0]}",
                )
                continue
            wh = check_image(record.image) if record.image.is_file() else None
            if wh is None:
                kind = "unreadable_image" if record.image.is_file() else "missing_image"
                issues.report(
                    kind, str(record.image), "cannot be read as a complete image (missing, unreadable or truncated)"
                )
                continue
            if record.resolution_wh is not None and tuple(record.resolution_wh) != wh:
                said = "x".join(map(str, record.resolution_wh))
                issues.report("size_mismatch", record.where, f"annotation says {said}, image is {wh[0]}x{wh[1]}")
                continue
            index.kept[record.name] = (str(record.image), wh, record.group or group_of(record.name, pattern))
            if record.split:
                if record.split not in SPLITS:
                    raise DroneVisionError(f"{record.where}: split '{record.split}' is not one of {', '.join(SPLITS)}")
                index.forced[record.name] = record.split
            index.labels.update(record.labels)
    return index


def _planned(
    sources: Sequence[Mapping[str, Any]],
    index: _Index,
    split_of: Mapping[str, str],
    taxonomy: Taxonomy,
    plan_cfg: Mapping[str, Any],
    issues: Issues,
) -> Iterator[Item]:
    """Pass 2: read the sources again (their problems were counted in pass 1) and plan each kept record."""
    quiet = Issues("skip", log_warnings=False)
    for source in sources:
        for record in read_source(source, quiet):
            kept = index.kept.get(record.name)
            if kept is None or kept[0] != str(record.image):
                continue
            _, wh, group = kept
            split = index.forced.get(record.name) or split_of[group]
            yield from plan_items(record, resolution_wh=wh, split=split, taxonomy=taxonomy, cfg=plan_cfg, issues=issues)


def _written(items: Iterable[Item], root: Path, workers: int, total: int) -> Iterator[tuple[Item, dict[str, str]]]:
    """Write items, in worker processes when there are many, in order; at most a few hundred in flight."""
    from functools import partial

    from tqdm import tqdm

    write = partial(write_item, root=root)
    progress = tqdm(total=total, desc="writing", unit="img", leave=False)
    pool = None
    if workers > 1 and total >= 64:
        import multiprocessing as mp

        pool = mp.get_context("fork").Pool(workers)
    try:
        iterator = iter(items)
        while chunk := list(itertools.islice(iterator, 256)):
            hashes = pool.imap(write, chunk, chunksize=8) if pool else map(write, chunk)
            for item, h in zip(chunk, hashes):
                progress.update()
                yield item, h
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the dataset into ``cfg.out_dir`` atomically; returns summary.json's content."""
    started = time.perf_counter()
    out_dir = Path(cfg.out_dir).expanduser().resolve()
    if out_dir.exists() and not cfg.overwrite:
        raise DroneVisionError(f"out_dir {out_dir} already exists (set overwrite=true to replace it)")
    issues = Issues(cfg.on_error)
    sources = _sources(cfg)
    index = _index(sources, cfg.split.group_pattern, issues)
    if not index.kept:
        raise DroneVisionError("no images left to write (check the sources and on_error)")
    free = Counter(group for name, (_, _, group) in index.kept.items() if name not in index.forced)
    split_of = assign_splits(
        free, val_fraction=cfg.split.val_fraction, test_fraction=cfg.split.test_fraction, seed=cfg.split.seed
    )
    if cfg.split.val_fraction > 0 and "val" not in split_of.values():
        log.warning(
            "all %d images are in one split group (%s): the val split is empty; group differently "
            "(split.group_pattern) or add footage",
            len(index.kept),
            next(iter(free), "-"),
        )
    taxonomy = Taxonomy.from_config(OmegaConf.to_container(cfg.taxonomy, resolve=True), index.labels)
    plan_cfg = {"filter": cfg.get("filter"), "tiling": cfg.tiling, "mask_ignored": cfg.mask_ignored}
    items = _planned(sources, index, split_of, taxonomy, plan_cfg, issues)
    tmp = make_temp_dir(out_dir.parent, f".{out_dir.name}.tmp-")  # renamed to out_dir when whole
    try:
        writer = DatasetWriter(tmp, taxonomy)
        for item, hashes in _written(items, tmp, int(cfg.workers or os.cpu_count() or 1), total=len(index.kept)):
            writer.add(item, hashes, group=index.kept[item.record.name][2])
        summary = writer.finish(cfg, sources, issues)
        publish(tmp, out_dir)
    except BaseException as e:
        error = write_error(e, out_dir)  # a worker's OSError names no file: name the dataset's folder
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from None
        raise
    seconds = time.perf_counter() - started
    n_source = len(index.kept)
    summary.update(
        out_dir=str(out_dir),
        source_images=n_source,
        seconds=round(seconds, 2),
        images_per_s=round(n_source / seconds, 1),
    )
    write_summary(out_dir, summary)
    n = summary["images"]
    print(
        f"dronevision dataset: {sum(n.values())} images ({', '.join(f'{k} {v}' for k, v in n.items())}), "
        f"{sum(summary['boxes'].values())} boxes, {len(taxonomy.classes)} classes in {seconds:.1f} s\n"
        f"  dataset  {out_dir}  (train with: python -m dronevision.train dataset.path={out_dir})"
    )
    return summary


main = hydra_main("dataset_build", run)

if __name__ == "__main__":
    main()
