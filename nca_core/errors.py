"""User-facing errors: one clear line, no traceback."""


class NCAError(Exception):
    """A problem the user can fix (bad input, bad model file, bad option).

    The command line prints ``str(error)`` on one line and exits non-zero.
    """


class ModelFileError(NCAError):
    """A model file is missing, corrupt, tampered with or of an unknown version."""


class InputImageError(NCAError):
    """An input image cannot be read or is not a usable 3D scalar volume."""
