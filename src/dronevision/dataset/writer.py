"""Writes a built dataset's bookkeeping: manifest entries and COCO records streamed to staging files, data.yaml,
the COCO JSONs, manifest.json and the sample grid."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dronevision.dataset.plan import SPLITS, Item, Taxonomy
from dronevision.dataset.records import Issues
from dronevision.infer import box_areas

SMALL, MEDIUM = 32**2, 96**2  # COCO's size buckets (box area in pixels)


def object_size(box_wh: Sequence[np.ndarray]) -> dict[str, float | int | None]:
    """How large the objects of a split are, in pixels of the written images: the number the altitude a model
    was trained for comes down to (``side`` is the square root of a box's area).

    Examples:
        >>> object_size([np.array([[10.0, 10.0], [20.0, 5.0]]), np.array([[40.0, 40.0]])])["median_side_px"]
        10.0
        >>> object_size([])["boxes"], object_size([])["median_side_px"]
        (0, None)
    """
    wh = (
        np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in box_wh]) if box_wh else np.empty((0, 2))
    )
    if not len(wh):
        keys = ("median_w_px", "median_h_px", "median_side_px", "p10_side_px", "p90_side_px")
        return {"boxes": 0, **dict.fromkeys(keys)}
    side = np.sqrt(wh[:, 0] * wh[:, 1])
    return {
        "boxes": len(wh),
        "median_w_px": round(float(np.median(wh[:, 0])), 2),
        "median_h_px": round(float(np.median(wh[:, 1])), 2),
        "median_side_px": round(float(np.median(side)), 2),
        "p10_side_px": round(float(np.percentile(side, 10)), 2),
        "p90_side_px": round(float(np.percentile(side, 90)), 2),
    }


def publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished temporary folder to ``out_dir``; an existing ``out_dir`` (overwrite) is swapped out, then
    deleted, so a reader never sees a half-written folder."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy it where links are not possible), replacing an older ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.samefile(src):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json_with_lists(path: Path, head: Mapping[str, Any], lists: Mapping[str, Path]) -> None:
    """Write ``{**head, key: [records...]}`` where each list is streamed from a JSON-lines file (bounded memory)."""
    with path.open("w") as out:
        out.write(json.dumps(dict(head), sort_keys=True)[:-1])
        for i, (key, lines) in enumerate(lists.items()):
            out.write(f'{", " if head or i else ""}"{key}": [')
            with lines.open() as f:
                for j, line in enumerate(f):
                    out.write(("," if j else "") + "\n" + line.rstrip("\n"))
            out.write("\n]")
        out.write("}\n")


def draw_samples(root: Path, files: Sequence[str], out: Path, *, cell: int = 256) -> None:
    """A grid of up to 16 output images with their boxes drawn, as PNG."""
    import cv2

    cells = []
    for file in files[:16]:
        image = cv2.imread(str(root / file))
        label = root / ("labels" + file.removeprefix("images").rsplit(".", 1)[0] + ".txt")
        h, w = image.shape[:2]
        for line in label.read_text().splitlines():
            cls, cx, cy, bw, bh = (float(v) for v in line.split())
            p1 = (int((cx - bw / 2) * w), int((cy - bh / 2) * h))
            p2 = (int((cx + bw / 2) * w), int((cy + bh / 2) * h))
            cv2.rectangle(image, p1, p2, (0, 255, 0), max(1, w // 400))
        scale = cell / max(h, w)
        resized = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))))
        canvas = np.zeros((cell, cell, 3), np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        cells.append(canvas)
    if not cells:
        return
    cols = min(4, len(cells))
    cells += [np.zeros_like(cells[0])] * (-len(cells) % cols)
    rows = [np.concatenate(cells[i : i + cols], axis=1) for i in range(0, len(cells), cols)]
    cv2.imwrite(str(out), np.concatenate(rows, axis=0))


class DatasetWriter:
    """Streams manifest entries and COCO records to staging files; aggregates the counts."""

    def __init__(self, root: Path, taxonomy: Taxonomy) -> None:
        self.root, self.taxonomy = root, taxonomy
        self.staging = root / ".staging"
        self.staging.mkdir()
        self.entries = (self.staging / "entries.jsonl").open("w")
        self.coco = {
            s: ((self.staging / f"{s}.images.jsonl").open("w"), (self.staging / f"{s}.annotations.jsonl").open("w"))
            for s in SPLITS
        }
        self.n_images, self.n_boxes, self.n_ignored = Counter(), Counter(), 0
        self.class_counts = {s: Counter() for s in SPLITS}
        self.sizes = {s: Counter() for s in SPLITS}
        self.box_wh: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.groups: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.samples: list[str] = []

    def add(self, item: Item, hashes: Mapping[str, str], *, group: str) -> None:
        split, record = item.split, item.record
        image_id = self.n_images[split]
        self.n_images[split] += 1
        self.groups[split].add(group)
        areas = box_areas(item.xyxy)
        xyxy = np.asarray(item.xyxy, dtype=np.float64).reshape(-1, 4)
        self.box_wh[split].append(xyxy[:, 2:] - xyxy[:, :2])
        self.sizes[split].update(np.where(areas < SMALL, "small", np.where(areas < MEDIUM, "medium", "large")).tolist())
        self.class_counts[split].update(self.taxonomy.classes[c] for c in item.class_ids)
        self.n_ignored += len(item.ignore_xyxy)
        if len(self.samples) < 16 and split == "train":
            self.samples.append(item.file)
        w, h = item.resolution_wh
        boxes = np.round(item.xyxy, 2).tolist()
        entry = {
            "file": item.file,
            "split": split,
            "source_image": str(record.image),
            "group": group,
            "window": list(item.window_xyxy),
            "size": [w, h],
            "sha256": hashes,
            "boxes": [[c, *b] for c, b in zip(item.class_ids, boxes)],
            "attrs": {k: np.asarray(v)[item.keep].tolist() for k, v in sorted(record.attrs.items())},
            "ignored": np.round(item.ignore_xyxy, 2).tolist(),
        }
        self.entries.write(json.dumps(entry, sort_keys=True) + "\n")
        images_f, anns_f = self.coco[split]
        images_f.write(json.dumps({"id": image_id, "file_name": item.file, "width": w, "height": h}) + "\n")
        for c, (x1, y1, x2, y2) in zip(item.class_ids, boxes):
            self.n_boxes[split] += 1
            ann = {
                "id": self.n_boxes[split],
                "image_id": image_id,
                "category_id": c + 1,
                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2),
                "iscrowd": 0,
            }
            anns_f.write(json.dumps(ann) + "\n")

    def finish(self, cfg: DictConfig, sources: Sequence[Mapping[str, Any]], issues: Issues) -> dict[str, Any]:
        """Write data.yaml, the COCO JSONs, manifest.json and samples.png; returns the summary's counts."""
        import yaml

        self.entries.close()
        for f1, f2 in self.coco.values():
            f1.close(), f2.close()
        root, present = self.root, [s for s in SPLITS if self.n_images[s]]
        files = {}
        (root / "annotations").mkdir()
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.taxonomy.classes)]
        for split in present:
            path = root / "annotations" / f"instances_{split}.json"
            _write_json_with_lists(
                path,
                {"categories": categories},
                {
                    "images": self.staging / f"{split}.images.jsonl",
                    "annotations": self.staging / f"{split}.annotations.jsonl",
                },
            )
            files[f"annotations/instances_{split}.json"] = sha256_file(path)
        data_yaml = {
            "path": ".",
            **{s: f"images/{s}" for s in present},
            "names": dict(enumerate(self.taxonomy.classes)),
        }
        (root / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        files["data.yaml"] = sha256_file(root / "data.yaml")
        for a, b in itertools.combinations(present, 2):  # assign_splits guarantees this; the manifest proves it
            if self.groups[a] & self.groups[b]:
                raise RuntimeError(f"groups in both {a} and {b}: {sorted(self.groups[a] & self.groups[b])[:5]}")
        head = {
            "version": 1,
            "classes": list(self.taxonomy.classes),
            "taxonomy": self.taxonomy.name,
            "sources": [{k: v for k, v in sorted(s.items()) if v is not None} for s in sources],
            "split": OmegaConf.to_container(cfg.split, resolve=True),
            "tiling": OmegaConf.to_container(cfg.tiling, resolve=True),
            "images": {s: self.n_images[s] for s in present},
            "groups": {s: sorted(self.groups[s]) for s in present},
            "class_counts": {s: dict(sorted(self.class_counts[s].items())) for s in present},
            "box_sizes": {s: {k: self.sizes[s][k] for k in ("small", "medium", "large")} for s in present},
            "object_size": {s: object_size(self.box_wh[s]) for s in present},
            "gsd_m": cfg.get("gsd_m"),
            "ignored_regions": self.n_ignored,
            "dropped": dict(sorted(issues.dropped.items())),
            "clipped": dict(sorted(issues.clipped.items())),
            "skipped": dict(sorted(issues.counts.items())),
            "files": files,  # the per-image files' hashes are in each entry
        }
        _write_json_with_lists(root / "manifest.json", head, {"entries": self.staging / "entries.jsonl"})
        shutil.rmtree(self.staging)
        draw_samples(root, self.samples, root / "samples.png")
        (root / "build_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        return {
            "classes": list(self.taxonomy.classes),
            "images": head["images"],
            "boxes": {s: self.class_counts[s].total() for s in present},
            "class_counts": head["class_counts"],
            "object_size": head["object_size"],
            "gsd_m": head["gsd_m"],
            "dropped": head["dropped"],
            "clipped": head["clipped"],
            "skipped": head["skipped"],
            "manifest_sha256": sha256_file(root / "manifest.json"),
        }
