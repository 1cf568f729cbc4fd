"""``python -m dronevision.track``: unique sightings over footage (see :mod:`dronevision.track.command`)."""

from dronevision.track.command import main

main()
