"""Data: sources -> task format (prompt -> completion) -> splits -> tokenised batches.

Knows a tokenizer interface and nothing else of models; never imports mitigation, eval or tracking.
"""

from ftexp.data.base import DataError, Example, Task

__all__ = ["DataError", "Example", "Task"]
