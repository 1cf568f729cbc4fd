"""``python -m dronevision.synth``: render a flyover (see :mod:`dronevision.synth.command`)."""

from dronevision.synth.command import main

main()
