"""User-facing errors: one clear line, no traceback."""


class NCAError(Exception):
    """A problem the user can fix (bad input, bad model file, bad option).

    The command line prints ``str(error)`` on one line and exits non-zero.
    """


class ModelFileError(NCAError):
    """A model file is missing, corrupt, tampered with or of an unknown version."""


class InputImageError(NCAError):
    """An input image cannot be read or is not a usable 3D scalar volume."""


# One mapping from errors to exit codes and one-line messages, for the command line, the
# Slicer worker and the Slicer batch script.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The Slicer worker's own: a Python package it needs is missing; the job was cancelled (or Slicer is gone).
EXIT_MISSING_PACKAGE, EXIT_CANCELLED = 3, 4


def user_message(error: BaseException):
    """The one line a user sees for an error they can act on; None for an unexpected one."""
    if isinstance(error, NCAError):
        return str(error)
    if isinstance(error, MemoryError):
        return "out of memory"
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    return None


def exit_code(error: BaseException) -> int:
    """The process exit code for an error that ends a command."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, SystemExit):  # argparse: 0 for --help, 2 for a usage error
        return error.code if isinstance(error.code, int) else (EXIT_OK if error.code is None else EXIT_FAILED)
    return EXIT_FAILED
