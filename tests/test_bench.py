"""The benchmark command runs on the CPU and writes its table as JSON."""

import json

from resnet_exp.runs.bench import run_bench


def test_bench_writes_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = run_bench(["resnet8"], iters=2, device="cpu", out=str(out), profile="smoke", workers=0)
    doc = json.loads(out.read_text())
    assert doc["results"] == rows and rows[0]["model"] == "resnet8"
    assert doc["complete"]  # rewritten after every model: a cut benchmark's file says it is partial
    assert rows[0]["ours_images_per_s"] > 0 and rows[0]["textbook_images_per_s"] > 0
    ratio = rows[0]["ours_images_per_s"] / rows[0]["textbook_images_per_s"]
    assert abs(rows[0]["ratio"] - ratio) <= 0.01 * ratio + 0.01
    out = capsys.readouterr().out
    assert "| resnet8" in out
    # on a CPU: fp32 against bf16, the step ratio and both GEMM rates, and whether bf16 is native
    ms = rows[0]["eager_ms_per_step"] / rows[0]["bf16_ms_per_step"]
    assert abs(rows[0]["fp32_over_bf16"] - ms) <= 0.01 * ms + 0.01 and "fp32/bf16" in out
    assert doc["gemm_gflops"] > 0 and doc["gemm_bf16_gflops"] > 0 and isinstance(doc["cpu_bf16_native"], bool)
    assert "GEMM rate: fp32" in out and "native bf16 (oneDNN)" in out


def test_concurrent_bench_measures_k_runs_at_once(tmp_path, capsys):
    from resnet_exp.runs.bench import run_concurrent_bench

    out = tmp_path / "concurrent.json"
    rows = run_concurrent_bench(["resnet8"], [1, 2], iters=2, device="cpu", profile="smoke", out=str(out))
    assert [r["k"] for r in rows] == [1, 2] and all(r["total_images_per_s"] > 0 for r in rows)
    assert rows[1]["per_run_images_per_s"] * 2 == rows[1]["total_images_per_s"] or \
        abs(rows[1]["per_run_images_per_s"] * 2 - rows[1]["total_images_per_s"]) < 0.2
    assert json.loads(out.read_text())["results"] == rows and json.loads(out.read_text())["complete"]


def test_a_benchmark_cut_part_way_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """gpu_check.sh stops a benchmark at its step's deadline: the rows measured so far stay on disk."""
    import pytest

    from resnet_exp.runs import bench

    real, calls = bench.bench_textbook, []

    def textbook_then_cut(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # what the SIGTERM at the deadline amounts to here
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "bench_textbook", textbook_then_cut)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(["resnet8", "plain8"], iters=2, device="cpu", out=str(out), profile="smoke", workers=0)
    doc = json.loads(out.read_text())
    assert [r["model"] for r in doc["results"]] == ["resnet8"] and doc["complete"] is False
