"""fp32 master weights for ``trainer.precision=bf16-true`` (``trainer.master_weights``).

Pure bf16 training rounds every update into bf16, whose 8-bit mantissa drops updates smaller than
about 1/256 of a weight: with fine-tuning learning rates most of them. bf16-mixed avoids that by
keeping fp32 weights and casting them at every op (autocast), which costs time. Here the model computes
in bf16 and the optimizer steps fp32 copies of the weights that train (AdamW's moments are fp32 too),
writing them back rounded after each step: bf16 compute with bf16-mixed's treatment of the weights.
Each micro-batch's gradients are formed in bf16, as under autocast, and move onto the copies right after
its backward, so with ``accumulate_grad_batches`` > 1 they add up in fp32 as bf16-mixed's do, and
clipping takes the fp32 norm.

Under DDP, ``reduce_in_fp32`` gives DDP a communication hook that averages each bucket of bf16
gradients over the ranks in fp32 (overlapped with the backward, as DDP's own all-reduce is) and keeps
the unrounded average for the copies: the model's gradients stay the rank's own, and the copies step
with exactly the fp32 mean of the ranks' bf16 gradients, as bf16-mixed's do (its all-reduce is fp32;
DDP's own would add in bf16 and round). The micro-batches before the last skip DDP's all-reduce
(Lightning's ``no_sync``) and have left the model before it runs, so their fp32 sum is averaged over
the ranks here, in a second all-reduce per step; the last one, averaged already, is the same on every
rank, and averaging it again leaves it as it is (exactly with 2, 4, 8 ... ranks, to a rounding
otherwise). The hook sends fp32, twice the bytes of bf16: what bf16-mixed sends.

Memory per trainable parameter: 2 bytes of bf16 weight, 4 of fp32 copy, 4 of fp32 gradient and 8 of
AdamW moments, 18 in all: 2 more than bf16-mixed (fp32 weight and gradient, 16) and 10 more than pure
bf16 (weight, gradient and moments in bf16, 8).
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 copies of ``param_groups``' (low-precision) parameters."""

    def __init__(self, param_groups: List[Dict[str, Any]], **kwargs: Any) -> None:
        self.model_params: List[torch.nn.Parameter] = []
        groups = []
        for group in param_groups:
            params = list(group["params"])
            self.model_params += params
            masters = [torch.nn.Parameter(p.detach().to(torch.float32, copy=True)) for p in params]
            groups.append({**group, "params": masters})
        super().__init__(groups, **kwargs)
        self.masters = [m for g in self.param_groups for m in g["params"]]
        self.reduced: Dict[torch.nn.Parameter, torch.Tensor] = {}  # fp32 averages over the ranks (DDP hook)

    def reduce_in_fp32(self, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        """DDP averages the model's gradients in fp32 and leaves the result here (see the module doc)."""
        ddp.register_comm_hook(self, _fp32_average)

    def accumulate_grads(self) -> None:
        """Add the model's gradients (their fp32 average over the ranks where DDP's hook made one) to the
        fp32 copies' and clear them (they are not needed twice). Called after every backward
        (``on_after_backward``) and again before clipping."""
        for p, m in zip(self.model_params, self.masters):
            if p.grad is not None:  # none: unused on every rank, whatever zeros the hook reduced for it
                grad = self.reduced.pop(p, None)
                grad = p.grad.to(torch.float32) if grad is None else grad
                m.grad = grad if m.grad is None else m.grad.add_(grad)
                p.grad = None
        self.reduced.clear()

    def average_grads_over_ranks(self, world_size: int) -> None:
        """The copies' gradients averaged over the ranks in one flat fp32 all-reduce (gloo has no AVG).
        Every copy takes part, as zeros where this rank has no gradient for it, so that all ranks reduce
        the same layout; a count of the ranks that had one rides along, and a copy none had one for
        keeps none (AdamW then skips it, as it would in one process)."""
        import torch.distributed as dist

        grads = [m.grad if m.grad is not None else torch.zeros_like(m) for m in self.masters]
        had = torch.tensor([float(m.grad is not None) for m in self.masters], device=self.masters[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [had])
        dist.all_reduce(flat)
        flat /= world_size
        *parts, seen = flat.split([g.numel() for g in grads] + [len(grads)])
        for m, part, any_rank in zip(self.masters, parts, seen.tolist()):
            m.grad = part.view_as(m) if any_rank > 0 else None

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        torch._foreach_copy_(self.model_params, self.masters)  # rounded to the model's dtype
        return loss

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "master_weights": [m.detach() for m in self.masters]}  # no second copy

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop("master_weights", None)
        super().load_state_dict(state_dict)
        if saved is not None:  # a resumed run continues from the fp32 weights, not their rounding
            with torch.no_grad():
                torch._foreach_copy_(self.masters, [s.to(m.device) for s, m in zip(saved, self.masters)])
                torch._foreach_copy_(self.model_params, self.masters)


def _fp32_average(optimizer: MasterWeightAdamW, bucket):  # no return annotation: DDP checks it as an object
    """DDP communication hook: the bucket's gradients averaged over the ranks in fp32, kept per parameter
    in ``optimizer.reduced``. DDP gets its bucket back as it was, so the model keeps the rank's own
    gradients (``accumulate_grads`` takes the average instead)."""
    import torch.distributed as dist

    buffer = bucket.buffer()
    total = buffer.to(torch.float32)

    def keep(fut: torch.futures.Future) -> torch.Tensor:
        average = fut.value()[0].div_(dist.get_world_size())
        for p, grad in zip(bucket.parameters(), bucket.gradients()):  # views into the buffer
            start = grad.storage_offset() - buffer.storage_offset()
            optimizer.reduced[p] = average[start:start + grad.numel()].view_as(grad)
        return buffer

    return dist.all_reduce(total, async_op=True).get_future().then(keep)
