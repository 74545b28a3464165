"""Cross-entropy fused with the output layer (``trainer.fused_loss``).

A causal LM's loss normally goes through the full logits: batch x length x vocab, upcast to fp32
(8 x 2048 x 128k tokens is 8.4 GB) and read and written several times in the forward and backward.
Here the output layer and the loss run a chunk of tokens at a time and the gradients of the chunk are
taken at once, in the forward, so no more than one chunk's logits ever exists (the approach of fused
linear cross-entropy kernels, in plain PyTorch so that it runs, and is tested, on the CPU too). In eager
mode only the rows that have a target go through the output layer at all: with the prompt masked, as in
ftexp's fine-tuning data, that is a few tokens per example. Under ``torch.compile`` every row goes (static
shapes), and the compiler fuses the element-wise work around the chunk's matmuls.

Only for models whose logits are a plain bias-free linear output layer applied to the decoder's last
hidden state, with nothing after it (no soft-capping or logit scale, no adapter on the head): the model
types in ``FUSABLE`` (Gemma 3 only where it does not soft-cap its logits, as the 270M does not). A batch
without any target gives a loss of 0 (transformers' own loss gives NaN).
Not for fp16 (refused at composition): the gradients are formed before the loss scale is applied.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast

from ftexp.data.packing import model_inputs
from ftexp.errors import FtexpError
from ftexp.models.base import unwrap_adapter

# Causal LMs whose forward is ``logits = lm_head(model(...).last_hidden_state)`` and whose loss is the
# mean token cross-entropy over shifted labels (checked against each model's own loss in the tests).
FUSABLE = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "gemma3_text"})

CHUNK_ELEMENTS = 2**28  # logits per chunk: 1 GiB in fp32 (about 1.5 GiB at the peak), whatever the vocabulary


def fusable(model: torch.nn.Module) -> bool:
    lm = unwrap_adapter(model)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    # exactly nn.Linear: an adapter on the head (peft's LoRA layer) would be skipped by reading .weight
    config = getattr(lm, "config", None)
    return (getattr(config, "model_type", None) in FUSABLE
            and getattr(config, "final_logit_softcapping", None) is None  # Gemma's tanh cap follows the head
            and type(head) is torch.nn.Linear and head.bias is None)


def require_fusable(model: torch.nn.Module) -> None:
    if not fusable(model):
        name = type(unwrap_adapter(model)).__name__
        raise FtexpError(f"trainer.fused_loss=true: model {name} does not compute its logits with a plain linear "
                         f"output layer alone (fusable types: {', '.join(sorted(FUSABLE))}, with no adapter on the "
                         "output layer); set trainer.fused_loss=false for this model")


class LinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, targets) / count, and its gradients, a chunk at a time."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, count: torch.Tensor,
                chunk: int) -> torch.Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = weight.to(dtype)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start:start + chunk].to(dtype)
                t = targets[start:start + chunk]
                logits = (h @ w.T).float()
                lse = torch.logsumexp(logits, dim=-1)
                keep = t != -100
                safe = t.clamp(min=0)
                picked = logits.gather(1, safe[:, None])[:, 0]
                total += ((lse - picked) * keep).sum()
                if not (want_h or want_w):
                    continue
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                probs[torch.arange(len(t), device=t.device), safe] -= 1.0
                g = probs.mul_(keep[:, None]).to(dtype)  # d(sum of losses)/d(logits); / count after the matmuls,
                if want_h:  # in fp32, where the small values of a mean over many tokens still exist
                    grad_h[start:start + chunk] = ((g @ w).float() / count).to(hidden.dtype)
                if want_w:
                    grad_w.add_(g.T @ h)
        if want_w:
            grad_w.div_(count)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return dh, dw, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         chunk: Optional[int] = None) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (batch x length x hidden) against ``labels`` shifted
    by one (position i predicts label i + 1; -100 = no target), as transformers' causal-LM loss."""
    targets = F.pad(labels[:, 1:], (0, 1), value=-100).reshape(-1)
    rows = hidden.reshape(-1, hidden.shape[-1])
    keep = targets != -100
    count = keep.sum().clamp(min=1).to(torch.float32)
    if not torch.compiler.is_compiling():  # data-dependent shape: eager only
        rows, targets = rows[keep], targets[keep]
    chunk = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return LinearCrossEntropy.apply(rows, weight, targets, count, chunk)


def fused_forward(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> CausalLMOutputWithPast:
    """``training.module.forward`` without the logits: ``loss`` only (``logits`` is None)."""
    lm = unwrap_adapter(model)
    hidden = lm.base_model(**model_inputs(batch), use_cache=False).last_hidden_state
    loss = linear_cross_entropy(hidden, lm.get_output_embeddings().weight, batch["labels"])
    return CausalLMOutputWithPast(loss=loss)
