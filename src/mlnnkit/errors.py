"""The user-facing error types.

A :class:`UserError` is a problem the user can fix (a missing file, a bad config value,
data whose shape does not fit the model). The CLI prints it as one line ``error: ...`` on
stderr and exits with status 2; ``--debug`` shows the traceback too. Anything else that
escapes is a bug in mlnnkit and is shown with its traceback.
"""

from __future__ import annotations


class MlnnkitError(Exception):
    """Base class of every error mlnnkit raises on purpose."""

    exit_code = 2


class UserError(MlnnkitError):
    """Something the user can fix: the message says what and, where possible, how."""


class VerificationError(MlnnkitError):
    """A model does not compute what the file it came from computes (exit 1)."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a command. A ``KeyboardInterrupt``, so code that handles
    interrupts handles it; its message says what was kept and how to continue, e.g.
    ``interrupted after epoch 3 of 10; run the same command again ...``. The CLI prints
    ``error: <message>`` and exits 130.

    Example:
        >>> str(Interrupted("interrupted after epoch 3 of 10"))
        'interrupted after epoch 3 of 10'
    """

    exit_code = 130
