"""Typed schemas of the ``trainer`` group (see :mod:`ftexp.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import II, DictConfig, ListConfig

from ftexp.config.validate import Problems


FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")


@dataclass
class FsdpConfig:
    """Fully sharded data parallel (``strategy: fsdp``): each decoder layer is one shard unit."""

    sharding_strategy: str = "FULL_SHARD"  # FULL_SHARD | SHARD_GRAD_OP | HYBRID_SHARD | NO_SHARD
    activation_checkpointing: bool = False  # recompute each layer's activations in backward
    cpu_offload: bool = False  # keep the shards (and optimizer state) in CPU memory


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (device, strategy, precision, length of a stage)."""

    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1  # int, list of ids, or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | ...
    precision: str = "32-true"  # 32-true | bf16-mixed | bf16-true | 16-mixed
    max_epochs: int = II("model.max_epochs")  # per stage, unless the stage says otherwise
    max_steps: int = -1  # per stage; -1 = no limit
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 20
    val_check_interval: Optional[float] = None  # None = once per epoch
    # Train on this many batches per epoch (int >= 1) or this share of them (float in (0, 1]); None = all.
    # For a quick check of a config (debug=quick), not for results.
    limit_train_batches: Any = None
    # Validate on this many batches (int >= 1) or this share of them (float in (0, 1]); None = all.
    limit_val_batches: Any = None
    num_workers: int = 0  # data-loader workers
    # Batch examples of similar length (about 2x fewer padded tokens on Banking77). Turn it off when
    # length predicts the label: same-length batches then hold one label each, which slows learning.
    group_by_length: bool = True
    # Checkpoint every epoch and after every stage but the last (resume=true continues from them;
    # a completed job deletes them).
    checkpoints: bool = True
    # Also every this many optimiser steps inside an epoch (None: at epoch ends only): for epochs long
    # enough that redoing one after a kill costs too much. A resumed epoch skips the batches it had done.
    checkpoint_every_n_steps: Optional[int] = None
    # Pack each training step's examples into rows of up to pack_length tokens (None = model.max_length)
    # with a block-diagonal attention mask: the same examples and loss per step, without the padding.
    # Models with a flash-attention kernel or flex_attention get one unpadded row per step instead (no
    # mask; the examples are told apart by their position_ids); other kernels are refused. Validation
    # batches are packed alike.
    packing: bool = False
    pack_length: Optional[int] = None
    # torch.compile the training forward and backward (the first steps, and each new batch shape
    # until shapes are made dynamic, pay the compile time; without dropout, the eager losses within float
    # tolerance).
    compile: bool = False
    # What trainer.compile compiles: "layers", each decoder layer (one compiled graph shared by every
    # layer, so compile time does not grow with depth) and the loss, in the training forward only; or
    # "step", the whole training forward with its loss (more fusion; compile time grows with depth).
    compile_scope: str = "layers"
    # Compute the training loss with the output layer a chunk of tokens at a time (no full logits
    # tensor; in eager mode only rows with a target go through the output layer), for Llama-, Mistral-,
    # Qwen2/3- and GPT-2-type models. Same loss and gradients; not with mitigation=lwf (which reads the
    # logits), trainer=fsdp (which shards the output layer), fp16 precisions or an adapter on the
    # output layer.
    fused_loss: bool = False
    # With precision=bf16-true: the optimizer steps fp32 copies of the weights that train and writes
    # them back rounded (bf16 compute without autocast; updates, and the sum of accumulated micro-batches'
    # gradients, kept in fp32 as bf16-mixed keeps them). 18 bytes per trainable parameter (bf16-mixed
    # 16, pure bf16 8); not with FSDP or DeepSpeed.
    master_weights: bool = False
    fsdp: FsdpConfig = field(default_factory=lambda: FsdpConfig())  # used when strategy=fsdp
    # Recompute each decoder layer's activations in the backward instead of keeping them: less activation
    # memory for about one more forward per step, the same losses. One device or DDP (FSDP:
    # trainer.fsdp.activation_checkpointing).
    activation_checkpointing: bool = False
    deterministic: bool = False
    enable_progress_bar: bool = True  # show training's progress (as progress.mode says); false: none
    # Stop a stage when val/loss has not improved for this many validation checks (None = never),
    # and go back to the weights of the best check: train to convergence whatever the data size.
    early_stopping_patience: Optional[int] = None
    early_stopping_min_delta: float = 0.0
    # One device's peak TFLOP/s for train/mfu; None = the bf16 data-sheet figure for the GPU's name
    # (ftexp.utils.devices), and no MFU on CPU unless set.
    peak_tflops: Optional[float] = None

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not devices_valid(node.devices):
            yield "devices", node.devices, "must be a positive int, -1, 'auto' or a list of device ids"
        if not (node.max_epochs >= 1 or node.max_steps > 0):
            yield "max_epochs", node.max_epochs, "must be at least 1 (or set trainer.max_steps)"
        if node.strategy == "fsdp":
            yield from cls._fsdp_problems(node)
        if node.compile_scope not in ("layers", "step"):
            yield "compile_scope", node.compile_scope, ("must be 'layers' (each decoder layer compiled) or 'step' "
                                                        "(the whole training forward)")
        if node.fused_loss:
            yield from cls._fused_loss_problems(node)
        if node.master_weights:
            yield from cls._master_weights_problems(node)
        yield from cls._count_problems(node)

    @staticmethod
    def _fsdp_problems(t: DictConfig) -> Problems:
        if t.accelerator not in ("gpu", "cuda"):
            yield "accelerator", t.accelerator, ("trainer.strategy=fsdp runs on GPUs only (Lightning's FSDP); use "
                                                 "trainer=fsdp on a GPU node, or trainer=ddp_cpu to test data "
                                                 "parallelism on a CPU")
        if t.fsdp.sharding_strategy not in FSDP_SHARDING:
            yield "fsdp.sharding_strategy", t.fsdp.sharding_strategy, ("must be FULL_SHARD, SHARD_GRAD_OP, "
                                                                       "HYBRID_SHARD or NO_SHARD")
        if t.early_stopping_patience is not None:
            yield "early_stopping_patience", t.early_stopping_patience, (
                "early stopping keeps a copy of the best weights, which FSDP shards; not supported with trainer=fsdp")
        if t.activation_checkpointing:
            yield "activation_checkpointing", True, ("Lightning's FSDP checkpoints the layers it wraps: set "
                                                     "trainer.fsdp.activation_checkpointing=true instead")
        if t.compile:
            yield "compile", True, (
                "torch.compile cannot trace into the units of Lightning's FSDP (torch's FSDP v1 swaps each layer's "
                "flat parameter between its shard and the whole; dynamo fails at the first step, either scope); "
                "set trainer.compile=false with trainer=fsdp, or use trainer=ddp with compile")

    @staticmethod
    def _fused_loss_problems(t: DictConfig) -> Problems:
        if t.strategy == "fsdp":
            yield "fused_loss", True, ("FSDP shards the output layer that the fused loss reads whole; set "
                                       "trainer.fused_loss=false with trainer=fsdp")
        if t.precision.startswith("16"):
            yield "fused_loss", True, (f"with trainer.precision={t.precision!r} (fp16) the fused loss's gradients "
                                       "would underflow before the loss scale applies; use bf16-mixed or "
                                       "bf16-true, or set trainer.fused_loss=false")

    @staticmethod
    def _master_weights_problems(t: DictConfig) -> Problems:
        if t.precision != "bf16-true":
            yield "master_weights", True, (f"keeps fp32 copies of bf16 weights; it needs trainer.precision="
                                           f"'bf16-true', not {t.precision!r} (the mixed and 32-bit precisions keep "
                                           "fp32 weights already; fp16 needs loss scaling)")
        if any(k in str(t.strategy) for k in ("fsdp", "deepspeed")):
            yield "master_weights", True, (f"trainer.strategy={t.strategy!r} shards the weights that the fp32 "
                                           "copies mirror (or keeps its own); use it with "
                                           "trainer.master_weights=false, or master weights with trainer=ddp")

    @staticmethod
    def _count_problems(t: DictConfig) -> Problems:
        if not t.accumulate_grad_batches >= 1:
            yield "accumulate_grad_batches", t.accumulate_grad_batches, "must be >= 1"
        if t.pack_length is not None and not t.packing:
            yield "pack_length", t.pack_length, ("sets the row length of packing, which is off: add "
                                                 "trainer.packing=true (or drop pack_length)")
        if not (t.peak_tflops is None or t.peak_tflops > 0):
            yield "peak_tflops", t.peak_tflops, ("must be > 0 (one device's peak bf16 TFLOP/s, for MFU) or null "
                                                 "(looked up from the GPU's name)")
        for key in ("limit_train_batches", "limit_val_batches"):
            if not batch_limit_valid(t[key]):
                yield key, t[key], ("must be a number of batches (int >= 1), a share of them (float in (0, 1]) "
                                    "or null (all)")
        if not (t.checkpoint_every_n_steps is None or t.checkpoint_every_n_steps >= 1):
            yield "checkpoint_every_n_steps", t.checkpoint_every_n_steps, ("must be >= 1 (or null: checkpoints at "
                                                                           "epoch ends only)")


def batch_limit_valid(limit: Any) -> bool:
    """trainer.limit_*_batches: None, an int >= 1, or a float in (0, 1] (bool is no number here)."""
    if limit is None:
        return True
    if isinstance(limit, bool):
        return False
    if isinstance(limit, int):
        return limit >= 1
    return isinstance(limit, float) and 0 < limit <= 1


def devices_valid(devices: Any) -> bool:
    """trainer.devices: a positive int, -1 (all), 'auto', or a list of device ids."""
    return ((isinstance(devices, int) and (devices >= 1 or devices == -1)) or devices == "auto"
            or (isinstance(devices, (list, ListConfig)) and all(isinstance(x, int) and x >= 0 for x in devices)))
