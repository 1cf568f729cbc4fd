"""The sample stage: video -> frames, filtered and deduplicated, with labels for the kept frames."""

from dronevision.sample.frames import Sampler, hamming, judge, phash, sharpness
from dronevision.sample.run import run, sample_video

__all__ = ["Sampler", "hamming", "judge", "phash", "run", "sample_video", "sharpness"]
