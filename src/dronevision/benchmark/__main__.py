"""``python -m dronevision.benchmark``: see :mod:`dronevision.benchmark.command`."""

from dronevision.benchmark.command import main

main()
