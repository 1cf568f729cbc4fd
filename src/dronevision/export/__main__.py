"""``python -m dronevision.export``: export a checkpoint to ONNX (see :mod:`dronevision.export.command`)."""

from dronevision.export.command import main

main()
