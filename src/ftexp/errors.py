"""The base of every error ftexp reports to the user as one paragraph (no traceback)."""


class FtexpError(Exception):
    """A problem with the user's config, data, model location or environment."""


class OutputExistsError(FtexpError):
    """The output folder already holds a completed run; nothing was written."""


class TrainingDiverged(FtexpError):
    """The training loss became NaN or infinite."""
