"""Does align help? DPO and GRPO after an under-trained SFT adapter, against more SFT, side by side.

    uv run python bench/bench_align.py                 # train.epochs=3, then dpo + grpo, seed 0
    uv run python bench/bench_align.py --methods dpo --learning-rates 5.0e-6 2.0e-5 5.0e-5
    uv run python bench/bench_align.py --methods grpo --seeds 0 1 2 --max-questions 48
    uv run python bench/bench_align.py --workdir /tmp/ab   # keep the SFT run, reused next time
    uv run python bench/bench_align.py --data /work/shared/spider-train --train-examples 2000 \
        --sft-epochs 5 --sample-stats --max-questions 200 --samples 8  # what DPO could learn

In a copy of the repository (tests/pipeline_run.py's ``copy_source``: the source, no
outputs) the real stages run one after the other: check, prepare and train (``train.epochs``
= ``--sft-epochs``, the under-trained starting point) once; then, for each method, learning
rate and seed, align (with the given ``align.*`` params) followed by infer and evaluate on
the first ``--dev-questions`` of the dev split. The SFT control trains ``--control-epochs``
from scratch (the extra align time given to SFT as one more epoch) and is evaluated the same
way. Every align run starts from the same SFT adapter.

Prints one markdown table: per run the align data (questions, pairs or groups), steps, the
align stage's wall and CPU seconds, the total training (SFT + align) wall and CPU seconds,
and dev EX and valid-SQL share. CPU seconds are those of the stage processes: steadier than
wall seconds on a shared machine. ``--workdir`` keeps the copy; a later run with the same
folder reuses its SFT adapter (and control) instead of training them again.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.pipeline_run import copy_source, env  # noqa: E402

SFT_RECORD = "bench_sft.json"  # wall/CPU seconds of the SFT run, kept in the work folder


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage(repo: Path, name: str) -> tuple[float, float]:
    """Run ``stages/<name>.py`` in ``repo``; its wall and CPU seconds. Fails with its output."""
    wall, cpu = time.perf_counter(), children_cpu_s()
    proc = subprocess.run([sys.executable, f"stages/{name}.py"], cwd=repo, env=env(repo),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed in {repo} ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - wall, children_cpu_s() - cpu


def set_params(repo: Path, section: str, values: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    unknown = set(values) - set(params[section])
    if unknown:
        raise SystemExit(f"params.yaml has no {section}.{sorted(unknown)}")
    params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def read(repo: Path, rel: str) -> dict:
    path = repo / rel
    return json.loads(path.read_text()) if path.is_file() else {}


def evaluate(repo: Path) -> dict:
    """infer + evaluate on the prepared dev questions (models/aligned)."""
    stage(repo, "infer")
    stage(repo, "evaluate")
    return read(repo, "metrics/eval.json")


def train_sft(repo: Path, epochs: float) -> dict:
    """Train ``epochs`` from scratch in ``repo``; the adapter, its seconds and steps."""
    set_params(repo, "train", {"epochs": epochs})
    wall, cpu = stage(repo, "train")
    return {"epochs": epochs, "wall_s": wall, "cpu_s": cpu,
            "steps": read(repo, "metrics/train.json").get("steps")}


def setup(workdir: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """The copied repository with prepared data and the starting SFT adapter (reused when the
    work folder already holds one)."""
    repo = workdir / "repo"
    record_path = workdir / SFT_RECORD
    if record_path.is_file() and (repo / "models/adapter/adapter_config.json").is_file():
        record = json.loads(record_path.read_text())
        if record["epochs"] != args.sft_epochs or record["dev_questions"] != args.dev_questions:
            raise SystemExit(f"{workdir} holds an SFT run of {record}; use another --workdir")
        print(f"reusing the SFT adapter in {repo} ({record['epochs']} epochs)", file=sys.stderr)
        return repo, record
    shutil.rmtree(repo, ignore_errors=True)  # a run that stopped half way
    repo.mkdir(parents=True)
    prepare = {"max_eval_examples": args.dev_questions}
    if args.data:
        prepare.update(path=args.data, max_train_examples=args.train_examples)
    copy_source(repo, {"prepare": prepare})
    stage(repo, "check")
    stage(repo, "prepare")
    if args.adapter:
        shutil.copytree(args.adapter, repo / "models/adapter")
        record = {"epochs": args.sft_epochs, "wall_s": args.adapter_wall_s,
                  "cpu_s": None, "steps": None}
    else:
        record = train_sft(repo, args.sft_epochs)
    set_params(repo, "align", {"method": "none"})
    stage(repo, "align")
    record.update(dev_questions=args.dev_questions, eval=evaluate(repo))
    record_path.write_text(json.dumps(record, indent=2))
    return repo, record


def control(workdir: Path, repo: Path, epochs: float) -> dict:
    """SFT for ``epochs`` from scratch in a copy of ``repo`` (same prepared data), evaluated."""
    path = workdir / f"control_{epochs:g}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ctl = workdir / f"control_{epochs:g}"
    shutil.rmtree(ctl, ignore_errors=True)
    shutil.copytree(repo, ctl, symlinks=True,
                    ignore=lambda d, names: ["models", "metrics"] if Path(d) == repo else [])
    result = train_sft(ctl, epochs)
    set_params(ctl, "align", {"method": "none"})
    stage(ctl, "align")
    result["eval"] = evaluate(ctl)
    path.write_text(json.dumps(result, indent=2))
    shutil.rmtree(ctl)
    return result


def align_run(repo: Path, method: str, lr: float, seed: int, args: argparse.Namespace) -> dict:
    values = {"method": method, "seed": seed, "learning_rate": lr,
              "samples_per_question": args.samples, "max_questions": args.max_questions,
              "temperature": args.temperature, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens}
    values.update(dict(kv.split("=", 1) for kv in args.set))
    values = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in values.items()}
    set_params(repo, "align", values)
    wall, cpu = stage(repo, "align")
    return {"align": read(repo, "metrics/align.json"), "wall_s": wall, "cpu_s": cpu,
            "eval": evaluate(repo), "params": values}


def sample_stats(repo: Path, args: argparse.Namespace) -> dict:
    """What DPO could learn from: the SFT adapter's samples on the first ``--max-questions``
    training questions, executed and paired with the align stage's own code (no training)."""
    import os

    os.chdir(repo)  # db_path in the prepared rows is relative to the repository
    sys.path.insert(0, str(repo / "src"))
    from text2sql.runtime.reproducibility import pin_cpu_numerics

    pin_cpu_numerics()
    from text2sql.io import iter_jsonl
    from text2sql.params import load_params
    from text2sql.training.align import load_trainable, sample_and_score, select_questions
    from text2sql.training.pairs import build_pairs
    from text2sql.training.rewards import ExecutionReward

    params = load_params("align").model_copy(update={
        "max_questions": args.max_questions, "samples_per_question": args.samples,
        "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size, "seed": args.seeds[0]})
    train = Path("data/prepared/train.jsonl")
    rows = select_questions([r for _, r in iter_jsonl(train)], params, str(train))
    model, tokenizer = load_trainable(Path("models/adapter"))
    start, cpu = time.perf_counter(), time.process_time()
    reward = ExecutionReward(timeout_s=params.timeout_s, max_rows=params.max_rows)
    samples, rewards = sample_and_score(model, tokenizer, rows, params, reward, progress=False)
    _, stats = build_pairs(rows, samples, rewards,
                           max_pairs_per_question=params.max_pairs_per_question)
    return {**stats.metrics(), "sample_wall_s": round(time.perf_counter() - start, 1),
            "sample_cpu_s": round(time.process_time() - cpu, 1)}


def fmt(x, digits=0) -> str:
    return "?" if x is None else f"{x:.{digits}f}"


def row(name: str, seed, lr, data: str, steps, wall, cpu, total_wall, total_cpu, ev: dict) -> str:
    return (f"| {name} | {seed} | {lr} | {data} | {steps} | {fmt(wall)} | {fmt(cpu)} | "
            f"{fmt(total_wall)} | {fmt(total_cpu)} | {ev.get('execution_accuracy', '?')} | "
            f"{ev.get('valid_sql_rate', '?')} |")


def align_data(method: str, m: dict) -> str:
    if method == "dpo":
        return (f"{m.get('questions_sampled')} q, {m.get('pairs')} pairs "
                f"({m.get('pairs_with_gold_chosen')} gold chosen); correct+wrong "
                f"{m.get('share_with_correct_and_wrong')}, sample acc {m.get('sample_accuracy')}")
    return (f"{m.get('questions')} q in groups; last reward {m.get('final_reward')}, "
            f"match {m.get('final_execution_match')}, valid {m.get('final_valid_sql')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="*", default=["dpo", "grpo"], choices=["dpo", "grpo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--learning-rates", nargs="+", type=float, default=[2.0e-5])
    p.add_argument("--max-questions", type=int, default=96, help="align.max_questions")
    p.add_argument("--samples", type=int, default=4, help="align.samples_per_question")
    p.add_argument("--temperature", type=float, default=1.0, help="align.temperature")
    p.add_argument("--batch-size", type=int, default=8, help="align.batch_size")
    p.add_argument("--max-new-tokens", type=int, default=128, help="align.max_new_tokens")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="other align params, e.g. beta=0.05 epochs=2")
    p.add_argument("--dev-questions", type=int, default=192,
                   help="dev questions evaluated (prepare.max_eval_examples; the sample has 192)")
    p.add_argument("--sft-epochs", type=float, default=3.0, help="train.epochs of the start")
    p.add_argument("--adapter", type=Path, help="start from this SFT adapter instead of training")
    p.add_argument("--adapter-wall-s", type=float, help="its training wall seconds, for the total")
    p.add_argument("--control-epochs", type=float, default=4.0,
                   help="SFT control: train.epochs from scratch (0: no control)")
    p.add_argument("--data", help="prepare.path: another Spider-layout folder (e.g. spider-train)")
    p.add_argument("--train-examples", type=int, help="prepare.max_train_examples (with --data)")
    p.add_argument("--sample-stats", action="store_true",
                   help="only sample the SFT adapter on --max-questions training questions and "
                        "report what DPO pairs they hold (no align training, no dev)")
    p.add_argument("--workdir", type=Path, help="keep the runs here (reused by a later run)")
    args = p.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-align-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        repo, sft = setup(workdir, args)
        if args.sample_stats:
            stats = sample_stats(repo, args)
            print(f"SFT {sft['epochs']:g} epochs ({sft['wall_s']:.0f} s), dev EX "
                  f"{sft['eval'].get('execution_accuracy')}; samples on training questions: "
                  f"{json.dumps(stats)}")
            return
        lines = ["| run | seed | align lr | align data | steps | align wall s | align CPU s | "
                 "total train wall s | total train CPU s | dev EX | valid SQL |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                 row(f"SFT {sft['epochs']:g} epochs", 0, "-", "-", sft.get("steps"), None, None,
                     sft["wall_s"], sft["cpu_s"], sft["eval"])]
        if args.control_epochs:
            c = control(workdir, repo, args.control_epochs)
            lines.append(row(f"SFT control, {c['epochs']:g} epochs", 0, "-", "-", c["steps"],
                             None, None, c["wall_s"], c["cpu_s"], c["eval"]))
        print("\n".join(lines), flush=True)
        for method in args.methods:
            for lr in args.learning_rates:
                for seed in args.seeds:
                    r = align_run(repo, method, lr, seed, args)
                    total = None if sft["wall_s"] is None else sft["wall_s"] + r["wall_s"]
                    total_cpu = None if sft["cpu_s"] is None else sft["cpu_s"] + r["cpu_s"]
                    line = row(f"+ {method}", seed, f"{lr:g}", align_data(method, r["align"]),
                               r["align"].get("steps"), r["wall_s"], r["cpu_s"], total,
                               total_cpu, r["eval"])
                    lines.append(line)
                    print(line, flush=True)
                    with open(workdir / "runs.jsonl", "a") as f:
                        f.write(json.dumps({"method": method, "lr": lr, "seed": seed, **r}) + "\n")
        print(f"\nSFT start: train.epochs={sft['epochs']:g}; align params: "
              f"max_questions={args.max_questions} samples_per_question={args.samples} "
              f"temperature={args.temperature} batch_size={args.batch_size} "
              f"max_new_tokens={args.max_new_tokens} {' '.join(args.set)}; "
              f"dev questions: {args.dev_questions}\n")
        print("\n".join(lines))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
