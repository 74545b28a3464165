"""The base of every error ftexp reports to the user as one paragraph (no traceback)."""


class FtexpError(Exception):
    """A problem with the user's config, data, model location or environment."""
