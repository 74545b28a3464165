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

``compiled=True`` (``optim.implementation=compiled``) steps with one torch.compile'd function that
casts each bf16 gradient, scales it by clipping's factor, updates the copy and its moments and writes the
rounded weight back, in one pass over memory per weight. The eager path moves about 52 bytes per weight
after the backward (the fp32 gradient written and read twice for clipping, a fused AdamW step, the
write-back); this one about 30, and a gradient that never exists in fp32 (16 bytes per weight in all).
The last micro-batch's gradients therefore stay in bf16 until the step (earlier ones still join the fp32
sum before the next backward adds to them), and clipping by norm takes the fp32 norm of what the step
will use and hands the step its factor instead of scaling the gradients itself.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 copies of ``param_groups``' (low-precision) parameters."""

    def __init__(self, param_groups: List[Dict[str, Any]], compiled: bool = False, **kwargs: Any) -> None:
        self.model_params: List[torch.nn.Parameter] = []
        groups = []
        for group in param_groups:
            params = list(group["params"])
            self.model_params += params
            masters = [torch.nn.Parameter(p.detach().to(torch.float32, copy=True)) for p in params]
            groups.append({**group, "params": masters})
        super().__init__(groups, **kwargs)
        self.masters = [m for g in self.param_groups for m in g["params"]]
        self.model_param_of = dict(zip(self.masters, self.model_params))
        self.reduced: Dict[torch.nn.Parameter, torch.Tensor] = {}  # fp32 averages over the ranks (DDP hook)
        self.compiled = compiled
        if compiled:
            if any(g["amsgrad"] or g["maximize"] for g in self.param_groups):
                raise ValueError("the compiled master-weight step has no amsgrad or maximize")
            self.grad_factor: Optional[torch.Tensor] = None  # clipping's, for the next step (clip_in_step)
            # Not fullgraph: past dynamo's recompile limit (many models or settings in one process) a
            # fullgraph function raises, this one runs eagerly.
            self._update = torch.compile(_adamw_on_copies, dynamic=False)
            self._lrs: List[torch.Tensor] = []  # each group's rate as a tensor: a new rate does not recompile

    def reduce_in_fp32(self, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
        """DDP averages the model's gradients in fp32 and leaves the result here (see the module doc)."""
        ddp.register_comm_hook(self, _fp32_average)

    def accumulate_grads(self) -> None:
        """Add the model's gradients (their fp32 average over the ranks where DDP's hook made one) to the
        fp32 copies' and clear them (they are not needed twice)."""
        for p, m in zip(self.model_params, self.masters):
            if p.grad is not None:  # none: unused on every rank, whatever zeros the hook reduced for it
                grad = self.reduced.pop(p, None)
                grad = p.grad.to(torch.float32) if grad is None else grad
                m.grad = grad if m.grad is None else m.grad.add_(grad)
                p.grad = None
        self.reduced.clear()

    def after_backward(self) -> None:
        """A micro-batch's gradients join the fp32 sum right after its backward; the compiled step
        leaves them in bf16 (see ``before_backward``)."""
        if not self.compiled:
            self.accumulate_grads()

    def before_backward(self) -> None:
        """Compiled step: an earlier micro-batch's gradients join the fp32 sum before this backward would
        add to them in bf16; the last one's stay for the step to cast."""
        if self.compiled:
            self.accumulate_grads()

    def before_step(self, world_size: int, accumulating: bool) -> None:
        """The gradients of the step on the copies, in fp32 and averaged over the ranks; except a compiled
        step's single micro-batch, whose gradients the step casts itself."""
        if self.compiled and all(m.grad is None for m in self.masters):
            return
        self.accumulate_grads()
        if world_size > 1 and accumulating:
            self.average_grads_over_ranks(world_size)

    def clip_in_step(self, max_norm: float) -> None:
        """Compiled step: clipping by norm as ``torch.nn.utils.clip_grad_norm_`` does it (the fp32 norm
        of every gradient together, factor ``max_norm / (norm + 1e-6)`` up to 1), applied by the step."""
        grads = [g for _, _, g in self._pending()]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)))
            self.grad_factor = (max_norm / (norm + 1e-6)).clamp(max=1.0)

    def _pending(self, masters: Optional[List[torch.nn.Parameter]] = None):
        """(model weight, copy, gradient) for every copy with a gradient for the step: the fp32 sum of
        the micro-batches, else the last one's as the backward (or DDP's hook, fp32) left it."""
        for m in self.masters if masters is None else masters:
            p = self.model_param_of[m]
            if m.grad is not None:
                yield p, m, m.grad
            elif p.grad is not None:  # none: unused on every rank, whatever zeros the hook reduced for it
                yield p, m, self.reduced.get(p, p.grad)

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
        if not self.compiled:
            loss = super().step(closure)
            torch._foreach_copy_(self.model_params, self.masters)  # rounded to the model's dtype
            return loss
        loss = None
        if closure is not None:  # Lightning's closure: the backward, on_before_optimizer_step, clipping
            with torch.enable_grad():
                loss = closure()
        if not self._lrs:
            device = self.masters[0].device
            self._lrs = [torch.zeros((), device=device) for _ in self.param_groups]
            self._one = torch.ones((), device=device)  # the factor unclipped
        factor = self.grad_factor if self.grad_factor is not None else self._one
        for group, lr in zip(self.param_groups, self._lrs):
            pending = list(self._pending(group["params"]))
            if not pending:
                continue
            params, masters, grads = (list(t) for t in zip(*pending))
            states = [self._state(m) for m in masters]
            lr.fill_(group["lr"])
            self._update(params, grads, masters, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                         [s["step"] for s in states], lr, factor, beta1=group["betas"][0],
                         beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"])
            for p in params:
                p.grad = None
        self.reduced.clear()
        self.grad_factor = None
        return loss

    def _state(self, master: torch.nn.Parameter) -> Dict[str, torch.Tensor]:
        """AdamW's state as torch keeps it, so checkpoints move between implementations."""
        state = self.state[master]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=master.device)
            state["exp_avg"] = torch.zeros_like(master, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(master, memory_format=torch.preserve_format)
        elif state["step"].device != master.device:  # loaded from a checkpoint of torch's foreach AdamW
            state["step"] = state["step"].to(master.device)
        return state

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


def _adamw_on_copies(params, grads, masters, exp_avgs, exp_avg_sqs, steps, lr, grad_factor, *,
                     beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """torch's AdamW step (decoupled weight decay, bias-corrected moments) on the fp32 copies, from the
    gradients as they are (bf16 or fp32) times clipping's factor (1 unclipped: a tensor either way, one
    graph), the weights written back rounded. Compiled, each weight's update is one kernel: gradient, copy
    and moments read once, written once."""
    for p, g, m, exp_avg, exp_avg_sq, step in zip(params, grads, masters, exp_avgs, exp_avg_sqs, steps):
        g = g.float() * grad_factor
        step.add_(1)
        m.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**step).sqrt()).add_(eps)
        m.sub_(exp_avg / denom * (lr / (1 - beta1**step)))
        p.copy_(m)
