"""The benchmark command runs on the CPU and writes its table as JSON."""

import json

from resnet_exp.bench import run_bench


def test_bench_writes_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = run_bench(["resnet8"], iters=2, device="cpu", out=str(out), batch_size=16, workers=0)
    doc = json.loads(out.read_text())
    assert doc["results"] == rows and rows[0]["model"] == "resnet8"
    assert rows[0]["ours_images_per_s"] > 0 and rows[0]["textbook_images_per_s"] > 0
    ratio = rows[0]["ours_images_per_s"] / rows[0]["textbook_images_per_s"]
    assert abs(rows[0]["ratio"] - ratio) <= 0.01 * ratio + 0.01
    assert "| resnet8" in capsys.readouterr().out
