"""Typed schemas of the ``data`` group: sources, the training mixture, checks and test slices.

A data config is one task. Its own fields name the primary source (the one its validation and
test splits come from); ``extra_sources`` add training examples from more files, weighted. The
validation and test splits are always real and never depend on ``n_train`` or ``synthetic``, so
every job of a sweep is scored on the same examples.

Each schema's ``problems(node)`` holds its value rules (see :mod:`ftexp.config.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ftexp.config.validate import Problems


@dataclass
class SourceConfig:
    """Where examples come from: files in a local folder, else a Hugging Face dataset id."""

    name: Optional[str] = None  # provenance name of the examples (default: the data's name / the file name)
    path: Optional[str] = None  # folder with the files; None = <data_dir>/<subdir>
    subdir: Optional[str] = None  # folder name under the data directory
    hub_id: Optional[str] = None  # Hugging Face dataset id, used when the local files are absent
    hub_revision: Optional[str] = None
    train_file: Optional[str] = "train.jsonl"  # .jsonl, .csv or .parquet; None = no training split
    test_file: Optional[str] = "test.jsonl"
    fields: Dict[str, str] = field(default_factory=dict)  # task field -> field in these records, e.g. {text: utterance}
    weight: float = 1.0  # share of the real training set drawn from this source, relative to the others

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not node.weight >= 0:
            yield "weight", node.weight, "must be >= 0"


# The writer that each data.synthetic.method names (its _target_ when data.synthetic._target_ is null).
SYNTHETIC_WRITERS: Dict[str, str] = {
    "model": "ftexp.synthesis.model_writer.ModelWriter",
    "augment": "ftexp.synthesis.augment_writer.AugmentWriter",
}


@dataclass
class SyntheticConfig:
    """Synthetic training examples, added to the real ones (validation and test stay real).

    ``method=model``: a language model writes them from few-shot prompts built from real training
    examples of each label. The generator is ``generator`` (a model config such as
    ``conf/model/qwen2_5_0_5b.yaml``) or, when null, a fresh copy of the run's model; a generator
    that is not pretrained (``model=tiny``) is first fine-tuned on the real subset.
    ``method=augment``: cheap word-level edits of real examples, for comparison.
    A writer of one's own is a subclass of ``ftexp.synthesis.SyntheticWriter`` named in ``_target_``.
    """

    share: float = 0.0  # fraction of the final training set that is synthetic (0 ... 0.9)
    n: Optional[int] = None  # or exactly this many synthetic examples (overrides share)
    method: str = "model"  # model | augment
    generator: Optional[Any] = None  # a model config; null = the run's model
    finetune_generator: Optional[bool] = None  # null = only when the generator is not pretrained
    generator_epochs: int = 4  # epochs of in-run generator fine-tuning
    # real examples per prompt; null = 3 for a pretrained generator, 0 for one fine-tuned in-run
    shots: Optional[int] = None
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 64
    oversample: float = 1.1  # generate this much more than needed: duplicates and empties are dropped
    max_rounds: int = 6  # give up (with an error) when this many rounds cannot fill the quota
    _target_: Optional[str] = None  # the writer class; null = the one that method names (SYNTHETIC_WRITERS)

    def writer_target(self) -> str:
        """The class that writes the examples."""
        return self._target_ or SYNTHETIC_WRITERS[self.method]

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not 0 <= node.share <= 0.9:
            yield "share", node.share, "must be in [0, 0.9]"
        if not (node.n is None or node.n >= 0):
            yield "n", node.n, "must be >= 0 (or null to use share)"
        if node.method not in SYNTHETIC_WRITERS:
            yield "method", node.method, f"must be {' or '.join(repr(m) for m in SYNTHETIC_WRITERS)}"
        if not node.temperature > 0:
            yield "temperature", node.temperature, "must be > 0"
        if not 0 < node.top_p <= 1:
            yield "top_p", node.top_p, "must be in (0, 1]"
        if not node.oversample >= 1:
            yield "oversample", node.oversample, "must be >= 1"


@dataclass
class ChecksConfig:
    """Sanity and leakage checks run before training."""

    dedupe: bool = True  # drop train examples whose (normalised) text also occurs in validation or test
    max_test_overlap: float = 0.05  # error when more than this fraction of the test set also occurs in train

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        if not 0 <= node.max_test_overlap <= 1:
            yield "max_test_overlap", node.max_test_overlap, "must be in [0, 1]"


@dataclass
class SliceConfig:
    """A named part of the test set that evaluators also report on. Every criterion set must hold."""

    name: str = MISSING
    min_words: Optional[int] = None  # the input has at least this many words
    max_words: Optional[int] = None
    labels: Optional[List[str]] = None  # the gold label is one of these
    max_train_count: Optional[int] = None  # the gold label has at most this many training examples (rare labels)
    field: Optional[str] = None  # a record field ...
    values: Optional[List[str]] = None  # ... whose value is one of these


@dataclass
class RedTeamConfig:
    """Adversarial prompts of a task: their outputs always go to human review, counted apart."""

    prompts: List[str] = field(default_factory=list)  # inputs (the task's text / question), rendered by its prompt_template
    slices: List[str] = field(default_factory=list)  # test slices whose examples are red-team prompts too


@dataclass
class DataConfig(SourceConfig):
    """A task: its sources, how records become prompt -> completion pairs, and the training mixture."""

    _target_: str = MISSING
    name: str = MISSING  # the task's name: stages name their data by it, and other tasks' metrics are prefixed with it
    extra_sources: List[SourceConfig] = field(default_factory=list)  # more training data, mixed by weight
    prompt_template: str = "{text}"  # Python format string over the record's fields
    completion_prefix: str = " "  # put between prompt and completion
    chat_template: bool = True  # wrap the prompt in the tokenizer's chat template when it has one
    val_fraction: float = 0.1  # validation split carved from the primary source's train (split_seed)
    split_seed: int = 0  # fixes the validation split for every run, whatever its seed
    group_field: Optional[str] = None  # records sharing this field stay on one side of the validation split
    n_train: Optional[int] = None  # real training examples (seeded subsample; None = all the weights allow)
    n_test: Optional[int] = None  # score a fixed subset of N test examples (None = all)
    # Compute val/loss on a fixed subset of N validation examples (None = all). The validation split
    # itself, and so the training set, stays as val_fraction made it: this only shortens each check.
    n_val: Optional[int] = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    slices: List[SliceConfig] = field(default_factory=list)
    eval_only: bool = False  # refuse to train on it (e.g. benchmarks with a canary)
    red_team: RedTeamConfig = field(default_factory=RedTeamConfig)

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        yield from super().problems(node)
        if node.path is None and OmegaConf.is_interpolation(node, "name"):
            yield "path", None, ("data=own and data=chat are named after and read the folder data.path: set it to the "
                                 "folder that holds your files")
        if not 0 <= node.val_fraction < 1:
            yield "val_fraction", node.val_fraction, "must be in [0, 1)"
        for key in ("n_train", "n_test", "n_val"):
            if not (node[key] is None or node[key] >= 1):
                yield key, node[key], "must be >= 1 (or null for all)"


@dataclass
class ClassificationDataConfig(DataConfig):
    """Text classification rendered for a causal LM: prompt -> label text."""

    _target_: str = "ftexp.data.classification.ClassificationTask"
    text_field: str = "text"
    label_field: str = "label"
    labels: Optional[List[str]] = None  # the label set; None = the labels seen in train
    multi_label_field: Optional[str] = None  # a list field; records with more than one entry are dropped


@dataclass
class GenerationDataConfig(DataConfig):
    """Question answering / generation: prompt -> free-text answer."""

    _target_: str = "ftexp.data.generation.GenerationTask"
    prompt_template: str = "Question: {question}\nAnswer:"
    question_field: str = "question"
    answer_field: str = "answer"


@dataclass
class CorpusDataConfig(DataConfig):
    """Plain text cut into chunks, for language-model stages and perplexity. The file is split
    contiguously: the last ``test_fraction`` is test, ``val_fraction`` of the rest before it is val."""

    _target_: str = "ftexp.data.corpus.CorpusTask"
    train_file: Optional[str] = "input.txt"
    test_file: Optional[str] = None
    prompt_template: str = ""
    completion_prefix: str = ""
    chat_template: bool = False
    test_fraction: float = 0.1
    chunk_chars: int = 400  # chunks end at a line break near this many characters


@dataclass
class MultipleChoiceDataConfig(DataConfig):
    """Multiple-choice questions (``data=truthfulqa_mc``): a question, its choices and the index of
    the correct one; optionally a second list of choices with 0/1 truth labels (TruthfulQA MC2)."""

    _target_: str = "ftexp.data.multiple_choice.MultipleChoiceTask"
    prompt_template: str = "Q: {question}\nA:"
    question_field: str = "question"
    choices_field: str = "choices"
    answer_field: str = "answer_index"  # index of the correct choice in `choices_field`
    mc2_choices_field: Optional[str] = None  # e.g. mc2_choices
    mc2_labels_field: Optional[str] = None  # e.g. mc2_labels: 1 = true, 0 = false, one per mc2 choice


@dataclass
class ChatDataConfig(DataConfig):
    """Conversations (``data=chat``): OpenAI-style ``messages``, ShareGPT ``conversations`` or Alpaca
    ``instruction``/``input``/``output`` records, trained on their assistant turns and scored on the last."""

    _target_: str = "ftexp.data.chat.ChatTask"
    format: str = "auto"  # messages | sharegpt | alpaca | auto (told apart per record by its fields)
    messages_field: Optional[str] = None  # the field holding the turns; null = messages / conversations
    train_on: str = "last_assistant"  # last_assistant | all_assistant: which assistant turns the loss is on
    prompt_template: str = ""  # unused: the turns are the prompt

    @classmethod
    def problems(cls, node: DictConfig) -> Problems:
        yield from super().problems(node)
        if node.format not in CHAT_FORMATS:
            yield "format", node.format, f"must be one of {', '.join(CHAT_FORMATS)}"
        if node.train_on not in CHAT_TRAIN_ON:
            yield "train_on", node.train_on, f"must be {' or '.join(CHAT_TRAIN_ON)}"


CHAT_FORMATS = ("auto", "messages", "sharegpt", "alpaca")
CHAT_TRAIN_ON = ("last_assistant", "all_assistant")
