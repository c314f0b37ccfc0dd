"""User-facing errors: one line naming the field, the value and the fix.

Library code raises :class:`UserError` for bad input; the CLI and the Snakemake scripts turn it
into that one line on stderr and exit code 2, never a traceback::

    raise UserError("workload.batch_size", -3, "use a positive integer such as 32")
    # -> workload.batch_size = -3: must be ... ; use a positive integer such as 32
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from a user: a config field, a file, a flag.

    ``field`` names where the value came from (``cluster.devices[2].type``), ``value`` is what
    was given, ``problem`` says what is wrong with it and ``fix`` what to do instead.
    """

    def __init__(self, field: str, value: object, fix: str, problem: str = "is invalid") -> None:
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field} = {value!r} {problem}; {fix}")


class ServeFailed(RuntimeError):
    """A serving run failed; the message names the stage (device, layers) and the cause.

    Defined here, beside :class:`UserError`, so that light modules (``runtime.slurm``) catch and
    raise it without importing the runtime (torch)."""
