"""The one exception type that reaches users as a single line."""


class DroneVisionError(Exception):
    """Bad input or setup that the user can fix: reported as one line and a non-zero exit."""
