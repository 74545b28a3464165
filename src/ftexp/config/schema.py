"""Typed schemas for every config group: the root :class:`Config`, ``optim``, ``stages`` and ``logger``
here; ``model``/``peft``, ``mitigation``, ``trainer``, ``data``, ``evaluator`` and ``report`` in their own
modules (``*_schema.py``), all importable from here.

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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from ftexp.config.data_schema import (
    ChatDataConfig,
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
from ftexp.config.mitigation_schema import (  # noqa: F401 - the schemas are imported from here
    EWC_MODES,
    EwcConfig,
    LwfConfig,
    MitigationConfig,
    NoMitigationConfig,
    ReplayConfig,
    keyword_field,
)
from ftexp.config.model_schema import (  # noqa: F401
    WEIGHT_SOURCES,
    FullFinetuneConfig,
    GgufConfig,
    GgufFileConfig,
    HubModelConfig,
    LoraConfig,
    ModelConfig,
    PeftConfig,
    QLoraConfig,
    TinyModelConfig,
)
from ftexp.config.report_schema import ReportConfig
from ftexp.config.trainer_schema import FSDP_SHARDING, FsdpConfig, TrainerConfig, devices_valid  # noqa: F401
from ftexp.config.validate import Problems, targets

# -------------------------------------------------------------------------------------- logger


@dataclass
class LoggerBackendConfig:
    """Each option adds one logger, under ``logger.backends.<option>``; a list of options runs them all
    (``logger=[tensorboard,wandb]``, each named once; ``none`` alone)."""

    _target_: str = MISSING


@dataclass
class NoLoggerConfig(LoggerBackendConfig):
    _target_: str = "ftexp.tracking.loggers.NoLogger"


@dataclass
class CSVLoggerConfig(LoggerBackendConfig):
    _target_: str = "ftexp.tracking.loggers.CSVLogger"


@dataclass
class WandbLoggerConfig(LoggerBackendConfig):
    _target_: str = "ftexp.tracking.loggers.WandbLogger"


@dataclass
class TensorBoardLoggerConfig(LoggerBackendConfig):
    _target_: str = "ftexp.tracking.backends.TensorBoardLogger"

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        yield from _installed("tensorboard", "tensorboard")


@dataclass
class MLflowLoggerConfig(LoggerBackendConfig):
    _target_: str = "ftexp.tracking.backends.MLflowLogger"

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        yield from _installed("mlflow", "mlflow")


def _installed(module: str, option: str) -> Problems:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        yield "", option, f"logger={option} needs the {module} package: pip install 'ftexp[{option}]'"


@dataclass
class LoggerConfig:
    """Where training curves and results go besides results.json: the loggers chosen with ``logger=``
    (one, or a list: ``logger=[tensorboard,wandb]``), each under ``logger.backends.<name>``. The keys below
    name the run in every logger that has such a name."""

    _target_: str = "ftexp.tracking.loggers.Loggers"
    project: str = "ftexp"  # W&B's project; MLflow's experiment
    entity: Optional[str] = None  # W&B
    mode: str = "${oc.env:WANDB_MODE,offline}"  # W&B: offline | online | disabled (WANDB_MODE wins when set)
    group: Optional[str] = None  # runs of one sweep share a group (W&B's group; an MLflow tag)
    job_type: Optional[str] = None  # W&B's job type; an MLflow tag
    tags: List[str] = field(default_factory=list)  # W&B's tags; MLflow tags (name -> "true")
    name: Optional[str] = None  # the run's name in W&B and MLflow; None = the output folder's name
    # MLflow's tracking server or store; None = a SQLite store in <run dir>/mlflow/ (mlflow.db, artifacts/)
    tracking_uri: Optional[str] = None
    backends: Dict[str, Any] = field(default_factory=dict)  # the chosen loggers, by option name

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        chosen = list(node.backends.keys())
        if "none" in chosen and len(chosen) > 1:
            yield "backends", chosen, ("logger=none means no logger: leave it out of a list of loggers "
                                       f"(logger=[{','.join(c for c in chosen if c != 'none')}])")


@dataclass
class ProgressConfig:
    """How long work (training, evaluation rows, generation, EWC's Fisher, synthetic data) shows how far it is."""

    # auto: Rich bars in a terminal, plain log lines without one (SLURM, nohup, a file) | rich | log | off
    mode: str = "auto"
    every_s: float = 30.0  # plain lines: seconds between two lines of one piece of work (0: every update)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        from ftexp.utils.progress import MODES

        if node.mode not in MODES:
            yield "mode", node.mode, f"must be one of {', '.join(MODES)}"
        if not node.every_s >= 0:
            yield "every_s", node.every_s, "must be >= 0 (seconds)"


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
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # one logger or several (logger=[tensorboard,wandb])
    progress: ProgressConfig = field(default_factory=ProgressConfig)  # how long work shows progress and time left
    optim: OptimConfig = field(default_factory=OptimConfig)
    # More tasks besides `data`, each a data config (`- /data@tasks.cuad: cuad` in a defaults list):
    # stages train on them by name, and every task is evaluated after every stage.
    tasks: Dict[str, Any] = field(default_factory=dict)
    # The rounds of fine-tuning; [] scores the untouched model only (row 0: e.g. the random-weight floor).
    stages: List[StageConfig] = field(default_factory=lambda: [StageConfig()])
    seed: int = 0  # every seed of the run derives from it (results.json -> seeds lists each one)
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
    # Evaluators score at most this many examples of each task's split (and of its red-team prompts): the
    # first ones; None = all. For a quick check of a config (debug=quick), not for results. (evaluator=lm_eval
    # scores benchmarks of its own, not the run's tasks: its own `limit` caps it.)
    limit_eval_examples: Optional[int] = None

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        """The rules across groups (each group's own are on its schema)."""
        yield from cls._mitigation_problems(node)
        yield from cls._quantized_problems(node)
        yield from cls._optimizer_problems(node)
        yield from cls._packing_problems(node)
        if not (node.limit_eval_examples is None or node.limit_eval_examples >= 1):
            yield "limit_eval_examples", node.limit_eval_examples, "must be >= 1 (or null: every example)"
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
    def _quantized_problems(cfg: DictConfig) -> Problems:
        """A 4-bit base (peft=qlora) against what the trainer would do to its weights."""
        t = cfg.trainer
        if not getattr(OmegaConf.get_type(cfg.peft), "quantized_base", False):
            return
        if str(t.precision).endswith("-true") and str(t.precision) != "32-true":
            yield "trainer.precision", t.precision, (
                "casts the whole model to one dtype, which bitsandbytes' 4-bit weights refuse; with peft=qlora use "
                "trainer.precision=bf16-mixed (the 4-bit layers compute in peft.compute_dtype) or 32-true")
        if t.strategy == "fsdp":
            yield "trainer.strategy", "fsdp", ("FSDP would shard the 4-bit weights with their quantization state, "
                                               "which ftexp does not support; use peft=qlora with trainer=gpu or "
                                               "trainer=ddp")

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
    "peft": {"full": FullFinetuneConfig, "lora": LoraConfig, "qlora": QLoraConfig},
    "data": {"classification": ClassificationDataConfig, "generation": GenerationDataConfig,
             "corpus": CorpusDataConfig, "multiple_choice": MultipleChoiceDataConfig, "chat": ChatDataConfig},
    "mitigation": {"none": NoMitigationConfig, "ewc": EwcConfig, "lwf": LwfConfig, "replay": ReplayConfig},
    "evaluator": {"classification": ClassificationEvalConfig, "perplexity": PerplexityEvalConfig,
                  "generation": GenerationEvalConfig, "multiple_choice": MultipleChoiceEvalConfig,
                  "lm_eval": LmEvalConfig, "efficiency": EfficiencyEvalConfig, "human_review": HumanReviewConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"none": NoLoggerConfig, "csv": CSVLoggerConfig, "wandb": WandbLoggerConfig,
               "tensorboard": TensorBoardLoggerConfig, "mlflow": MLflowLoggerConfig},
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
