"""Is a change in execution accuracy real? Paired tests over the same questions.

Two runs scored on the same questions differ only where one is right and the other wrong.
McNemar's exact test asks whether the ``fixed`` and ``broken`` questions split more
unevenly than a fair coin would; the paired bootstrap resamples questions (both runs
together) for an interval of the difference. Fixed seeds: the same results give the same
numbers on every machine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95
_CHUNK = 1_000  # resamples drawn at once: memory stays at CHUNK x questions indices


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided p-value of McNemar's exact test: the discordant pairs as Binomial(n, 1/2).

    >>> mcnemar_exact(9, 1)
    0.021484375
    """
    n, k = fixed + broken, min(fixed, broken)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _percentiles(values: Any, level: float) -> tuple[float, float]:
    import numpy as np

    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return round(float(low), 4), round(float(high), 4)


def _resampled_means(columns: Sequence[Sequence[bool]], samples: int, seed: int):
    """Means of each column over the same ``samples`` resamples of the rows (questions)."""
    import numpy as np

    data = np.asarray(columns, dtype=np.float64)  # (columns, questions)
    n = data.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((data.shape[0], samples))
    for start in range(0, samples, _CHUNK):
        size = min(_CHUNK, samples - start)
        idx = rng.integers(0, n, size=(size, n))
        out[:, start:start + size] = data[:, idx].mean(axis=2)
    return out


def bootstrap_interval(correct: Sequence[bool], samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of ``correct`` (one bool per question)."""
    if not correct:
        return 0.0, 0.0
    return _percentiles(_resampled_means([correct], samples, seed)[0], level)


def paired_bootstrap_difference(base: Sequence[bool], head: Sequence[bool],
                                samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                                level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``mean(head) - mean(base)``, questions resampled in pairs."""
    if len(base) != len(head):
        raise ValueError(f"paired samples differ in length: {len(base)} and {len(head)}")
    if not base:
        return 0.0, 0.0
    means = _resampled_means([base, head], samples, seed)
    return _percentiles(means[1] - means[0], level)


@dataclass
class PairedComparison:
    """Two runs on the questions both scored (gold errors, in either run, left out)."""

    n: int
    base_accuracy: float
    head_accuracy: float
    base_interval: tuple[float, float]
    head_interval: tuple[float, float]
    difference_interval: tuple[float, float]
    p_value: float
    fixed: list[str] = field(default_factory=list)  # ids wrong in base, right in head
    broken: list[str] = field(default_factory=list)  # ids right in base, wrong in head
    only_base: int = 0  # scored in one run only: not paired, not counted
    only_head: int = 0

    @property
    def difference(self) -> float:
        return round(self.head_accuracy - self.base_accuracy, 4)


def compare_runs(base: Mapping[str, bool | None], head: Mapping[str, bool | None]
                 ) -> PairedComparison:
    """Pair two runs by question id. Values: correct or not; ``None`` for a gold error."""
    base_ok = {k: v for k, v in base.items() if v is not None}
    head_ok = {k: v for k, v in head.items() if v is not None}
    common = [k for k in base_ok if k in head_ok]
    b = [bool(base_ok[k]) for k in common]
    h = [bool(head_ok[k]) for k in common]
    fixed = [k for k in common if head_ok[k] and not base_ok[k]]
    broken = [k for k in common if base_ok[k] and not head_ok[k]]
    n = len(common)
    rate = lambda xs: round(sum(xs) / n, 4) if n else 0.0  # noqa: E731
    return PairedComparison(
        n=n, base_accuracy=rate(b), head_accuracy=rate(h),
        base_interval=bootstrap_interval(b), head_interval=bootstrap_interval(h),
        difference_interval=paired_bootstrap_difference(b, h),
        p_value=mcnemar_exact(len(fixed), len(broken)), fixed=fixed, broken=broken,
        only_base=len(base_ok.keys() - head_ok.keys()),
        only_head=len(head_ok.keys() - base_ok.keys()))
