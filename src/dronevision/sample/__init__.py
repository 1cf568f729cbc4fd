"""The sample stage: video -> frames, filtered and deduplicated, with labels for the kept frames."""

from dronevision.sample.command import run, sample_video
from dronevision.sample.frames import Sampler, changed_regions, hamming, judge, phash, sharpness

__all__ = ["Sampler", "changed_regions", "hamming", "judge", "phash", "run", "sample_video", "sharpness"]
