"""``mitigation=lwf``: Learning without Forgetting — distil the model as it was when the stage began
(the teacher) into the model being trained, on the new stage's own batches.

Only the trainable parameters are snapshot: with LoRA that is the adapter (a fresh adapter has B = 0,
so the stage-1 teacher is the base model), with full fine-tuning every weight. The teacher's logits
are computed per batch by swapping the snapshot into those parameters for one no-grad forward, so a
frozen base model is never held twice.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Dict, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ftexp.data.packing import model_inputs
from ftexp.mitigation.base import Mitigation, StageContext

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def trainable_parameters(model: torch.nn.Module) -> Dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@contextmanager
def swapped_in(params: Dict[str, torch.nn.Parameter], values: Dict[str, torch.Tensor]) -> Iterator[None]:
    """Inside the block the parameters hold ``values``; afterwards their own tensors come back.

    Only the ``.data`` pointers move, so nothing is copied and the student's weights are restored
    bit for bit even if the forward raises.
    """
    own = {name: p.data for name, p in params.items()}
    try:
        for name, p in params.items():
            p.data = values[name]
        yield
    finally:
        for name, p in params.items():
            p.data = own[name]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Dropout off (a deterministic teacher), then every submodule's own mode back."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _summed_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """sum over rows and vocabulary of p_t (log p_t - log p_s), both softened by T, in fp32."""
    log_s = torch.log_softmax(student.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum")  # = KL(teacher || student)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float, chunk_rows: int) -> torch.Tensor:
    """T² · mean over completion tokens of KL(teacher ‖ student), with the causal shift
    (``logits[:, :-1]`` predict ``labels[:, 1:]``).

    The fp32 softmaxes are taken ``chunk_rows`` rows at a time and recomputed in backward
    (checkpoint), so at most ``chunk_rows × vocab`` fp32 values per copy are alive at once.
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        return student_logits.new_zeros((), dtype=torch.float32)
    student = student_logits[:, :-1][mask]
    teacher = teacher_logits[:, :-1][mask].detach()
    total = sum(checkpoint(_summed_kl, student[i:i + chunk_rows], teacher[i:i + chunk_rows], temperature,
                           use_reentrant=False)
                for i in range(0, n_tokens, chunk_rows))
    return total * temperature ** 2 / n_tokens


class LwF(Mitigation):
    """Adds ``alpha · T² · KL(teacher ‖ student)`` per completion token to the task loss. ``cfg`` has
    passed :class:`~ftexp.config.schema.LwfConfig`'s rules in the pre-flight."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.teacher: Dict[str, torch.Tensor] = {}
        self.idle = False  # stage 1 of a model trained from scratch: nothing to keep yet

    @property
    def teacher_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.teacher.values())

    def snapshot(self, model: torch.nn.Module) -> None:
        """A copy, not an alias: the optimiser updates the parameters in place."""
        self.teacher = {name: p.detach().clone() for name, p in trainable_parameters(model).items()}
        log.info("lwf: teacher = %d trainable tensors, %.1f MB", len(self.teacher), self.teacher_bytes / 2**20)

    def before_stage(self, ctx: StageContext) -> None:
        # A model that starts from random weights (model=tiny) knows nothing yet: distilling its
        # first stage towards them only holds learning back. Pretrained models keep their base.
        self.idle = ctx.index == 1 and not ctx.pretrained
        if self.idle:
            self.teacher = {}
            log.info("lwf: no teacher in stage 1, the model starts from random weights")
            return
        self.snapshot(ctx.model)

    def teacher_logits(self, model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        params = trainable_parameters(model)
        if params.keys() != self.teacher.keys():
            raise RuntimeError("lwf: the model's trainable parameters changed since the teacher snapshot "
                               f"({len(params)} now, {len(self.teacher)} snapshot)")
        for name, p in params.items():  # the trainer may move or cast the model after before_stage
            t = self.teacher[name]
            if t.device != p.device or t.dtype != p.dtype:
                self.teacher[name] = t.to(device=p.device, dtype=p.dtype)
        with torch.no_grad(), eval_mode(model), swapped_in(params, self.teacher):
            return model(**model_inputs(batch), use_cache=False).logits

    def training_loss(self, loss: torch.Tensor, batch: Dict[str, torch.Tensor], model: torch.nn.Module,
                      outputs: Any = None):
        if self.idle:
            return loss, {}
        if not self.teacher:  # no before_stage: no step has been taken yet, so these are the start weights
            self.snapshot(model)
        teacher = self.teacher_logits(model, batch)
        kd = forward_kl(outputs.logits, teacher, batch["labels"], self.cfg.temperature, self.cfg.vocab_chunk)
        kd = kd * batch.get("token_weight", 1.0)  # DDP: this rank's share of the global batch's mean
        weighted = self.cfg.alpha * kd
        return loss + weighted, {"lwf_kd": kd.detach(), "lwf_ratio": (weighted / loss).detach()}

    def state_dict(self) -> Dict[str, Any]:
        return {"teacher": dict(self.teacher)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.teacher = dict(state["teacher"])
