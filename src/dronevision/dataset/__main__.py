"""``python -m dronevision.dataset``: build a dataset (see :mod:`dronevision.dataset.command`)."""

from dronevision.dataset.command import main

main()
