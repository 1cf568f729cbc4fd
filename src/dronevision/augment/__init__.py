"""Augmentation policies (``configs/augment/<name>.yaml``): albumentations transforms with correct boxes.

- :func:`load_policy` checks a policy config and instantiates its transforms into a :class:`Policy`;
  :meth:`Policy.compose` / :func:`augment_sample` apply it to an image and its pixel ``xyxy`` boxes.
- :func:`use_policy` / :func:`negatives_made`: run it inside ultralytics training (train passes
  ``augmentations=policy.transforms``), with ``min_visibility`` and images left without boxes kept and counted.
- :func:`preview_grid` draws augmented samples; :func:`materialize` writes an augmented copy of a dataset.
"""

from dronevision.augment.materialize import materialize
from dronevision.augment.policy import Policy, augment_sample, build_compose, check_policy_config, load_policy
from dronevision.augment.preview import preview_grid
from dronevision.augment.ultralytics import PolicyAlbumentations, negatives_made, use_policy

__all__ = [
    "Policy",
    "PolicyAlbumentations",
    "augment_sample",
    "build_compose",
    "check_policy_config",
    "load_policy",
    "materialize",
    "negatives_made",
    "preview_grid",
    "use_policy",
]
