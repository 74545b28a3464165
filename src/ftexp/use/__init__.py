"""Using what a run trained: ``ftexp merge`` (a standard Hugging Face folder with a model card) and
``ftexp generate`` (answers, or a chat, from a run's model with the run's own tokenizer and prompt template)."""

from ftexp.errors import FtexpError


class UseError(FtexpError):
    """A folder that holds no usable model (not a run, not completed, no saved weights ...)."""
