"""``python -m dronevision.sample``: sample frames from footage (see :mod:`dronevision.sample.run`)."""

from dronevision.sample.run import main

main()
