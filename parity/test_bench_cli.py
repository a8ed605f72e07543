"""``python -m benchmarks.bench`` end to end on its smallest rows (the timing table itself,
not its numbers)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")

from benchmarks import bench  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bench_prints_a_row_per_model(dtype, capsys):
    args = bench.parse_args(["hihello", "--steps", "2", "--rounds", "1", "--compute-dtype", dtype])
    assert (
        bench.main(
            args.rows, steps=args.steps, rounds=args.rounds, compute_dtype=args.compute_dtype
        )
        == 0
    )
    out = capsys.readouterr().out
    row = re.compile(r"^\| (hihello\S*) \|.*?\*\*([\d.]+)\*\*", re.M)  # id ... **ratio**
    rows = dict(row.findall(out))
    assert set(rows) == {"hihello", "hihello-step"}, out
    assert all(float(ratio) > 0 for ratio in rows.values())


def test_bench_refuses_an_unknown_dtype(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["hihello", "--compute-dtype", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


def test_the_batch_column_is_the_resolved_configs(monkeypatch, capsys, tmp_path):
    """addition's batch size comes from its preset (``None`` in the config until resolved)."""
    (row,) = [r for r in bench.ROWS if r.id == "addition"]
    _, config, _ = bench.workload(row, tmp_path)
    assert config.batch_size == 128
    timed = bench.Result({"jaxrnn": 1.0, "torch": 1.0}, {"jaxrnn": 0.1}, 1.0, "generated", 128)
    monkeypatch.setattr(bench, "bench_row", lambda *args: timed)
    monkeypatch.setattr(bench, "matmul_peak", lambda: 100.0)
    bench.print_steps([row], steps=1, rounds=1, tmp=tmp_path)
    assert re.search(r"^\| addition \| 128 \|", capsys.readouterr().out, re.M)
