"""``python -m dronevision.sample``: sample frames from footage (see :mod:`dronevision.sample.command`)."""

from dronevision.sample.command import main

main()
