"""The diagonal empirical Fisher from per-sample gradients: EWC's importance weights.

Squaring the gradient of a batch-mean loss gives about F/B (biased by the batch size and by the DDP
world size), so each sample's gradient is taken on its own, vectorised with ``torch.func``.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ftexp.models.attention import use_attention

Batch = Mapping[str, torch.Tensor]

# Logit elements held per vmap chunk: vectorised over a whole batch, each sample keeps its full logits
# and their gradient alive at once (16 x 128 tokens of SmolLM2's 49k vocabulary took over 11 GB);
# chunks of samples bound that, at the same result.
LOGITS_PER_CHUNK = 2**24
# Per-sample gradient elements held per chunk (each sample's gradient of every trainable weight, and its
# square): a full fine-tune of SmolLM2-135M with chunks bounded by logits alone (8 short samples) was
# OOM-killed at 18 GB; 2**28 elements (1 GiB in float32) keeps that to one or two samples per chunk.
GRADIENTS_PER_CHUNK = 2**28


def per_sample_fisher(model: torch.nn.Module, batches: Iterable[Batch],
                      params: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Mean over samples of the squared gradient of each sample's completion loss, per parameter.

    ``batches`` are right-padded dicts of ``input_ids`` and ``labels`` (``attention_mask`` optional,
    as :func:`ftexp.data.datamodule.pad_batch` makes them); ``params`` are the parameters to weigh,
    by their names in ``model`` — the others are held fixed. Samples without target tokens add
    nothing and are not counted. The model runs in eval mode (no dropout) and its modes are restored
    afterwards; sums are kept in at least fp32. Under torch.distributed each rank passes its own
    share of the samples and the result is the mean over all of them.
    """
    if not params:
        raise ValueError("per_sample_fisher: no parameters to estimate the Fisher of")
    device = next(iter(params.values())).device
    theta = {name: p.detach() for name, p in params.items()}
    # The other weights enter as detached constants; 4-bit ones (peft=qlora) stay the module's own, since
    # bitsandbytes keeps their quantization state on the parameter object that a detached copy loses.
    fixed = {name: t.detach() for name, t in [*model.named_parameters(), *model.named_buffers()]
             if name not in theta and getattr(t, "quant_state", None) is None}
    squared_sum = {name: torch.zeros_like(p, dtype=torch.promote_types(p.dtype, torch.float32))
                   for name, p in theta.items()}
    count = torch.zeros((), dtype=torch.long, device=device)

    # bitsandbytes' 4-bit kernels (peft=qlora) have no vmap rule: one sample at a time there.
    quantized = any(getattr(t, "quant_state", None) is not None for t in model.parameters())
    squares = looped_squares(model, params) if quantized else vmapped_squares(model, theta, fixed)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        # SDPA kernels have no vmap batching rule (torch falls back to a slow per-sample loop);
        # eager attention is the same maths and vectorises.
        with use_attention(model, "eager"):
            for batch in batches:
                require_right_padding(batch)
                input_ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
                for name, square in squares(input_ids, labels).items():
                    squared_sum[name] += square
                count += (labels[:, 1:] != -100).any(1).sum()
    finally:
        for module, training in modes:
            module.training = training
    if dist.is_available() and dist.is_initialized():
        for name in squared_sum:
            dist.all_reduce(squared_sum[name])
        dist.all_reduce(count)
    return {name: s / count.clamp(min=1) for name, s in squared_sum.items()}


SquaresOf = Callable[[torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]]


def vmapped_squares(model: torch.nn.Module, theta: Mapping[str, torch.Tensor],
                    fixed: Mapping[str, torch.Tensor]) -> SquaresOf:
    """``squares(input_ids, labels)``: per parameter, the sum over a batch's samples of each one's squared
    gradient (in at least fp32), the samples vectorised with ``vmap`` in chunks that bound memory."""
    sample_loss = sample_loss_fn(model, fixed)
    vocab = model.get_output_embeddings().weight.shape[0] if hasattr(model, "get_output_embeddings") else 1
    weights = max(1, sum(p.numel() for p in theta.values()))

    def squares(input_ids: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        chunk = max(1, min(LOGITS_PER_CHUNK // (input_ids.shape[1] * vocab), GRADIENTS_PER_CHUNK // weights))
        grads = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk)(theta, input_ids, labels)
        return {name: g.to(torch.promote_types(g.dtype, torch.float32)).square().sum(0) for name, g in grads.items()}

    return squares


def looped_squares(model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> SquaresOf:
    """As :func:`vmapped_squares`, one sample at a time with plain autograd on the model's own ``params``."""

    def squares(input_ids: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        total: Dict[str, torch.Tensor] = {}
        for sample in looped_grads(model, params, input_ids, labels):
            for name, g in sample.items():
                square = g.to(torch.promote_types(g.dtype, torch.float32)).square()
                total[name] = total[name] + square if name in total else square
        return total

    return squares


def sample_loss_fn(model: torch.nn.Module, fixed: Mapping[str, torch.Tensor]):
    """``loss(theta, input_ids, labels)``: one sample's mean completion loss as a function of the
    weighed parameters ``theta`` (the ``fixed`` ones held), for ``grad`` and ``vmap``."""

    def sample_loss(theta, input_ids, labels):
        logits = functional_call(model, (theta, fixed), args=(),
                                 kwargs={"input_ids": input_ids[None], "use_cache": False}).logits[0]
        return completion_loss(logits, labels)

    return sample_loss


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One sample's mean loss over its target tokens (``logits``: its (T, V) logits)."""
    logits = logits[:-1].to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels[1:]  # causal shift, as transformers does
    total = F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)  # no targets: 0, not NaN


def looped_grads(model: torch.nn.Module, params: Mapping[str, torch.Tensor], input_ids: torch.Tensor,
                 labels: torch.Tensor) -> Iterator[Dict[str, torch.Tensor]]:
    """Each sample's gradient of its completion loss by plain autograd, one sample at a time (the model's
    own ``params``; the same values as the vectorised path, slower)."""
    names = list(params)
    for i in range(input_ids.shape[0]):
        loss = completion_loss(model(input_ids=input_ids[i:i + 1], use_cache=False).logits[0], labels[i])
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        yield {n: g if g is not None else torch.zeros_like(params[n]) for n, g in zip(names, grads)}


def require_right_padding(batch: Batch) -> None:
    """The model runs without the attention mask (its mask building does not vmap under sdpa);
    with right padding causal attention never lets a real token see a pad, so that is exact."""
    mask = batch.get("attention_mask")
    if mask is not None and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError("per_sample_fisher needs right-padded batches (pads only after the tokens)")
