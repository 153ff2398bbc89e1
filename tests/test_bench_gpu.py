"""bench/bench_gpu.py: importable without torch, its shapes are the real models', its tables print."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def bench_gpu(repo_root):
    spec = importlib.util.spec_from_file_location("bench_gpu", repo_root / "bench" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_importing_the_bench_loads_no_torch(repo_root):
    code = (f"import importlib.util, sys; s = importlib.util.spec_from_file_location('b', "
            f"{str(repo_root / 'bench' / 'bench_gpu.py')!r}); m = importlib.util.module_from_spec(s); "
            "s.loader.exec_module(m); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("shape, billions", [("1.5b", 1.54), ("7b", 7.62)])
def test_shapes_have_the_real_models_parameter_counts(bench_gpu, shape, billions):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**bench_gpu.shape_config(shape)))
    n = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    assert n / 1e9 == pytest.approx(billions, abs=0.01)
    assert bench_gpu.shape_config(shape, layers=4)["num_hidden_layers"] == 4


def test_tables_and_goals_print_for_results_and_failures(bench_gpu):
    run = {"attention": "xformers", "batching": "padding_free", "tokens_per_s": 50000.0, "real_tokens_per_s": 50000.0, "steady_real_tokens_per_s": 60000.0,
           "padding_share": 0.0, "peak_memory_mb": 4000.0, "final_loss": 11.9}
    results = {("1.5b", "unsloth"): run,
               ("1.5b", "peft"): dict(run, steady_real_tokens_per_s=30000.0, peak_memory_mb=9000.0),
               ("7b", "unsloth"): "failed: CUDA out of memory", ("7b", "peft"): "skipped: time budget"}
    table = "\n".join(bench_gpu.training_table(results))
    assert "| 1.5b | unsloth | xformers | padding_free | 50,000 | 50,000 | 60,000 | 0.000 | 4,000 | 11.900 |" in table
    assert "failed: CUDA out of memory" in table
    goals = "\n".join(bench_gpu.goal_lines(results))
    assert "1.5b: Unsloth / PEFT real tokens/s after warm-up 2.00x, peak memory 0.44x" in goals
    assert "speed >= 1.5x met; memory <= 0.5x met; >= 40,000 real tokens/s met" in goals
    assert "7b: no ratio" in goals


def test_steady_state_leaves_the_first_steps_out(repo_root):
    sys.path.insert(0, str(repo_root / "bench"))
    from bench_train import steady_real_tokens_per_s

    ends = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0]  # first step slow (compile), then 1 s
    assert steady_real_tokens_per_s(ends, real_tokens=800.0) == pytest.approx(100.0)
    assert steady_real_tokens_per_s([1.0], 10.0) == 0.0


def test_a_run_past_the_budget_is_killed_and_said_so(bench_gpu):
    """The budget is a hard limit: a run still going when it ends is killed, not waited for."""
    import time

    t0 = time.monotonic()
    out = bench_gpu.run_bounded([sys.executable, "-c", "import time; time.sleep(30)"], 1.0)
    assert time.monotonic() - t0 < 10
    assert out.startswith("killed: past the time budget")
    assert bench_gpu.run_bounded([sys.executable, "-c", "pass"], 0) == "skipped: time budget"
    done = bench_gpu.run_bounded([sys.executable, "-c", "print('ok')"], 30)
    assert done.returncode == 0 and done.stdout.strip() == "ok"
