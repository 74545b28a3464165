"""What ``trainer.compile`` compiles: each decoder layer and the loss (``compile_scope=layers``) or the
whole step.

``layers`` is regional compilation, as torchtitan compiles each transformer block. Every layer of one
class shares one compiled graph (dynamo treats the layer's parameters as inputs), so compile time does
not grow with depth: on a 2-core CPU a 24-layer model took 33 s to its first step (layers and loss),
against 109 s with the whole step compiled, at eager's step time or better (``bench/compile_time.py``).
The layers run compiled only in the training forward and the backward (where activation checkpointing
runs them again and must find the same graph): validation, generation with its KV cache, LwF's teacher
and the mitigations' passes between stages run eager. Each of those would
be another compiled variant of the same code, and dynamo stops compiling a code object after
``recompile_limit`` variants (8) and runs it eager from then on, with only a log line to say so.
Training alone makes up to 6 per layer class: the first layer's input needs no gradient when the
embedding is frozen (LoRA), the others' does, and each compiles for its first shape, then with a
dynamic length and a dynamic batch. Every transformers decoder layer runs the same code
(``GradientCheckpointingLayer.__call__``), so a model with two layer classes (vision and text, say)
would share one budget of 8 between them: while the layers are compiled the limit is raised to 8 per
class.
The model's loss function (transformers' ``loss_function``: logits upcast to fp32, shifted, cross-entropy)
is compiled as a region of its own, so that the fp32 logits and log-probabilities (8.4 GB each for 8 x
2048 tokens of a 128k vocabulary) are never written out whole: the compiler fuses the upcast, the
softmax and the gradient into passes over the bf16 logits. The embedding, the final norm and the output
layer's matmul stay eager, as does ``trainer.fused_loss``, which replaces the loss function and takes
its row-selecting path.

``step`` compiles the training forward with its loss as one graph: fusion across layer boundaries and
into the loss, and a compile time that grows with the number of layers.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional

import torch

from ftexp.errors import FtexpError
from ftexp.models.base import decoder_layer_classes, unwrap_adapter

# torch >= 2.6 calls dynamo's per-code-object variant limit recompile_limit, earlier versions cache_size_limit.
_LIMIT = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


class CompiledRegions:
    """The model's decoder layers and loss function, switched between their compiled and eager calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        classes = decoder_layer_classes(model)
        if not classes:
            raise FtexpError(f"trainer.compile_scope='layers': {type(model).__name__} names no decoder layer "
                             "class (its _no_split_modules is empty), so there is nothing to compile layer by "
                             "layer; set trainer.compile_scope=step to compile the whole training step")
        self.layers = [m for m in model.modules() if type(m) in classes]
        self.n_classes = len(classes)
        self.lm = unwrap_adapter(model)  # a transformers model has loss_function, settable
        self._calls: Optional[List] = None  # made at the first step, so the module still pickles (ddp_spawn)
        self._loss: Optional[Callable] = None  # idem
        self._eager_loss: Optional[Callable] = None
        self._saved_limit: Optional[int] = None  # dynamo's limit while on, to restore

    def on(self) -> None:
        """Each layer's ``__call__`` goes through its compiled call (what ``nn.Module.compile`` sets up,
        kept here so that it can be undone)."""
        if self._calls is None:
            self._calls = [torch.compile(layer._call_impl) for layer in self.layers]
            loss = getattr(self.lm, "loss_function", None)
            self._loss = torch.compile(loss) if callable(loss) else None
        for layer, call in zip(self.layers, self._calls):
            layer._compiled_call_impl = call
        if self._loss is not None and self.lm.__dict__.get("_loss_function") is not self._loss:
            self._eager_loss = self.lm.__dict__.get("_loss_function")  # one the user set, else None
            self.lm.loss_function = self._loss  # transformers' setter: the instance's _loss_function
        if self._saved_limit is None:  # each layer class its own budget of variants (see the module doc)
            config = torch._dynamo.config
            self._saved_limit = getattr(config, _LIMIT)
            setattr(config, _LIMIT, self._saved_limit * self.n_classes)

    def off(self) -> None:
        for layer in self.layers:
            layer._compiled_call_impl = None
        if self._loss is not None and self.lm.__dict__.get("_loss_function") is self._loss:
            if self._eager_loss is None:
                del self.lm._loss_function  # back to transformers' choice by loss_type
            else:
                self.lm._loss_function = self._eager_loss
        if self._saved_limit is not None:
            setattr(torch._dynamo.config, _LIMIT, self._saved_limit)
            self._saved_limit = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self.on()
        try:
            yield
        finally:
            self.off()

    def __getstate__(self):  # compiled callables do not pickle; they are remade on the first step
        return {**self.__dict__, "_calls": None, "_loss": None, "_saved_limit": None}
