"""The library's errors name its parameters (``lr must be > 0``); the commands name their
options (``--lr must be > 0``): :func:`options_for_parameters` maps one to the other."""

from __future__ import annotations

import re

# The library's errors name its parameters; the command names its options.
_PARAMETERS = ("freeze_until", "freeze", "l2sp", "scratch_lr", "lr", "epochs", "batch_size",
               "patience", "test_fraction", "val_fraction")  # fmt: skip
_BARE = re.compile(r"(?<![\w./\[-])(" + "|".join(_PARAMETERS) + r")(?![\w./\]-])")
_ASSIGNED = re.compile(
    r"(?<![\w./\[-])(inputs|targets|drop_nonfinite|freeze_until|freeze)(=True|=)"
    r"|(?:^|(?<=: ))(inputs|targets|freeze_until)(:)"
)


def options_for_parameters(message: str) -> str:
    """A library message with ``lr``, ``test_fraction``, ``inputs=`` ... written as the
    command's options (``--lr``, ``--test-fraction``, ``--inputs``).

    Example:
        >>> options_for_parameters("lr must be > 0")
        '--lr must be > 0'
    """

    def assigned(m: re.Match) -> str:
        name, how = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        flag = "--" + name.replace("_", "-")
        return {"=True": flag, "=": flag + " ", ":": flag + ":"}[how]

    message = _ASSIGNED.sub(assigned, message)
    return _BARE.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
