"""Fuzzy value retrieval: the stored values a question most likely names, spelled or not as stored.

``prepare.value_retrieval: fuzzy`` adds these to the exact matches of
:class:`text2sql.data.values.ValueIndex`. Each value's words are compared with the
question's: the same word or stem, a typo (rapidfuzz's ``fuzz.ratio``), a shared stem
prefix (``Italian`` / ``Italy``, ``Comp.`` / ``Computer``), or an abbreviation (``US`` /
``USA``, ``LA`` / ``Los Angeles``). A value scores the share of its words, weighted by
how rare each is in the database (idf), that the question covers; the best
:data:`PER_COLUMN` values per column above :data:`MIN_SCORE` are returned.

Bounded for big databases: the values read are capped per column and in length by
``values``; at most :data:`MAX_VALUES` are indexed, and indexing stops after
:data:`BUILD_BUDGET_S` seconds (a database that large gets the values indexed by then).
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz import fuzz, process

from text2sql.data.linking import STOPWORDS, stem

# Values indexed per database at most, and seconds spent indexing at most.
MAX_VALUES = 200_000
BUILD_BUDGET_S = 20.0
# A value must score this much (share of its words the question covers) to be shown...
MIN_SCORE = 0.8
# ... and at most this many of one column are.
PER_COLUMN = 2
# A question word that matches more values than this only scores values other words found.
MAX_POSTINGS = 2000
# Typos: words at least this long, at least this similar (rapidfuzz's ratio, 0-100).
MIN_TYPO_LEN = 5
TYPO_RATIO = 82.0
# A shared prefix of at least this many letters, missing at most SUFFIX_SLACK letters of
# the shorter word, links two forms of a word (Italy / Italian, Comp / Computer).
MIN_PREFIX = 3
SUFFIX_SLACK = 2
# Columns with at most this many distinct values are codes: a one-letter value there
# matches the first letter of a question word (F / female).
CODE_COLUMN_VALUES = 4
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Retrieved:
    """A stored value the question most likely names, and how sure the match is (0-1)."""

    table: str
    column: str
    value: str
    score: float
    words: int  # the value's words the question matched


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class ValueRetriever:
    """An index of one database's text values by their words (see the module docstring)."""

    def __init__(self, columns: dict[tuple[str, str], list[str]]):
        self.values: list[tuple[str, str, str]] = []
        self.value_words: list[tuple[str, ...]] = []
        self.postings: dict[str, list[int]] = {}
        self.code_columns: set[tuple[str, str]] = set()
        self.code_columns_upper: set[tuple[str, str]] = set()  # all values like 'CA', 'NY' 
        stop = time.monotonic() + BUILD_BUDGET_S
        self.complete = True  # False when the caps or the time budget cut the index short
        for (table, column), values in columns.items():
            distinct = list(dict.fromkeys(values))
            if len(distinct) <= CODE_COLUMN_VALUES:
                self.code_columns.add((table, column))
            if distinct and all(2 <= len(v) <= 3 and v.isalpha() and v.isupper()
                                for v in distinct):
                self.code_columns_upper.add((table, column))
            for value in distinct:
                if len(self.values) >= MAX_VALUES or time.monotonic() > stop:
                    self.complete = False
                    break
                ws = tuple(_words(value))
                if not ws:
                    continue
                vid = len(self.values)
                self.values.append((table, column, value))
                self.value_words.append(ws)
                for w in set(ws):
                    self.postings.setdefault(w, []).append(vid)
        # For abbreviations: values by their words' initials, short values by their first
        # letters, one-letter codes of small columns by their letter.
        self.by_initials: dict[str, list[int]] = {}
        self.short: dict[str, list[tuple[str, int]]] = {}
        self.codes: dict[str, list[int]] = {}
        self.state_codes: dict[str, list[tuple[str, int]]] = {}
        for vid, ws in enumerate(self.value_words):
            value = self.values[vid][2]
            if 2 <= len(ws) <= 4:
                self.by_initials.setdefault("".join(w[0] for w in ws), []).append(vid)
            elif len(ws) == 1 and 2 <= len(value) <= 4:
                self.short.setdefault(ws[0][0], []).append((ws[0], vid))
                if self.values[vid][:2] in self.code_columns_upper and len(value) <= 3:
                    self.state_codes.setdefault(ws[0][0], []).append((ws[0], vid))
            elif len(value) == 1 and self.values[vid][:2] in self.code_columns:
                self.codes.setdefault(value.lower(), []).append(vid)
        self.vocabulary = sorted(self.postings)
        self._near: dict[int, list[str]] = {}  # by word length: the words near that length
        self.by_length: dict[int, list[str]] = {}
        for w in self.vocabulary:
            self.by_length.setdefault(len(w), []).append(w)
        self._stems: dict[str, list[str]] = {}
        for w in self.vocabulary:
            self._stems.setdefault(stem(w), []).append(w)
        n = max(len(self.values), 1)
        self.idf = {w: math.log(1 + n / len(p)) for w, p in self.postings.items()}

    def __len__(self) -> int:
        return len(self.values)

    def _similar(self, word: str) -> dict[str, float]:
        """Vocabulary words that may be ``word`` as stored, with a similarity (0-1)."""
        found: dict[str, float] = {}

        def add(w: str, s: float) -> None:
            if s > found.get(w, 0.0):
                found[w] = s

        if word in self.postings:
            add(word, 1.0)
        for w in self._stems.get(stem(word), ()):
            add(w, 0.95)
        if len(word) >= MIN_PREFIX:
            # Stored words sharing a long prefix with the word (Italy / Italian, Mar / March).
            start = bisect_left(self.vocabulary, word[:MIN_PREFIX])
            for w in self.vocabulary[start:start + 500]:
                if not w.startswith(word[:MIN_PREFIX]):
                    break
                shared = _shared_prefix(w, word)
                if shared >= min(len(w), len(word)) - SUFFIX_SLACK and shared >= MIN_PREFIX:
                    add(w, 0.8 + 0.1 * shared / max(len(w), len(word)))
        if len(word) >= MIN_TYPO_LEN:
            # Only words of a near length can be this similar: 2 * shorter / both >= ratio.
            n = len(word)
            if n not in self._near:
                self._near[n] = [w for k, ws in self.by_length.items()
                                 if 200 * min(n, k) / (n + k) >= TYPO_RATIO for w in ws]
            for w, ratio, _ in process.extract(word, self._near[n], scorer=fuzz.ratio,
                                               score_cutoff=TYPO_RATIO, limit=20):
                add(w, ratio / 100)
        return found

    def retrieve(self, question: str, per_column: int = PER_COLUMN,
                 min_score: float = MIN_SCORE) -> list[Retrieved]:
        """The values ``question`` most likely names: best first, ``per_column`` per column."""
        raw = _WORD.findall(question)
        asked = [w.lower() for w in raw]
        content = [w for w in dict.fromkeys(asked) if w not in STOPWORDS and len(w) >= 2]
        # Similarity of each stored word to its best question word.
        best: dict[str, float] = {}
        for q in content:
            for w, s in self._similar(q).items():
                best[w] = max(best.get(w, 0.0), s)
        candidates: set[int] = set()
        for w in best:
            if len(self.postings[w]) <= MAX_POSTINGS:
                candidates.update(self.postings[w])
        scores: dict[int, tuple[float, int]] = {}
        asked_set = set(asked)
        for vid in candidates:
            ws = self.value_words[vid]
            weights = [self.idf[w] * (0.2 if w in STOPWORDS else 1.0) for w in ws]
            got = [best.get(w, 1.0 if w in asked_set and w in STOPWORDS else 0.0) for w in ws]
            total = sum(weights)
            matched = sum(1 for g in got if g > 0)
            if total and matched:
                scores[vid] = (sum(a * b for a, b in zip(weights, got, strict=True)) / total,
                               matched)
        for vid, matched in self._abbreviations(raw, content):
            scores[vid] = max(scores.get(vid, (0.0, 0)), matched)
        ranked = sorted((s, -len(self.values[v][2]), v, m) for v, (s, m) in scores.items()
                        if s >= min_score)
        out: list[Retrieved] = []
        per: dict[tuple[str, str], int] = {}
        for s, _, vid, m in reversed(ranked):
            table, column, value = self.values[vid]
            if per.get((table, column), 0) >= per_column:
                continue
            per[(table, column)] = per.get((table, column), 0) + 1
            out.append(Retrieved(table, column, value, round(s, 4), m))
        return out

    def _abbreviations(self, raw: Iterable[str], content: list[str]
                       ) -> list[tuple[int, tuple[float, int]]]:
        """Values a short capitalized word abbreviates (US: 'USA', LA: 'Los Angeles'), and the
        one-letter codes of small columns a question word starts with (female: 'F')."""
        found = []
        caps = {w.lower() for w in raw if w.isupper() and 2 <= len(w) <= 4}
        for c in caps:
            found += [(vid, (0.9, len(c))) for vid in self.by_initials.get(c, ())]
        for c in caps:
            found += [(vid, (0.85, 1)) for w, vid in self.short.get(c[0], ())
                      if w != c and w.startswith(c)]
        for letter in {w[0] for w in content}:
            found += [(vid, (0.8, 1)) for vid in self.codes.get(letter, ())]
        # A column of codes like 'CA' and a proper noun they abbreviate (California): the
        # code whose letters come earliest in the word.
        for name in {w.lower() for w in list(raw)[1:] if w[:1].isupper() and len(w) >= 4}:
            ranked = sorted((_abbreviates(code, name), vid)
                            for code, vid in self.state_codes.get(name[0], ()))
            ranked = [(pos, vid) for pos, vid in ranked if pos]
            found += [(vid, (0.8 + 0.1 / pos, 1)) for pos, vid in ranked
                      if pos == ranked[0][0]]
        return found


def _abbreviates(code: str, word: str) -> int:
    """Where the second letter of ``code`` is found in ``word`` when all of ``code`` is, in
    order, with its first letter first (``ca`` in ``california``: 1); else 0."""
    if not code or code[0] != word[0]:
        return 0
    at, first = 0, 0
    for letter in code[1:]:
        at = word.find(letter, at + 1)
        if at < 0:
            return 0
        first = first or at
    return first


def _shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
