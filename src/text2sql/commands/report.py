"""``text2sql report``: params, metrics and plots of two revisions and their change, as Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Compare two revisions of the pipeline for review: changed metrics with their
change (and percentage), changed params, and the plots of both revisions overlaid.
Time, throughput and memory figures, which vary from run to run, and unchanged
values are folded into <details> blocks. The numbers are those of
`dvc metrics diff` / `dvc params diff` / `dvc plots diff`; the pull-request
workflow posts the same report with CML.

When the per-question results (--results, read from the workspace, the DVC cache
or the remote) exist at both revisions, the report pairs them: the questions
fixed and broken, McNemar's exact test on them, and bootstrap 95% intervals of
each execution accuracy and of their difference.
"""

EPILOG = """\
examples:
  text2sql report --base main                      # the workspace against main
  text2sql report --base main --head HEAD~1
  text2sql report --base origin/main -o report.md --plots-dir report_plots

exit status: 0 written; 2 a revision is unknown or a dvc command failed.
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="params, metrics and plots of two revisions and their change (Markdown)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="main", metavar="REV",
                   help="git revision to compare against: branch, tag or commit "
                        "(default: %(default)s)")
    p.add_argument("--head", default=None, metavar="REV",
                   help="git revision to compare (default: the workspace, with its "
                        "uncommitted metrics)")
    p.add_argument("--repo", type=Path, default=Path("."), metavar="DIR",
                   help="repository root (default: the current folder)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="write the Markdown to FILE (default: print it)")
    p.add_argument("--plots-dir", type=Path, default=None, metavar="DIR",
                   help="also write the plots diff to DIR (index.html, Vega-Lite specs, and "
                        "PNGs when vl2png is installed) and show them in the report")
    p.add_argument("--results", default="data/evaluation/results.jsonl", metavar="PATH",
                   help="per-question results to pair, a path in the repository "
                        "(default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from text2sql.evaluation.report import make_report

    text = make_report(args.base, args.head, args.repo, args.output, args.plots_dir,
                       args.results)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"report: {args.base} -> {args.head or 'workspace'} written to {args.output}",
              file=sys.stderr)
    return 0
