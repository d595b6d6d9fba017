"""Exceptions jitrs raises for bad user input (the CLI prints these as one line, no traceback)."""


class UserError(Exception):
    """Bad input from the user: a missing file, a wrong option value, an unusable checkpoint.

    The message is one sentence that names the file or option and the problem.
    """
