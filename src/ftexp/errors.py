"""The base of every error ftexp reports to the user as one paragraph (no traceback)."""

from hydra.errors import CompactHydraException


class FtexpError(Exception):
    """A problem with the user's config, data, model location or environment."""


class TrainingDiverged(FtexpError):
    """The training loss became NaN or infinite."""


class JobFailed(CompactHydraException):
    """A job of a sweep (-m) that failed with an :class:`FtexpError`: Hydra prints the job's overrides and
    this paragraph (no traceback), runs the other jobs, and the sweep exits non-zero at the end."""
