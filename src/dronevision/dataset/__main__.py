"""``python -m dronevision.dataset``: build a dataset (see :mod:`dronevision.dataset.build`)."""

from dronevision.dataset.build import main

main()
