"""Forgetting mitigations: objects with hooks that the stage loop and the training module call.

A mitigation sees the model and the batch; it never imports eval or tracking.
"""

from ftexp.mitigation.base import Mitigation, NoMitigation, StageContext

__all__ = ["Mitigation", "NoMitigation", "StageContext"]
