"""The one exception type that reaches users as a single line."""


class DroneVisionError(Exception):
    """Bad input or setup that the user can fix: reported as one line and a non-zero exit."""


def first_line(e: BaseException, *, limit: int | None = 300, default: str | None = None) -> str:
    """The first line of ``e``'s message, cut to ``limit`` characters (None: whole), for one-line reports; an empty
    message gives ``default`` (None: the exception's type name).

    Examples:
        >>> first_line(ValueError("bad shape\\n  at node 3"))
        'bad shape'
        >>> first_line(KeyError(), default="")
        ''
        >>> first_line(RuntimeError(""))
        'RuntimeError'
    """
    line = (str(e).strip().splitlines() or [type(e).__name__ if default is None else default])[0]
    return line if limit is None else line[:limit]
