"""Preference pairs for DPO from executed samples: a correct query preferred to a wrong one.

For each question the SFT model's samples have been run (:mod:`text2sql.training.rewards`). The
distinct wrong candidates (a wrong result or an error) are the rejected answers; each is
paired with a correct candidate, or with the gold query when no sample was correct. A
question whose samples were all correct gives no pair: there is nothing to prefer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from text2sql.io import DataError
from text2sql.training.rewards import Reward, is_gold_error


@dataclass
class PairStats:
    """What the samples held, for ``metrics/align.json`` and the no-pair error."""

    questions: int = 0
    with_correct: int = 0  # questions with at least one correct sample
    with_wrong: int = 0  # questions with at least one wrong sample
    with_both: int = 0  # ... with both: what DPO can learn from without the gold query
    gold_errors: int = 0  # questions whose gold query failed: skipped
    candidates: int = 0
    correct_candidates: int = 0
    pairs: int = 0
    pairs_with_gold: int = 0  # pairs whose chosen answer is the gold query

    def metrics(self) -> dict[str, float]:
        n = self.questions or 1
        return {"questions_sampled": self.questions, "pairs": self.pairs,
                "pairs_with_gold_chosen": self.pairs_with_gold,
                "share_with_correct": round(self.with_correct / n, 4),
                "share_with_wrong": round(self.with_wrong / n, 4),
                "share_with_correct_and_wrong": round(self.with_both / n, 4),
                "sample_accuracy": round(self.correct_candidates / (self.candidates or 1), 4),
                "gold_errors": self.gold_errors}


def build_pairs(rows: Sequence[dict[str, Any]], samples: Sequence[Sequence[str]],
                rewards: Sequence[Sequence[Reward]], *, max_pairs_per_question: int = 1
                ) -> tuple[list[dict[str, Any]], PairStats]:
    """DPO pairs (TRL's conversational format) and what the samples held.

    ``samples[i]`` are the raw answers sampled for ``rows[i]``, ``rewards[i]`` their
    rewards. Each distinct wrong answer (in sampled order, up to ``max_pairs_per_question``)
    becomes a pair ``{"prompt", "chosen", "rejected"}``; the chosen answers cycle through
    the distinct correct ones, or are the gold query when none is correct.
    """
    pairs: list[dict[str, Any]] = []
    stats = PairStats()
    for row, texts, scores in zip(rows, samples, rewards, strict=True):
        if any(is_gold_error(r) for r in scores):
            stats.gold_errors += 1
            continue
        stats.questions += 1
        stats.candidates += len(texts)
        correct = list(dict.fromkeys(t.strip() for t, r in zip(texts, scores, strict=True)
                                     if r.execution_match))
        wrong = list(dict.fromkeys(t.strip() for t, r in zip(texts, scores, strict=True)
                                   if not r.execution_match))
        stats.correct_candidates += sum(r.execution_match for r in scores)
        stats.with_correct += bool(correct)
        stats.with_wrong += bool(wrong)
        stats.with_both += bool(correct and wrong)
        chosen = correct or [row["completion"][0]["content"].strip()]
        for k, rejected in enumerate(wrong[:max_pairs_per_question]):
            pairs.append({"prompt": list(row["prompt"]),
                          "chosen": [{"role": "assistant", "content": chosen[k % len(chosen)]}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
            stats.pairs += 1
            stats.pairs_with_gold += not correct
    return pairs, stats


def check_pairs(stats: PairStats) -> None:
    """Fail, saying why and what to change, when the samples gave no pair to train on."""
    if stats.pairs:
        return
    if not stats.questions:
        raise DataError(f"align: no question to sample ({stats.gold_errors} gold queries failed "
                        "on their database); check data/prepared/train.jsonl and the databases")
    raise DataError(
        f"align: no preference pair: every one of the {stats.candidates} candidates sampled for "
        f"{stats.questions} questions was correct, so there is nothing to prefer; raise "
        "align.temperature or align.samples_per_question, or sample more questions "
        "(align.max_questions)")
