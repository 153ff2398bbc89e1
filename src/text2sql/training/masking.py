"""Training examples as token ids with the prompt masked out of the labels.

The loss covers the answer only: prompt tokens carry label -100 and the SQL plus the
end-of-turn token carry their ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from text2sql.io import DataError

IGNORE_INDEX = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_answer_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def tokenize_example(tokenizer: Any, prompt: Sequence[dict[str, str]], answer: str) -> Tokenized:
    """Token ids of prompt + answer, with the prompt masked out of the labels.

    The prompt is the chat template applied with the generation prompt; the answer
    is what the template puts after it for the assistant turn (the SQL and the
    end-of-turn token), without trailing whitespace.
    """
    messages = list(prompt)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently once the answer is "
                         "added; answer-only masking needs a prefix-stable template")
    answer_text = full_text[len(prompt_text):].rstrip()
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    return Tokenized(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids)


def tokenize_rows(tokenizer: Any, rows: Sequence[dict[str, Any]], max_seq_length: int | None
                  ) -> tuple[list[Tokenized], int]:
    """Tokenize prepared rows; drop those longer than ``max_seq_length`` (returned count).

    ``max_seq_length=None`` keeps every row (the length then comes from the data).
    """
    kept, dropped = [], 0
    for row in rows:
        tok = tokenize_example(tokenizer, row["prompt"], row["completion"][0]["content"])
        if max_seq_length is not None and len(tok.input_ids) > max_seq_length:
            dropped += 1
            continue
        kept.append(tok)
    if not kept:
        raise DataError(f"every training example is longer than train.max_seq_length="
                        f"{max_seq_length} tokens: raise it or shorten the prompts")
    if sum(t.n_answer_tokens for t in kept) == 0:
        raise DataError("every label is masked: no answer token would be trained on "
                        "(check the chat template and the completions in data/prepared/train.jsonl)")
    return kept, dropped
