"""The one LightningModule: causal-LM loss on completion tokens, AdamW, warm-up + cosine."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.utilities import GradClipAlgorithmType
from torch.amp.grad_scaler import OptState

from ftexp.data.packing import model_inputs
from ftexp.mitigation.base import Mitigation, NoMitigation
from ftexp.training.adapter_casts import AdapterInputCasts
from ftexp.training.compiled import CompiledRegions
from ftexp.training.fsdp import clean_name
from ftexp.training.fused_loss import fused_forward, require_fusable
from ftexp.training.master_weights import MasterWeightAdamW
from ftexp.training.stage_cache import rng_states_of_ranks, set_rank_rng_state
from ftexp.utils.ranks import every_rank, own, summed

log = logging.getLogger(__name__)


def completion_loss(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy over completion tokens (labels != -100) of the batch."""
    return forward(model, batch).loss


def forward(model: torch.nn.Module, batch: Dict[str, torch.Tensor]):
    """The model's outputs for a batch, with ``loss`` = mean cross-entropy over the target tokens.
    No KV cache: training never decodes, and with a cache transformers ignores the example
    boundaries that a flattened batch's position_ids mark."""
    return model(**model_inputs(batch), labels=batch["labels"], use_cache=False)


def global_token_weight(labels: torch.Tensor, world_size: int, lent: bool = False) -> torch.Tensor:
    """The factor that rescales a rank's mean over its own target tokens so that DDP's average of the
    ranks' gradients is the gradient of the mean over the whole global batch's target tokens: the same
    step as one process on that batch, however unevenly the ranks' tokens fall. A ``lent`` batch (a
    row another rank counts, see ``RankShare``) has no tokens of its own: weight 0."""
    import torch.distributed as dist

    n = (labels[:, 1:] != -100).sum() * (not lent)
    total = n.detach().clone()
    dist.all_reduce(total)
    return n * world_size / total.clamp(min=1)


def adamw_kernels(implementation: str, device: str, fp16_clipping: bool) -> Dict[str, bool]:
    """AdamW's keyword for ``optim.implementation``. auto is fused on GPUs and CPUs: one kernel reads and
    writes each parameter, gradient and moment once, where foreach (torch's default on GPUs) makes a pass
    per operation and the for-loop (its default on CPUs) a pass per operation and tensor: 4.5x the
    fused step's time for the tiny model, 6.5 % of its training step. Not with fp16's loss scaling and
    clipping (``fp16_clipping``): a fused step unscales the gradients itself, after they were clipped
    scaled. Elsewhere torch's default. compiled: MasterWeightAdamW's compiled step (the config allows it
    with master weights only)."""
    if implementation == "compiled":
        return {"compiled": True}
    if implementation == "auto":
        return {"fused": True} if device in ("cuda", "cpu") and not fp16_clipping else {}
    return {"fused": True} if implementation == "fused" else {"foreach": implementation == "foreach"}


def _is_fsdp(module: Any) -> bool:
    if not torch.distributed.is_available():  # builds without torch.distributed have no FSDP to import
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel

    return isinstance(module, FullyShardedDataParallel)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class StepOptions:
    """How the training step runs (the ``trainer`` keys of the same names); see configure_optimizers and
    train_forward."""

    compile: bool = False
    compile_scope: str = "layers"  # layers: each decoder layer and the loss | step: the whole training forward
    fused_loss: bool = False
    master_weights: bool = False

    @classmethod
    def of(cls, trainer_cfg: Any) -> "StepOptions":
        return cls(**{f.name: trainer_cfg[f.name] for f in dataclasses.fields(cls)})


class FineTuneModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, optim_cfg: Any, lr: float, mitigation: Optional[Mitigation] = None,
                 step: StepOptions = StepOptions()) -> None:
        super().__init__()
        self.model = model
        # see compiled.py: each decoder layer and the loss compiled (training forward and backward), or the step
        compiled, scope = step.compile, step.compile_scope
        self.compiled_regions = CompiledRegions(model) if compiled and scope == "layers" else None
        self.compile_step = compiled and scope == "step"  # see train_forward
        self.adapter_casts = AdapterInputCasts(model)  # off in the training step under autocast (see its file)
        if step.fused_loss:
            require_fusable(model)
        self.fused_loss = step.fused_loss
        self.master_weights = step.master_weights  # see configure_optimizers
        self.optim_cfg = optim_cfg
        self.lr = lr
        self.mitigation = mitigation or NoMitigation()
        self._window_loss: Any = 0.0  # sum of train losses since the last logged step
        self._window_batches = 0
        self._window_end = 0  # global step at which the current window began
        self.losses_at_checkpoint: Dict[str, float] = {}  # what a resumed stage last logged (on_load_checkpoint)
        self._rng_at_checkpoint: Any = None  # every rank's random state, from the checkpoint resumed
        self.strict_loading = False  # checkpoints hold the trainable weights only (see on_save_checkpoint)
        # Sharding (FSDP) flattens parameters to 1-D before configure_optimizers: decide weight decay
        # on their shapes now.
        self._ndim = {n: p.ndim for n, p in model.named_parameters()}

    # --------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Frozen base weights never change: leave them out (a LoRA checkpoint is the adapter's size).
        The random state goes in, so a resumed run draws what an uninterrupted one would."""
        frozen = {f"model.{clean_name(n)}" for n, p in self.model.named_parameters() if not p.requires_grad}
        for key in frozen & checkpoint["state_dict"].keys():
            del checkpoint["state_dict"][key]
        checkpoint["ftexp_rng"] = rng_states_of_ranks()  # every rank's: rank 0 alone writes the file
        # The stage's last losses: a stage resumed from its final checkpoint trains no more, and its
        # summary reports these (the same on every rank: both are reduced over the ranks).
        checkpoint["ftexp_losses"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                                      if k in ("train/loss", "val/loss")}
        # A checkpoint inside an epoch (trainer.checkpoint_every_n_steps) may fall inside train/loss's
        # window: the resumed run's window goes on from this rank's part of it.
        self._roll_window()
        checkpoint["ftexp_window"] = every_rank([float(self._window_loss), self._window_batches, self._window_end])

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if "ftexp_rng" in checkpoint:
            set_rank_rng_state(checkpoint["ftexp_rng"], self.trainer.global_rank)
            self._rng_at_checkpoint = checkpoint["ftexp_rng"]
        self.losses_at_checkpoint = dict(checkpoint.get("ftexp_losses", {}))
        if "ftexp_window" in checkpoint:
            self._window_loss, self._window_batches, self._window_end = own(checkpoint["ftexp_window"],
                                                                            self.trainer.global_rank)

    def forward(self, **batch):
        return self.model(**batch)

    @functools.cached_property
    def train_forward(self):
        """``forward`` (``fused_forward`` with ``fused_loss``), compiled with ``compile_scope=step``. The
        function, not the module: the model's parameter names (checkpoints, the stage cache, saved weights)
        stay as they are and evaluation runs eager. Made at the first step, so the module still pickles
        before training (ddp_spawn)."""
        step = fused_forward if self.fused_loss else forward
        return torch.compile(step) if self.compile_step else step

    def on_fit_start(self) -> None:
        # from_pretrained and the evaluators leave the model in eval mode; Lightning keeps the mode
        # it finds, and dropout (e.g. LoRA's) must be on while training.
        self.model.train()
        optimizer = self._master_weights_optimizer()
        ddp = self.trainer.strategy.model
        if optimizer is not None and isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            optimizer.reduce_in_fp32(ddp)  # DDP's all-reduce in fp32, as bf16-mixed's (see master_weights.py)

    # ----------------------------------------------------------------------------- steps

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.adapter_casts.skip_under_autocast(self.device.type)  # until on_after_backward
        with self.compiled_regions.active() if self.compiled_regions else contextlib.nullcontext():
            outputs = self.train_forward(self.model, batch)
        task_loss = outputs.loss
        if self.trainer.world_size > 1:
            batch["token_weight"] = global_token_weight(batch["labels"], self.trainer.world_size,
                                                        batch.get("lent", False))
            task_loss = task_loss * batch["token_weight"]
        loss, extra = self.mitigation.training_loss(task_loss, batch, self.model, outputs)
        self._window_loss = self._window_loss + task_loss.detach()
        self._window_batches += 1
        # Each self.log costs about a millisecond on CPU (Lightning walks its result objects), so
        # metrics go out only on the steps the logger writes: train/loss is the mean over the window.
        if self._logged_step():
            bs = batch["input_ids"].shape[0]
            self.log("train/loss", self._window_loss / self._window_batches, prog_bar=True, batch_size=bs,
                     sync_dist=self.trainer.world_size > 1)  # each rank's share sums to the global mean
            self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=bs)
            if loss is not task_loss:
                self.log("train/total_loss", loss, batch_size=bs, sync_dist=self.trainer.world_size > 1)
            self._log_mitigation(extra, batch_size=bs)
        return loss

    def _logged_step(self) -> bool:
        """Whether the logger writes this optimizer step's metrics."""
        return (self.trainer.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def _log_mitigation(self, values: Dict[str, Any], batch_size: Optional[int] = None) -> None:
        sync = self.trainer.world_size > 1  # averaged over the ranks, their shares make the global mean
        for name, value in values.items():
            self.log(f"mitigation/{name}", value, batch_size=batch_size, sync_dist=sync)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Resumed inside an epoch: between the restore and this batch the data loader's iterator drew
        # its seed, which an uninterrupted run drew at the epoch's start; draw on from the checkpoint's
        # state. (At an epoch's start, batch 0, the uninterrupted run drew it after its checkpoint too.)
        if self._rng_at_checkpoint is not None and batch_idx > 0:
            set_rank_rng_state(self._rng_at_checkpoint, self.trainer.global_rank)
        self._rng_at_checkpoint = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.adapter_casts.restore()  # should no backward have run
        self._roll_window()

    def _roll_window(self) -> None:
        """A new window starts once the optimiser step that was logged has been taken (with gradient
        accumulation every micro-batch of that step is in the window). Lightning saves a checkpoint
        between a step and this module's on_train_batch_end: on_save_checkpoint rolls it first."""
        step = self.trainer.global_step
        if step != self._window_end and step % max(1, self.trainer.log_every_n_steps) == 0:
            self._window_loss, self._window_batches, self._window_end = 0.0, 0, step

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss x tokens, tokens

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        n = (batch["labels"][:, 1:] != -100).sum()
        self._val_sums += torch.stack([completion_loss(self.model, batch).detach().double() * n, n.double()])

    def on_validation_epoch_end(self) -> None:
        # val/loss is the per-token loss over the whole split: under DDP the ranks' sums are added
        # (a mean of the ranks' means would weigh their tokens unequally).
        sums = self._val_sums
        if self.trainer.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(sums)
        # sync_dist averages a value already equal on every rank (leaving it as it is, exactly with 2, 4 ...
        # ranks); it tells Lightning the epoch-level value is global, which it otherwise warns about.
        val_loss = (sums[0] / sums[1].clamp(min=1)).float()
        self.log("val/loss", val_loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)
        if self.trainer.is_global_zero:  # progress in the log, also where no progress bar is drawn
            train = self.trainer.callback_metrics.get("train/loss")
            log.info("epoch %d, step %d: val/loss %.4f%s", self.trainer.current_epoch, self.trainer.global_step,
                     float(val_loss), f", train/loss {float(train):.4f}" if train is not None else "")

    def unlogged_train_loss(self) -> Optional[float]:
        """The mean task loss of the steps since train/loss was last logged (over every rank: call it on
        all), for a stage with fewer steps than trainer.log_every_n_steps; None if there were none."""
        # (the ranks' shares of each batch's loss add up to world x its mean, their batches to world x B)
        loss, batches = summed([self._window_loss, self._window_batches], self.trainer.world_size, self.device)
        return loss / batches if batches > 0 else None

    # ------------------------------------------------------------------------- optimiser

    def _master_weights_optimizer(self) -> Optional[MasterWeightAdamW]:
        optimizers = self.trainer.optimizers if self.master_weights else []
        return optimizers[0] if optimizers and isinstance(optimizers[0], MasterWeightAdamW) else None

    def on_before_backward(self, loss: torch.Tensor) -> None:
        if self.compiled_regions is not None:  # activation checkpointing reruns the layers in the backward
            self.compiled_regions.on()
        optimizer = self._master_weights_optimizer()
        if optimizer is not None:
            optimizer.before_backward()

    def on_after_backward(self) -> None:
        if self.compiled_regions is not None:
            self.compiled_regions.off()
        self.adapter_casts.restore()
        # Each micro-batch's bf16 gradients join the fp32 sum (see master_weights.py).
        optimizer = self._master_weights_optimizer()
        if optimizer is not None:
            optimizer.after_backward()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Once per optimizer step, after the last micro-batch's backward (and DDP's all-reduce, which
        ends in it) and before Lightning clips the gradients (its precision plugin's ``_after_closure``):
        the gradients are the copies' by then, with the mitigation's term in them."""
        master = self._master_weights_optimizer()
        if master is not None:
            master.before_step(self.trainer.world_size, self.trainer.accumulate_grad_batches > 1)
        logged = self._logged_step()
        with torch.no_grad():
            logs = self.mitigation.gradient_term(self.model, functools.partial(self._gradients_of, optimizer), logged)
        if logs and logged:
            self._log_mitigation(logs)

    def _gradients_of(self, optimizer: torch.optim.Optimizer, names: List[str]) -> List[torch.Tensor]:
        """The gradients the optimizer will step with for these parameters of the model, unscaled: their
        own, or under master weights the fp32 copies' (the compiled step's last micro-batch moved onto
        them first). Zeros where there is none, so that a term can be added in place."""
        self._unscale(optimizer)
        params = dict(self.model.named_parameters())
        stepped = {name: params[name] for name in names}
        master = self._master_weights_optimizer()
        if master is not None:
            master.accumulate_grads()
            copy_of = {id(p): m for m, p in master.model_param_of.items()}
            stepped = {name: copy_of[id(p)] for name, p in stepped.items()}
        for p in stepped.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [p.grad for p in stepped.values()]

    def _unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Under fp16's loss scaling Lightning unscales the gradients before this hook, except for an
        optimizer that unscales them in its step (a fused one): unscale them here, once (the scaler then
        steps the optimizer without its scale, and its check for inf has been made)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler._per_optimizer_states[id(optimizer)]["stage"] is OptState.READY:
            scaler.unscale_(optimizer)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, except where it refuses: under FSDP, whose gradient norm only the root
        module can take over the shards (Lightning's FSDP precision raises for clipping by norm), and for a
        fused AdamW under bf16-mixed (Lightning refuses fused optimizers under any mixed precision, for
        fp16's loss scale, which bf16 has none of); and for the compiled master-weight step, which applies
        clipping's factor itself."""
        algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
        wrapped, plugin = self.trainer.strategy.model, self.trainer.precision_plugin
        master = self._master_weights_optimizer()
        if gradient_clip_val and master is not None and master.compiled:  # the step applies the factor
            if algorithm == GradClipAlgorithmType.NORM:
                master.clip_in_step(gradient_clip_val)
                return
            master.accumulate_grads()  # by value: on the copies' fp32 gradients, as eagerly
        if gradient_clip_val and algorithm == GradClipAlgorithmType.NORM and _is_fsdp(wrapped):
            wrapped.clip_grad_norm_(gradient_clip_val)
        elif (gradient_clip_val and optimizer.defaults.get("fused") and isinstance(plugin, MixedPrecision)
              and plugin.scaler is None):
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                ndim = self._ndim.get(clean_name(name), p.ndim)
                (no_decay if ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        adamw = MasterWeightAdamW if self.master_weights else torch.optim.AdamW
        device = next((p.device.type for g in groups for p in g["params"]), "cpu")
        fp16_clipping = str(self.trainer.precision) in ("16-mixed", "16") and bool(self.trainer.gradient_clip_val)
        optimizer = adamw(groups, lr=self.lr, betas=tuple(cfg.betas),
                          **adamw_kernels(cfg.get("implementation", "auto"), device, fp16_clipping))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(cfg.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
