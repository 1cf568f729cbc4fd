"""Run a policy inside ultralytics' training pipeline, with box filtering and kept negatives.

Training passes ``policy.transforms`` to ultralytics as its own ``augmentations`` train argument, so the
checkpoint records them and ultralytics builds ``Albumentations(transforms=hyp.augmentations)`` into
``v8_transforms`` (after Mosaic, RandomPerspective, MixUp and CutMix; before RandomHSV, RandomFlip and Format).
ultralytics' step has no ``min_visibility`` and, when a spatial transform removes every box, silently throws the
whole augmentation of that image away. :func:`use_policy` swaps that step, in a built training ``YOLODataset``,
for :class:`PolicyAlbumentations`, built from the same transforms: boxes are filtered by the policy's
``min_visibility`` / ``min_area``, and an image that loses all its boxes is kept as a negative (augmented image,
no labels) and counted in shared memory, readable with :func:`negatives_made` from the training process while
DataLoader workers (forked) do the work. The swap is re-applied whenever the dataset rebuilds its transforms
(``close_mosaic``).

At this point of ultralytics' pipeline the label dict holds ``img`` (BGR uint8, ``imgsz`` square after
RandomPerspective), ``cls`` (N, 1) and ``instances`` (:class:`ultralytics.utils.instance.Instances`, xyxy pixels
after RandomPerspective; converted here in any case). The step leaves xyxy pixel boxes, which RandomHSV ignores and
RandomFlip and Format convert as they need.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np

from dronevision.augment.policy import Policy, augment_sample, build_compose
from dronevision.errors import DroneVisionError

log = logging.getLogger(__name__)


class PolicyHook:
    """What :func:`use_policy` attaches to a dataset: the policy's box thresholds and the shared negatives counter."""

    def __init__(self, policy: Policy) -> None:
        import albumentations as A

        self.name = policy.name
        self.min_visibility = policy.min_visibility
        self.min_area = policy.min_area
        self.expected = [A.to_dict(t)["transform"] for t in policy.transforms]
        self.negatives = multiprocessing.Value("q", 0)  # shared with forked DataLoader workers

    def install(self, transforms: Any) -> Any:
        """Replace ultralytics' Albumentations step in a ``Compose`` of training transforms; returns the Compose."""
        import albumentations as A
        from ultralytics.data.augment import Albumentations

        steps = getattr(transforms, "transforms", None)
        found = [i for i, t in enumerate(steps or []) if isinstance(t, (Albumentations, PolicyAlbumentations))]
        if not found:
            raise DroneVisionError(
                "no albumentations step in this dataset's transforms: use_policy needs a training dataset"
                " (mode='train', augment=True, rect=False)"
            )
        for i in found:
            step = steps[i]
            if isinstance(step, PolicyAlbumentations):
                given = step.transforms
            elif step.transform is None:
                raise DroneVisionError("ultralytics could not build its albumentations step (see its log above)")
            else:
                given = list(step.transform.transforms)
            got = [A.to_dict(t)["transform"] for t in given]
            if got != self.expected:
                names = [d["__class_fullname__"] for d in got]
                raise DroneVisionError(
                    f"ultralytics received augmentations {names}, not policy '{self.name}'"
                    f" {[d['__class_fullname__'] for d in self.expected]}: pass augmentations=policy.transforms to"
                    " model.train() (an empty list for a policy without transforms)"
                )
            steps[i] = PolicyAlbumentations(
                given, min_visibility=self.min_visibility, min_area=self.min_area, negatives=self.negatives
            )
        return transforms


class PolicyAlbumentations:
    """Detection-only replacement for ``ultralytics.data.augment.Albumentations``.

    Args:
        transforms: albumentations transforms (objects, or ``A.to_dict`` dicts as ultralytics stores them).
        min_visibility: passed to ``A.BboxParams``.
        min_area: passed to ``A.BboxParams``, in square pixels.
        negatives: a shared counter of images whose boxes were all removed; None: not counted.
    """

    def __init__(
        self,
        transforms: Sequence[Any],
        *,
        min_visibility: float = 0.0,
        min_area: float = 0.0,
        negatives: Any = None,
    ) -> None:
        import albumentations as A

        self.transforms = [A.from_dict(t) if isinstance(t, dict) else t for t in transforms]
        self.compose = build_compose(self.transforms, min_visibility=min_visibility, min_area=min_area)
        self.negatives = negatives

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        """Augment ``labels['img']`` and its boxes; an image left without boxes is kept and counted."""
        import cv2
        import torch
        from ultralytics.utils.instance import Instances

        if not self.transforms:
            return labels
        if self.compose.seed != torch.initial_seed():  # each DataLoader worker draws its own augmentations
            self.compose.set_random_seed(torch.initial_seed())
        img = labels["img"]
        h, w = img.shape[:2]
        colour = img.ndim == 3 and img.shape[2] == 3
        instances = labels["instances"]
        instances.convert_bbox("xyxy")
        instances.denormalize(w, h)
        cls = labels["cls"]
        n_before = len(cls)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if colour else img  # albumentations' colour maths assume RGB
        out, boxes, kept = augment_sample(self.compose, rgb, instances.bboxes, np.arange(n_before))
        if out.shape[:2] != (h, w):  # a crop or resize: back to the batch's size, boxes scaled with it
            sy, sx = h / out.shape[0], w / out.shape[1]
            out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
            boxes = boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        if colour:
            out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
        elif out.ndim == 2:
            out = out[..., None]
        if n_before and not len(kept) and self.negatives is not None:
            with self.negatives.get_lock():
                self.negatives.value += 1
        labels["img"] = np.ascontiguousarray(out)
        labels["cls"] = cls[kept].reshape(-1, 1)
        labels["instances"] = Instances(boxes.reshape(-1, 4), bbox_format="xyxy", normalized=False)
        return labels

    def __repr__(self) -> str:
        return f"PolicyAlbumentations({', '.join(type(t).__name__ for t in self.transforms)})"


class _BuildTransformsWithPolicy:
    """Stands in for ``dataset.build_transforms``: builds as ultralytics does, then installs the policy step."""

    def __init__(self, build: Any, hook: PolicyHook) -> None:
        self.build, self.hook = build, hook

    def __call__(self, hyp: Any) -> Any:
        return self.hook.install(self.build(hyp))


def use_policy(dataset: Any, policy: Policy) -> None:
    """Make a built ultralytics training ``YOLODataset`` apply ``policy`` the dronevision way.

    The dataset must have been built with ``augmentations`` equal to ``policy.transforms`` (what
    ``model.train(augmentations=policy.transforms)`` passes on); otherwise this raises. Call it from a
    ``DetectionTrainer.build_dataset`` override for ``mode == "train"``.

    Raises:
        DroneVisionError: not a detection training dataset, or its augmentations are not the policy's.
    """
    if not getattr(dataset, "augment", False):
        raise DroneVisionError("use_policy needs a training dataset (built with mode='train')")
    if getattr(dataset, "use_segments", False) or getattr(dataset, "use_keypoints", False):
        raise DroneVisionError("use_policy handles detection datasets only (no segments or keypoints)")
    if getattr(dataset, "use_obb", False):
        raise DroneVisionError("use_policy handles axis-aligned boxes only (not OBB)")
    build = dataset.build_transforms
    if isinstance(build, _BuildTransformsWithPolicy):
        build = build.build  # applied twice: keep ultralytics' own builder underneath
    hook = PolicyHook(policy)
    hook.install(dataset.transforms)
    dataset.build_transforms = _BuildTransformsWithPolicy(build, hook)
    dataset.dronevision_policy = hook
    log.info(
        "augment policy '%s' in ultralytics' pipeline: %d transforms, min_visibility %g, min_area %g;"
        " images left without boxes are kept as negatives",
        policy.name,
        len(policy.transforms),
        policy.min_visibility,
        policy.min_area,
    )


def negatives_made(dataset: Any) -> int:
    """How many images the policy has left without boxes (kept as negatives) so far, over all worker processes."""
    hook = getattr(dataset, "dronevision_policy", None)
    if hook is None:
        raise DroneVisionError("use_policy() was not applied to this dataset")
    return int(hook.negatives.value)
