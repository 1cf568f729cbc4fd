"""``python -m dronevision.augment``: preview or materialize a policy (see :mod:`dronevision.augment.command`)."""

from dronevision.augment.command import main

main()
