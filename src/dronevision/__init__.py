"""dronevision: train, evaluate, export and benchmark detectors for drone footage."""

from dronevision.offline import configure_offline

__version__ = "0.1.0"

configure_offline()
