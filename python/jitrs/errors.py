"""Exceptions jitrs raises for bad user input (the CLI prints these as one line, no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong option value, an unusable checkpoint.

    The message is one sentence that names the file or parameter and the problem. A library function names its
    own parameter (`param`, with the `value` given): `str()` reads "data=/x: no such directory", and the CLI,
    whose flags are the parameters' names, prints "--data /x: no such directory".
    """

    def __init__(self, message: str, *, param: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.message, self.param, self.value = message, param, value

    def __str__(self) -> str:
        if self.param is None:
            return self.message
        subject = self.param if self.value is None else f"{self.param}={self.value}"
        return f"{subject}: {self.message}"

    def for_cli(self) -> str:
        """The message with the parameter written as the command-line flag of the same name."""
        if self.param is None:
            return self.message
        flag = "--" + self.param.replace("_", "-")
        subject = flag if self.value is None else f"{flag} {self.value}"
        return f"{subject}: {self.message}"


class WriteFailure(UserError):
    """An output could not be written (a full disk, a read-only or vanished directory); the CLI exits 1."""
