"""Runs that keep what was saved, report as they go, and stop and resume anywhere."""

from __future__ import annotations

import json
import struct

import jax
import numpy as np
import pytest

from jaxrnn import cli, runs
from jaxrnn.callbacks import Callback, TensorBoard
from jaxrnn.checkpoints import CHECKPOINT, load_checkpoint
from jaxrnn.runs import RunExistsError, fit
from jaxrnn.tasks import get_task

TASK = get_task("index-recall")
# 5 steps an epoch (n=40, batch 8): small enough to run in seconds, big enough to cut
CONFIG = TASK.Config(n=40, batch_size=8, epochs=2, embedding_dim=4, hidden_size=8)
SETS = ["--set", "n=40", "--set", "batch_size=8", "--set", "epochs=2"]
SETS += ["--set", "embedding_dim=4", "--set", "hidden_size=8", "--no-compile-cache"]


def _files(path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _train(out, *extra) -> int:
    return cli.main(["train", TASK.name, "--out", str(out), *SETS, *extra])


# ----------------------------------------------------------------------------- never destroy


def test_training_twice_into_one_directory_keeps_the_first_run(tmp_path, capsys):
    assert _train(tmp_path) == 0
    before = _files(tmp_path)
    capsys.readouterr()
    assert _train(tmp_path, "--set", "epochs=1") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert _files(tmp_path) == before  # byte for byte


def test_fit_refuses_a_run_directory_unless_told_to_resume_or_overwrite(tmp_path):
    first = fit(TASK, CONFIG, out_dir=tmp_path, progress=False)
    with pytest.raises(RunExistsError, match="resume=True to continue it or overwrite=True"):
        fit(TASK, CONFIG, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="pass one of them"):
        fit(TASK, CONFIG, out_dir=tmp_path, progress=False, resume=True, overwrite=True)
    resumed = fit(TASK, CONFIG.replace(epochs=3), out_dir=tmp_path, progress=False, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    again = fit(TASK, CONFIG, out_dir=tmp_path, progress=False, overwrite=True)
    assert again.history == [
        {**row, "time": again.history[i]["time"]} for i, row in enumerate(first.history)
    ]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # the old run's rows gone
    with pytest.raises(KeyboardInterrupt):  # replaced, then stopped before the end
        fit(
            TASK, CONFIG, out_dir=tmp_path, progress=False, overwrite=True, callbacks=[StopAfter(1)]
        )
    assert not (tmp_path / "metrics.json").exists()  # not the old run's any more


def test_an_empty_or_foreign_directory_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    fit(TASK, CONFIG, out_dir=tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- watchable


class Recorder(Callback):
    every = 3

    def __init__(self):
        self.calls = []

    def on_start(self, run):
        self.calls.append(("start", len(run.history)))

    def on_steps(self, step, metrics):
        self.calls.append(("steps", step, sorted(metrics)))

    def on_evaluation(self, row):
        self.calls.append(("evaluation", row["step"]))

    def on_end(self, result):
        self.calls.append(("end", bool(result.final)))


def test_callbacks_and_metrics_jsonl_see_every_evaluation(tmp_path):
    recorder = Recorder()
    result = fit(TASK, CONFIG, out_dir=tmp_path, progress=False, callbacks=[recorder])
    assert recorder.calls == [
        ("start", 0),
        ("steps", 3, ["accuracy", "loss"]),
        ("evaluation", 5),
        ("steps", 6, ["accuracy", "loss"]),
        ("steps", 9, ["accuracy", "loss"]),
        ("evaluation", 10),
        ("end", True),
    ]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(result.history))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert set(record["seconds"]) == {"compile", "train", "eval", "total"}
    assert record["seconds"]["compile"] > 0 and record["seconds"]["total"] > 0


def _tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TFRecord event files under ``log_dir``, read back by hand."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_holds_the_values_of_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboardX")
    fit(TASK, CONFIG, out_dir=tmp_path, progress=False, callbacks=[TensorBoard(tmp_path / "tb")])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scalars = _tensorboard_scalars(tmp_path / "tb")
    assert set(scalars) == {k for k in rows[0] if k not in ("epoch", "step")}
    for key, points in scalars.items():
        assert points == [(row["step"], pytest.approx(row[key], rel=1e-6)) for row in rows], key


# ----------------------------------------------------------------------------- eval_every


class StopAfter(Callback):
    """Stops the run (as Ctrl-C would) after ``n`` evaluations."""

    def __init__(self, n):
        self.n = n

    def on_evaluation(self, row):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_eval_every_evaluates_mid_epoch_and_a_stopped_run_resumes_bit_identically(tmp_path):
    full = fit(TASK, CONFIG, out_dir=tmp_path / "full", progress=False, eval_every=2)
    assert [row["step"] for row in full.history] == [2, 4, 5, 6, 8, 10]
    assert [row["epoch"] for row in full.history] == [0.4, 0.8, 1, 1.2, 1.6, 2]
    with pytest.raises(KeyboardInterrupt):  # stopped after step 6: epoch 2, batch 1 of 5
        fit(
            TASK,
            CONFIG,
            out_dir=tmp_path / "cut",
            progress=False,
            eval_every=2,
            callbacks=[StopAfter(4)],
        )
    _, meta = load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert (meta["epoch"], meta["batch"]) == (1, 1)
    resumed = fit(TASK, CONFIG, out_dir=tmp_path / "cut", progress=False, eval_every=2, resume=True)
    drop_time = lambda h: [{k: v for k, v in r.items() if k != "time"} for r in h]  # noqa: E731
    assert drop_time(resumed.history) == drop_time(full.history)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(full.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.final == full.final


@pytest.mark.parametrize("bad", [0, -1, True])
def test_eval_every_must_be_a_positive_int(tmp_path, bad):
    with pytest.raises(ValueError, match="eval_every must be None or an int >= 1"):
        fit(TASK, CONFIG, progress=False, eval_every=bad)


def test_chunk_sizes_stop_at_multiples_of_eval_every_and_at_the_epoch_end():
    assert runs.chunk_sizes(0, 5, 0, None) == [5]
    assert runs.chunk_sizes(0, 5, 0, 2) == [2, 2, 1]
    assert runs.chunk_sizes(0, 5, 5, 2) == [1, 2, 2]  # global steps 6, 8, 10
    assert runs.chunk_sizes(3, 5, 8, 4) == [2]


# ----------------------------------------------------------------------------- files


def test_a_one_evaluation_run_draws_points_not_an_empty_plot(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(runs, "save_figure", lambda fig, path: figures.append(fig))
    fit(TASK, CONFIG.replace(epochs=1), out_dir=tmp_path, progress=False)
    (figure,) = figures
    lines = figure.axes[0].get_lines()
    assert [line.get_marker() for line in lines if line.get_label().endswith("_loss")] == [
        "o",
        "o",
    ]


def test_eval_and_export_take_the_task_from_the_checkpoint(tmp_path, capsys):
    assert _train(tmp_path / "run") == 0
    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "run")]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["task"] == TASK.name and 0 <= final["final"]["test_accuracy"] <= 1
    assert cli.main(["eval", "hihello", "--checkpoint", str(tmp_path / "run")]) == 2
    assert "holds a 'index-recall' checkpoint, not 'hihello'" in capsys.readouterr().err
    out = tmp_path / "w.safetensors"
    assert (
        cli.main(["export", "--checkpoint", str(tmp_path / "run"), "--to-safetensors", str(out)])
        == 0
    )
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run")]) == 2
    assert "--to-torch FILE.pt and/or --to-safetensors" in capsys.readouterr().err


def test_safetensors_weights_round_trip_through_init_from(tmp_path):
    assert _train(tmp_path / "run") == 0
    weights = tmp_path / "w.safetensors"
    assert (
        cli.main(
            ["export", "--checkpoint", str(tmp_path / "run"), "--to-safetensors", str(weights)]
        )
        == 0
    )
    # learning_rate 0: Adam's update is exactly 0, so the run ends with the exported weights
    assert _train(tmp_path / "again", "--init-from", str(weights), "--set", "learning_rate=0") == 0
    first, _ = load_checkpoint(tmp_path / "run")
    second, _ = load_checkpoint(tmp_path / "again")
    for a, b in zip(
        jax.tree.leaves(first["params"]), jax.tree.leaves(second["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_safetensors_file_is_refused_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert _train(tmp_path / "run", "--init-from", str(bad)) == 2
    assert f"{bad} is not a readable .safetensors file" in capsys.readouterr().err
