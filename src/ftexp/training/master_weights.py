"""fp32 master weights for ``trainer.precision=bf16-true`` (``trainer.master_weights``).

Pure bf16 training rounds every update into bf16, whose 8-bit mantissa drops updates smaller than
about 1/256 of a weight: with fine-tuning learning rates most of them. bf16-mixed avoids that by
keeping fp32 weights and casting them at every op (autocast), which costs time. Here the model computes
in bf16 and the optimizer steps fp32 copies of the weights that train (AdamW's moments are fp32 too),
writing them back rounded after each step: bf16 compute with bf16-mixed's treatment of the weights.
Each micro-batch's gradients are formed in bf16, as under autocast, and move onto the copies right after
its backward, so with ``accumulate_grad_batches`` > 1 they add up in fp32 as bf16-mixed's do, and
clipping takes the fp32 norm. Under DDP the micro-batches before the last skip DDP's all-reduce
(Lightning's ``no_sync``) and have left the model before it runs, so their fp32 sum is averaged over
the ranks here (the last one, averaged by DDP already, is the same on every rank: averaging it again
changes nothing).
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

    def accumulate_grads(self) -> None:
        """Add the model's gradients to the fp32 copies' and clear them (they are not needed twice).
        Called after every backward (``on_after_backward``) and again before clipping."""
        for p, m in zip(self.model_params, self.masters):
            if p.grad is not None:
                m.grad = p.grad.to(torch.float32) if m.grad is None else m.grad.add_(p.grad)
                p.grad = None

    def average_grads_over_ranks(self, world_size: int) -> None:
        """The copies' gradients averaged over the ranks, as one flat fp32 all-reduce (gloo has no AVG)."""
        import torch.distributed as dist

        grads = [m.grad for m in self.masters if m.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])

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
