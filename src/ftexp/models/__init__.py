"""Models: where weights and tokenizers come from (hub, local folder, tiny random model) and how
they are adapted (LoRA or full fine-tuning)."""

from ftexp.models.base import ModelLoadError, ModelSource, count_parameters

__all__ = ["ModelLoadError", "ModelSource", "count_parameters"]
