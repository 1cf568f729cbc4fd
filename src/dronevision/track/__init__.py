"""The track stage: footage -> tracked objects -> unique sightings, per video and per day."""

from dronevision.track.command import run
from dronevision.track.sightings import TrackLog
from dronevision.track.video import track_video

__all__ = ["TrackLog", "run", "track_video"]
