"""Typed schemas of the ``mitigation`` group (see :mod:`ftexp.config.schema`). Capabilities that rules
across groups read are declared here as ``ClassVar`` flags."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from omegaconf import MISSING, DictConfig

from ftexp.config.validate import Problems


@dataclass
class MitigationConfig:
    """A forgetting mitigation: hooks around each stage and on the training loss."""

    _target_: str = MISSING
    # What the mitigation needs of training, read by the rules across groups (Config.problems):
    needs_whole_parameters: ClassVar[bool] = False  # every trainable parameter whole in each step (FSDP shards them)
    reads_student_logits: ClassVar[bool] = False  # the student's full logits (the fused loss never makes them)


@dataclass
class NoMitigationConfig(MitigationConfig):
    _target_: str = "ftexp.mitigation.base.NoMitigation"


def keyword_field(cls: type, attr: str, key: str) -> type:
    """Expose the dataclass field ``attr`` under the config key ``key``, for keys that are Python
    keywords (``mitigation.lambda``). Read it with ``getattr(cfg, key)``."""
    fields_ = cls.__dataclass_fields__
    f = fields_.pop(attr)
    f.name = key
    fields_[key] = f
    cls.__annotations__[key] = cls.__annotations__.pop(attr)

    def __init__(self, **values: Any) -> None:
        for fl in dataclasses.fields(cls):
            default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()
            setattr(self, fl.name, values.pop(fl.name, default))
        if values:
            raise TypeError(f"{cls.__name__}: unexpected keys {sorted(values)}")

    cls.__init__ = __init__
    return cls


EWC_MODES = ("online", "separate")


@dataclass
class EwcConfig(MitigationConfig):
    """Elastic weight consolidation: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters
    that train and persist across stages, with a diagonal Fisher from per-sample gradients."""

    _target_: str = "ftexp.mitigation.ewc.EWC"
    needs_whole_parameters: ClassVar[bool] = True  # the penalty reads every weight against its anchor
    lambda_: float = 1000.0  # penalty weight; the config key is `lambda` (see keyword_field below)
    mode: str = "online"  # online: F <- gamma*F + F_new, one anchor | separate: one (F, anchor) per stage
    gamma: float = 1.0  # decay of the old Fisher in online mode
    fisher_split: str = "train"  # the stage task's split the Fisher is estimated on
    fisher_samples: int = 512  # examples used (seeded subset; all if fewer)
    fisher_batch_size: int = 16  # examples per vectorised per-sample-gradient call

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.mode not in EWC_MODES:
            yield "mode", node.mode, "must be 'online' or 'separate'"
        for key in ("fisher_samples", "fisher_batch_size"):
            if not node[key] >= 1:
                yield key, node[key], "must be >= 1"


keyword_field(EwcConfig, "lambda_", "lambda")


@dataclass
class LwfConfig(MitigationConfig):
    """Learning without Forgetting: alpha * T^2 * KL(teacher || student) per completion token, the
    teacher being the model as it was when the stage began."""

    _target_: str = "ftexp.mitigation.lwf.LwF"
    needs_whole_parameters: ClassVar[bool] = True  # the teacher is a snapshot of every trainable weight
    reads_student_logits: ClassVar[bool] = True  # it distils from them
    alpha: float = 1.0
    temperature: float = 2.0
    vocab_chunk: int = 4096  # token positions per fp32 softmax chunk (bounds memory to chunk x vocab floats)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not node.temperature > 0:
            yield "temperature", node.temperature, "must be > 0"
        if not node.vocab_chunk >= 1:
            yield "vocab_chunk", node.vocab_chunk, "must be >= 1"


@dataclass
class ReplayConfig(MitigationConfig):
    """Examples of earlier stages mixed into each training step of later stages."""

    _target_: str = "ftexp.mitigation.replay.Replay"
    ratio: float = 0.1  # fraction of each step's examples that are replayed
    mode: str = "replace"  # replace: the batch keeps its size | add: replayed examples come on top
    buffer_size: int = 1000  # examples kept from all earlier stages together
    sampling: str = "reservoir"  # reservoir (uniform over everything seen) | balanced (per label)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.sampling not in ("reservoir", "balanced"):
            yield "sampling", node.sampling, "must be 'reservoir' or 'balanced'"
        if node.mode not in ("replace", "add"):
            yield "mode", node.mode, "must be 'replace' or 'add'"
        if not 0 <= node.ratio < 1:
            yield "ratio", node.ratio, "must be in [0, 1)"


# evaluator: see ftexp.config.eval_schema
