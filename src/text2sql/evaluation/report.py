"""A review report of two revisions: params, metrics and plots, with their change, as Markdown.

    text2sql report --base main                          # the workspace against main
    text2sql report --base main --head HEAD -o report.md --plots-dir report_plots

The pull-request workflow (.github/workflows/pr-report.yaml) posts the same report with
CML. The numbers come from ``dvc params diff --json``, ``dvc metrics diff --json`` and
``dvc plots diff --json``, so the report says what ``dvc metrics diff --md`` says, grouped
for review: changed metrics first, timing and memory figures (which vary from run to
run) and unchanged values folded away. When the per-question results
(``data/evaluation/results.jsonl``) can be read at both revisions (from the workspace, the
DVC cache or the remote), the report also pairs them question by question: the questions
fixed and broken, McNemar's exact test and bootstrap intervals
(:mod:`text2sql.evaluation.significance`), so a reviewer sees whether a change is real.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text2sql.evaluation.significance import PairedComparison, compare_runs
from text2sql.io import RUNTIME_FIELD, DataError, write_text

WORKSPACE = "workspace"
RESULTS = "data/evaluation/results.jsonl"  # the evaluate stage's per-question results
SIGNIFICANCE = 0.05


class ReportError(DataError):
    """A dvc or git command the report needs failed; the message says which and why."""


@dataclass(frozen=True)
class Value:
    """One param or metric at the base and head revisions (None: absent there)."""

    path: str
    name: str
    old: Any
    new: Any

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def is_timing(self) -> bool:
        return bool(RUNTIME_FIELD.search(self.name))


@dataclass
class Plot:
    name: str
    spec: Path | None = None  # Vega-Lite spec with the data of both revisions
    image: Path | None = None  # rendered PNG (needs vl2png) or an image plot's file


@dataclass
class Report:
    base: str
    base_commit: str
    head: str  # a revision, or "workspace"
    head_commit: str
    params: list[Value]
    metrics: list[Value]
    plots: list[Plot] = field(default_factory=list)
    plots_html: Path | None = None
    dvc_metrics_md: str = ""  # `dvc metrics diff --md`, verbatim
    warnings: list[str] = field(default_factory=list)
    results_path: str = RESULTS
    questions: PairedComparison | None = None  # None: results missing at a revision
    question_text: dict[str, str] = field(default_factory=dict)


def run_dvc(args: Sequence[str], repo_dir: Path) -> tuple[str, str]:
    """Run ``dvc ARGS`` (this interpreter's dvc) in ``repo_dir``; return stdout and stderr."""
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=repo_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        detail = msg[-1] if msg else f"exit status {proc.returncode}"
        hint = ""
        if "unknown Git revision" in detail:
            hint = " (fetch it first, e.g. `git fetch origin main`, or name a commit that exists)"
        elif "not inside of a DVC repository" in detail:
            hint = " (run it from the repository root or pass --repo)"
        raise ReportError(f"`dvc {' '.join(args)}` failed in {repo_dir}: {detail}{hint}")
    return proc.stdout, proc.stderr


def short_commit(rev: str, repo_dir: Path) -> str:
    """The abbreviated commit of ``rev`` (``HEAD`` for the workspace)."""
    proc = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=repo_dir,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReportError(f"{repo_dir}: unknown git revision {rev!r} "
                          f"({proc.stderr.strip() or 'git rev-parse failed'}); fetch it first, "
                          "e.g. `git fetch origin main`, or name a commit that exists")
    return proc.stdout.strip()


def parse_diff(diff: dict[str, dict[str, dict[str, Any]]]) -> list[Value]:
    """Flatten ``dvc params/metrics diff --json`` output, sorted by file and name."""
    out = []
    for path, entries in diff.items():
        for name, v in entries.items():
            out.append(Value(path, name, v.get("old"), v.get("new")))
    return sorted(out, key=lambda v: (v.path, v.name))


def read_results(text: str, source: str) -> tuple[dict[str, bool | None], dict[str, str]]:
    """``id -> correct`` (``None`` for a gold error) and ``id -> question`` of a results.jsonl."""
    correct: dict[str, bool | None] = {}
    questions: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ReportError(f"{source}:{lineno}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or "id" not in row or "outcome" not in row:
            raise ReportError(f"{source}:{lineno}: needs \"id\" and \"outcome\" (is it the "
                              "results.jsonl that `dvc repro evaluate` or `text2sql evaluate` "
                              "writes?)")
        key = str(row["id"])
        correct[key] = None if row["outcome"] == "gold_error" else row["outcome"] == "correct"
        questions[key] = str(row.get("question", ""))
    return correct, questions


def results_at(rev: str | None, path: str, repo_dir: Path) -> str:
    """The text of ``path`` at ``rev`` (``None``: the workspace), through DVC's cache or
    remote when git does not hold it. Raises :class:`ReportError` saying how to get it."""
    if rev is None:
        file = repo_dir / path
        if not file.is_file():
            raise ReportError(f"{path}: not in the workspace (run `dvc repro evaluate` or "
                              f"`dvc pull {path}`)")
        return file.read_text(encoding="utf-8")
    import dvc.api

    try:
        return dvc.api.read(path, repo=str(repo_dir), rev=rev, encoding="utf-8")
    except Exception as e:  # dvc raises many kinds; each means the same here
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ReportError(f"{path} at {rev}: cannot be read ({detail}); push it with "
                          "`dvc push` from the run that made it, or `dvc pull` it") from None


def collect_questions(report: Report, base: str, head: str | None, repo_dir: Path) -> None:
    """Pair the per-question results of both revisions; a warning when one is missing."""
    runs = []
    for rev in (base, head):
        label = rev or WORKSPACE
        try:
            runs.append(read_results(results_at(rev, report.results_path, repo_dir),
                                     f"{report.results_path} at {label}"))
        except ReportError as e:
            report.warnings.append(f"no per-question comparison: {e}")
            return
    (base_ok, base_q), (head_ok, head_q) = runs
    report.questions = compare_runs(base_ok, head_ok)
    report.question_text = {**base_q, **head_q}


def collect(base: str, head: str | None = None, repo_dir: str | Path = ".",
            plots_dir: str | Path | None = None, results_path: str = RESULTS) -> Report:
    """Gather the params, metrics (and plots into ``plots_dir``) of ``base`` and ``head``,
    and their per-question results (``results_path``) paired.

    ``head`` None compares the workspace, as ``dvc metrics diff BASE`` does.
    """
    repo_dir = Path(repo_dir)
    revs = [base] if head is None else [base, head]
    report = Report(base=base, base_commit=short_commit(base, repo_dir),
                    head=head or WORKSPACE, head_commit=short_commit(head or "HEAD", repo_dir),
                    params=[], metrics=[], results_path=results_path)
    out, _ = run_dvc(["params", "diff", *revs, "--all", "--json"], repo_dir)
    report.params = parse_diff(json.loads(out or "{}"))
    out, err = run_dvc(["metrics", "diff", *revs, "--all", "--json"], repo_dir)
    report.metrics = parse_diff(json.loads(out or "{}"))
    if "failed to load" in err:
        report.warnings.append(err.strip().splitlines()[-1])
    if report.metrics:
        report.dvc_metrics_md, _ = run_dvc(["metrics", "diff", *revs, "--md"], repo_dir)
    collect_questions(report, base, head, repo_dir)
    if plots_dir is not None:
        collect_plots(report, revs, repo_dir, Path(plots_dir))
    return report


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "plot"


def collect_plots(report: Report, revs: list[str], repo_dir: Path, plots_dir: Path) -> None:
    """Write the plots diff to ``plots_dir``: HTML, one Vega-Lite spec per plot, PNGs.

    PNGs are rendered with ``vl2png`` (npm ``vega-lite``/``vega-cli``, which
    ``iterative/setup-cml`` installs) when it is on PATH; otherwise the report links
    the specs and ``index.html``.
    """
    plots_dir = plots_dir.resolve()
    plots_dir.mkdir(parents=True, exist_ok=True)
    out, _ = run_dvc(["plots", "diff", *revs, "--json", "-o", str(plots_dir / "files")],
                     repo_dir)
    data = json.loads(out or "{}").get("data", {})
    if not data:
        report.warnings.append("no plots: dvc.yaml declares none, or their files are missing "
                               "at both revisions")
        return
    run_dvc(["plots", "diff", *revs, "-o", str(plots_dir / "html")], repo_dir)
    report.plots_html = plots_dir / "html" / "index.html"
    vl2png = shutil.which("vl2png")
    for name, renderers in sorted(data.items()):
        for i, r in enumerate(renderers):
            stem = slug(name) + (f"_{i}" if len(renderers) > 1 else "")
            plot = Plot(name=name)
            if r.get("type") == "vega":
                plot.spec = plots_dir / f"{stem}.vl.json"
                write_text(plot.spec, json.dumps(r["content"], indent=1))
                if vl2png:
                    png = plots_dir / f"{stem}.png"
                    proc = subprocess.run([vl2png, str(plot.spec), str(png)],
                                          capture_output=True, text=True)
                    if proc.returncode == 0 and png.is_file():
                        plot.image = png
                    else:
                        report.warnings.append(f"vl2png could not render {name}: "
                                               f"{proc.stderr.strip()[-300:]}")
            elif r.get("type") == "image" and r.get("url"):
                plot.name = f"{name} ({', '.join(r.get('revisions') or [])})"
                plot.image = Path(r["url"])
            report.plots.append(plot)


def fmt(x: Any) -> str:
    """A value for a table cell: numbers shortened, absent shown as a dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        text = f"{x:.6g}"
        return text if any(c in text for c in ".eni") else text + ".0"
    if isinstance(x, (list, dict)):
        x = json.dumps(x)
    return str(x).replace("|", "\\|").replace("\n", " ")


def fmt_change(old: Any, new: Any) -> str:
    """``+0.15 (+150%)`` for numbers; ``changed``/``added``/``removed`` otherwise."""
    if old is None and new is not None:
        return "added"
    if new is None and old is not None:
        return "removed"
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if not numeric:
        return "changed" if old != new else ""
    diff = new - old
    if diff == 0:
        return "0"
    text = f"{diff:+.6g}"
    if old and math.isfinite(old):
        text += f" ({diff / abs(old):+.1%})"
    return text


def rel(path: Path, start: Path | None) -> str:
    if start is None:
        return path.as_posix()
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def table(rows: list[Value], base: str, head: str, *, change: bool) -> list[str]:
    head_cols = ["Path", "Name", f"`{base}`", f"`{head}`"] + (["Change"] if change else [])
    lines = ["| " + " | ".join(head_cols) + " |",
             "|" + "|".join(["---", "---", "--:", "--:"] + (["--:"] if change else [])) + "|"]
    for v in rows:
        cells = [v.path, v.name, fmt(v.old), fmt(v.new)]
        if change:
            cells.append(fmt_change(v.old, v.new))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def details(summary: str, body: list[str]) -> list[str]:
    return ["<details><summary>" + summary + "</summary>", "", *body, "", "</details>", ""]


def fmt_interval(interval: tuple[float, float], signed: bool = False) -> str:
    low, high = interval
    return f"{low:+.4f} to {high:+.4f}" if signed else f"{low:.4f}–{high:.4f}"


def render_questions(report: Report) -> list[str]:
    """The per-question comparison: accuracies with intervals, fixed and broken, McNemar."""
    q = report.questions
    assert q is not None
    base, head = report.base, report.head
    lines = ["### Per question", "",
             f"`{report.results_path}` of both revisions, paired on {q.n} questions "
             "(gold errors left out)."
             + (f" Scored in one revision only: {q.only_base} in `{base}`, {q.only_head} in "
                f"`{head}` (not counted)." if q.only_base or q.only_head else ""), "",
             f"| | `{base}` | `{head}` | Change |", "|---|--:|--:|--:|",
             f"| execution accuracy | {q.base_accuracy:.4f} | {q.head_accuracy:.4f} "
             f"| {q.difference:+.4f} |",
             f"| 95% interval (bootstrap) | {fmt_interval(q.base_interval)} "
             f"| {fmt_interval(q.head_interval)} | {fmt_interval(q.difference_interval, True)} |",
             ""]
    verdict = ("a real change at the 5% level" if q.p_value < SIGNIFICANCE else
               "within the noise of this many questions (p ≥ 0.05)")
    lines += [f"Fixed **{len(q.fixed)}**, broken **{len(q.broken)}**: McNemar's exact test "
              f"p = {q.p_value:.4g} (two-sided), {verdict}.", ""]
    for title, ids, wrong, right in (("Fixed", q.fixed, base, head),
                                     ("Broken", q.broken, head, base)):
        if ids:
            rows = ["| id | question |", "|---|---|"] + [
                f"| {fmt(k)} | {fmt(report.question_text.get(k, ''))} |" for k in ids]
            lines += details(f"{title} ({len(ids)}): wrong in <code>{wrong}</code>, right in "
                             f"<code>{right}</code>", rows)
    return lines


def render_markdown(report: Report, link_base: Path | None = None) -> str:
    """The report as GitHub-flavoured Markdown; file links relative to ``link_base``."""
    base, head = report.base, report.head
    head_desc = (f"the workspace (on `{report.head_commit}`)" if head == WORKSPACE
                 else f"`{head}` (`{report.head_commit}`)")
    lines = [f"## text2sql report: `{head}` against `{base}`", "",
             f"Base: `{base}` (`{report.base_commit}`) · head: {head_desc}", ""]

    lines += ["### Metrics", ""]
    changed = [m for m in report.metrics if m.changed and not m.is_timing]
    timing = [m for m in report.metrics if m.is_timing]
    same = [m for m in report.metrics if not m.changed and not m.is_timing]
    if not report.metrics:
        lines += ["No metrics at either revision (run `dvc repro`, and commit the metrics).", ""]
    elif changed:
        lines += table(changed, base, head, change=True) + [""]
    else:
        lines += ["No metric changed.", ""]
    if same:
        lines += details(f"Unchanged metrics ({len(same)})", table(same, base, head, change=False))
    if timing:
        lines += details(f"Time, throughput and memory ({len(timing)}; vary from run to run)",
                         table(timing, base, head, change=True))
    if report.dvc_metrics_md.strip():
        lines += details("As printed by <code>dvc metrics diff --md</code>",
                         report.dvc_metrics_md.strip().splitlines())

    if report.questions is not None:
        lines += render_questions(report)

    lines += ["### Params", ""]
    changed_params = [p for p in report.params if p.changed]
    if changed_params:
        lines += table(changed_params, base, head, change=False) + [""]
    else:
        lines += ["No param changed.", ""]
    same_params = [p for p in report.params if not p.changed]
    if same_params:
        lines += details(f"Unchanged params ({len(same_params)})",
                         table(same_params, base, head, change=False))

    if report.plots or report.plots_html:
        lines += ["### Plots", ""]
        for plot in report.plots:
            if plot.image is not None:
                lines += [f"![{plot.name}]({rel(plot.image, link_base)})", ""]
            elif plot.spec is not None:
                lines += [f"- {plot.name}: [Vega-Lite spec]({rel(plot.spec, link_base)})"]
        if report.plots_html is not None:
            lines += ["", f"All plots, interactive: `{rel(report.plots_html, link_base)}` "
                          "(open it in a browser).", ""]
    if report.warnings:
        lines += ["### Warnings", "", *(f"- {w}" for w in report.warnings), ""]
    return "\n".join(lines).rstrip() + "\n"


def make_report(base: str, head: str | None = None, repo_dir: str | Path = ".",
                output: str | Path | None = None, plots_dir: str | Path | None = None,
                results_path: str = RESULTS) -> str:
    """Collect and render the report; write it to ``output`` when given. Returns the Markdown."""
    report = collect(base, head, repo_dir, plots_dir, results_path)
    link_base = Path(output).resolve().parent if output is not None else Path.cwd()
    text = render_markdown(report, link_base)
    if output is not None:
        write_text(output, text)
    return text
