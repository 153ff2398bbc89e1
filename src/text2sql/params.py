"""Typed, strict views of ``params.yaml``: one model per stage section.

An unknown key (a mistyped ``-S train.epoch=3``) or a value of the wrong type is
an error that names the key, never silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from text2sql.io import DataError

PARAMS_FILE = Path("params.yaml")


# When the tables linked ones point to by foreign key are shown too (prepare.fk_parents):
# the one definition, read by text2sql.data.linking.
FkParents = Literal["never", "single", "always"]
# How the schema is written (prepare.schema_format) and value hints are found
# (prepare.value_retrieval): the definitions text2sql.data.prompts checks against.
SchemaFormat = Literal["ddl", "compact", "mschema"]
ValueRetrieval = Literal["exact", "fuzzy"]
# What the assistant answer holds (prepare.answer): the SQL alone, or a chain of thought and
# then the SQL in a ```sql block (OmniSQL's format); the definition text2sql.data.prompts reads.
Answer = Literal["sql", "reasoning"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class ColumnParams(Section):
    """Which field of a JSONL line / Hugging Face row holds what (``prepare.columns``)."""

    question: str = "question"
    query: str = "query"
    db_id: str = "db_id"
    evidence: str | None = "evidence"
    cot: str | None = "cot"  # the chain of thought, read with prepare.answer: reasoning


class PrepareParams(Section):
    source: Literal["spider", "bird", "jsonl", "hf", "sparc", "synsql"] = "spider"
    path: str = "data/sample"
    tables: str | None = None
    db_dir: str | None = None
    hf_config: str | None = None
    hub: str | None = None  # a Hugging Face hub dataset id (source hf); path: its databases
    revision: str | None = None  # the hub dataset's tag, branch or commit (required with hub)
    columns: ColumnParams = ColumnParams()
    train_split: str = "train"
    eval_split: str = "dev"
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    schema_format: SchemaFormat = "ddl"
    link_schema: bool = True
    full_schema_max_tables: int = Field(0, ge=0)
    link_values: bool = True
    value_hints: int = Field(5, ge=0)
    value_retrieval: ValueRetrieval = "fuzzy"  # how value hints are found (docs/stages.md)
    sample_rows: int = Field(0, ge=0)
    fk_parents: FkParents = "single"
    max_history_turns: int = Field(5, ge=0)  # earlier turns of a conversation in a prompt
    max_history_tokens: int = Field(400, ge=0)  # ... and at most this many tokens of them
    check_gold: bool = True
    answer: Answer = "sql"  # the assistant answer: sql | reasoning (chain of thought, then SQL)
    workers: int = Field(1, ge=0)  # processes preparing examples (0: one per core); same output
    max_train_examples: int | None = Field(None, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)


class LoraParams(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj",
                                 "gate_proj", "up_proj", "down_proj"]
    # trained in full: the built-in random-weight model needs it (params.yaml); presets set []
    modules_to_save: list[str] = ["embed_tokens", "lm_head"]


class BuiltinModelParams(Section):
    """Shape of the ``builtin:tiny-qwen2`` model made from a config (random weights)."""

    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(512, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(4, ge=1)
    vocab_size: int = Field(2048, ge=300)


class TrainParams(Section):
    model_name: str = "builtin:tiny-qwen2"
    backend: Literal["auto", "unsloth", "peft"] = "auto"
    max_seq_length: int | None = Field(512, ge=16)  # None: the longest training example
    load_in_4bit: bool = False
    lora: LoraParams = LoraParams()
    builtin: BuiltinModelParams = BuiltinModelParams()
    epochs: float = Field(8.0, gt=0)
    learning_rate: float = Field(3.0e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    lr_scheduler: str = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    gradient_checkpointing: bool = False
    packing: bool = False
    batching: Literal["auto", "padding_free", "grouped", "padded"] = "auto"
    seed: int = 0
    logging_steps: int = Field(10, ge=1)
    checkpoint_steps: int = Field(100, ge=1)
    save_merged: bool = False
    num_processes: int = Field(1, ge=1)  # data-parallel processes (one per GPU) under torchrun
    global_batch_size: int | None = Field(None, ge=1)  # None: batch_size x processes x accumulation

    @model_validator(mode="after")
    def _global_batch_divides(self) -> TrainParams:
        per_step = self.batch_size * self.num_processes
        if self.global_batch_size is not None and self.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of "
                f"train.batch_size x train.num_processes = {self.batch_size} x "
                f"{self.num_processes} = {per_step}; set it to a multiple of {per_step}, or "
                "leave it empty to use train.gradient_accumulation_steps")
        return self

    @property
    def accumulation_steps(self) -> int:
        """Gradient accumulation in force: derived from ``global_batch_size`` when it is set."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        return self.global_batch_size // (self.batch_size * self.num_processes)

    @property
    def effective_batch_size(self) -> int:
        """Examples per optimizer step: per device x processes x accumulation."""
        return self.batch_size * self.num_processes * self.accumulation_steps


class InferParams(Section):
    batch_size: int = Field(16, ge=1)  # sequences per batch (prompts x num_samples)
    max_new_tokens: int = Field(128, ge=1)
    num_samples: int = Field(1, ge=1)  # 1: greedy; N > 1: sample N, vote by execution result
    temperature: float = Field(0.3, ge=0.0)
    seed: int = 0
    timeout_s: float = Field(5.0, gt=0)  # per candidate query when voting
    max_rows: int = Field(10000, ge=1)  # rows fetched per candidate when voting
    prefer_nonempty: bool = True  # an empty result votes only when no candidate returns rows
    load_in_4bit: bool = False  # true: the 16-bit base quantized to 4-bit (CUDA); else 16/32-bit
    # Earlier turns of a conversation in the prompt: as in the data (gold), or the model's own SQL
    history: Literal["gold", "predicted"] = "gold"
    backend: Literal["hf", "llama.cpp"] = "hf"  # llama.cpp: a GGUF file (predict/ask --model)
    num_processes: int = Field(1, ge=1)  # questions split across processes under torchrun
    # Self-correction: a candidate that fails or returns no rows is asked again, up to N times
    revise_rounds: int = Field(0, ge=0)


ExportFormat = Literal["merged", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m"]


class ExportParams(Section):
    formats: list[ExportFormat] = []  # empty: nothing exported (the stage costs seconds)
    max_eval_examples: int | None = Field(None, ge=1)  # fidelity check on the first N (None: all)
    min_same_sql: float = Field(0.95, ge=0.0, le=1.0)  # f16 GGUF writes transformers' SQL this often
    max_ex_drop: float = Field(0.02, ge=0.0, le=1.0)  # a GGUF's EX at most this below merged's


class AlignRewardWeights(Section):
    """Weights of the GRPO reward functions (``align.reward_weights``)."""

    execution_match: float = Field(1.0, ge=0.0)  # 1 when the result equals the gold result
    valid_sql: float = Field(0.2, ge=0.0)  # 1 when the query runs without an error


class AlignParams(Section):
    method: Literal["none", "dpo", "grpo"] = "none"
    samples_per_question: int = Field(4, ge=2)  # DPO: candidates sampled; GRPO: group size
    temperature: float = Field(1.0, gt=0.0)
    max_new_tokens: int = Field(128, ge=1)  # longest sampled answer (GRPO's completion length)
    max_questions: int | None = Field(96, ge=1)  # training questions used (None: all)
    max_pairs_per_question: int = Field(2, ge=1)  # DPO pairs from one question, at most
    beta: float = Field(0.1, ge=0.0)  # DPO's beta; GRPO's KL coefficient
    learning_rate: float = Field(1.0e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    batch_size: int = Field(8, ge=1)  # DPO: pairs per step; GRPO: completions per step
    # GRPO's reward: binary (execution_match and valid_sql, weighted by reward_weights) |
    # arctic (one graded reward: 1 for the gold result, 0.1 for a query that runs, else 0)
    reward: Literal["binary", "arctic"] = "binary"
    reward_weights: AlignRewardWeights = AlignRewardWeights()
    timeout_s: float = Field(5.0, gt=0)  # per candidate query
    max_rows: int = Field(10000, ge=1)  # rows fetched per candidate
    seed: int = 0
    logging_steps: int = Field(5, ge=1)
    checkpoint_steps: int = Field(10, ge=1)  # steps between checkpoints in checkpoints/align
    gradient_checkpointing: bool = False  # recompute activations: less memory, slower steps

    @model_validator(mode="after")
    def _whole_groups(self) -> AlignParams:
        if self.method == "grpo" and self.batch_size % self.samples_per_question:
            raise ValueError(
                f"align.batch_size={self.batch_size} must be a multiple of "
                f"align.samples_per_question={self.samples_per_question} with method grpo "
                "(a step holds whole groups of completions of one prompt)")
        return self


class EvaluateParams(Section):
    timeout_s: float = Field(5.0, gt=0)
    max_rows: int = Field(100_000, ge=1)
    workers: int = Field(0, ge=0)
    keep_distinct: bool = False
    report_examples: int = Field(3, ge=0)
    test_suite: StrictBool = True  # every database of a database/<db_id>/*.sqlite folder
    plug_value: StrictBool = False  # test-suite accuracy with gold values plugged in
    # BIRD's metrics (text2sql.evaluation.bird): auto follows the dataset's layout
    semantics: Literal["auto", "spider", "bird"] = "auto"
    gold_timeout_s: float = Field(30.0, gt=0)
    ves_repeats: int = Field(0, ge=0)  # 0: no R-VES
    ves_timeout_s: float = Field(3.0, gt=0)

    @model_validator(mode="after")
    def _ves_repeats_times(self) -> EvaluateParams:
        if self.ves_repeats == 1:
            raise ValueError(
                "evaluate.ves_repeats=1: BIRD's R-VES drops every ratio of a single timing as an "
                "outlier (every reward 0); use 0 (no R-VES) or at least 2 (BIRD uses 100)")
        return self


S = TypeVar("S", bound=Section)

SECTIONS: dict[str, type[Section]] = {
    "prepare": PrepareParams,
    "train": TrainParams,
    "align": AlignParams,
    "infer": InferParams,
    "evaluate": EvaluateParams,
    "export": ExportParams,
}


def parse_section(cls: type[S], data: object, name: str, source: str = "params.yaml") -> S:
    """Validate one section; errors name ``section.key`` and say what was expected."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"{source}: section {name!r} must be a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join([name, *(str(p) for p in err["loc"])])
            if not err["loc"]:  # a check across keys: its message names them
                problems.append(err["msg"].removeprefix("Value error, "))
            elif err["type"] == "extra_forbidden":
                known = ", ".join(_known_keys(cls, err["loc"][:-1]))
                problems.append(f"unknown key {key!r} (known keys here: {known})")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise DataError(f"{source}: " + "; ".join(problems)) from None


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return []
        cls = field.annotation  # type: ignore[assignment]
    return list(cls.model_fields)


def _read_params_file(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: not found (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of sections {sorted(SECTIONS)}")
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise DataError(f"{path}: unknown top-level section(s) {sorted(unknown)}; "
                        f"expected {sorted(SECTIONS)}")
    return data


def load_params(section: str, path: str | Path = PARAMS_FILE) -> Section:
    """Read ``params.yaml`` and return its ``section`` as a validated, typed object."""
    path = Path(path)
    return parse_section(SECTIONS[section], _read_params_file(path).get(section), section,
                         str(path))


def check_all_params(path: str | Path = PARAMS_FILE) -> dict[str, Section]:
    """Validate every section of ``params.yaml``; all problems in one error, by section."""
    path = Path(path)
    data = _read_params_file(path)
    checked: dict[str, Section] = {}
    problems = []
    for name, cls in SECTIONS.items():
        try:
            checked[name] = parse_section(cls, data.get(name), name, str(path))
        except DataError as e:
            problems.append(str(e).removeprefix(f"{path}: "))
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return checked
