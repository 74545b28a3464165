"""fp32 master weights for ``trainer.precision=bf16-true`` (``trainer.master_weights``).

Pure bf16 training rounds every update into bf16, whose 8-bit mantissa drops updates smaller than
about 1/256 of a weight: with fine-tuning learning rates most of them. bf16-mixed avoids that by
keeping fp32 weights and casting them at every op (autocast), which costs time. Here the model computes
in bf16 and the optimizer steps fp32 copies of the weights that train (AdamW's moments are fp32 too),
writing them back rounded after each step: bf16 compute with bf16-mixed's treatment of the weights.
Gradients go to the copies before clipping, so the norm is taken in fp32. They are formed in bf16 as in
pure bf16: with ``accumulate_grad_batches`` > 1 the micro-batches' gradients add up in bf16 (and DDP
averages them in bf16) before they reach the copies.
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

    def load_grads(self) -> None:
        """The model's gradients onto the fp32 copies (and off the model: they are not needed twice).
        Called before clipping (``on_before_optimizer_step``), so the clipped norm is the fp32 one."""
        for p, m in zip(self.model_params, self.masters):
            m.grad = None if p.grad is None else p.grad.to(torch.float32)
            p.grad = None

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
