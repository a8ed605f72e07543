"""The training engine and the CLI: tiny configurations trained through ``jaxrnn.cli.main``."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn.tasks.base import get_task
from jaxrnn.train import CHECKPOINT, fit, load_checkpoint

TINY = {
    "hihello": ["epochs=5"],
    "index-recall": ["n=256", "epochs=3", "embedding_dim=8", "hidden_size=16", "batch_size=32",
                     "learning_rate=0.01"],
    "copy": ["variant=masked", "cell=builtin", "n_train=256", "n_test=64", "hidden_size=16",
             "epochs=3", "learning_rate=0.01"],
    "addition": ["n_examples=320", "hidden_size=16", "embedding_dim=8", "epochs=3",
                 "learning_rate=0.01"],
    "bitflip": ["n_bits=4", "embedding_dim=4", "epochs=3"],
    "sinusoid": ["n_train=64", "n_test=16", "n_time_steps=30", "epochs=3"],
}  # fmt: skip


def _train(task: str, out, *extra: str) -> dict:
    sets = [a for s in TINY[task] for a in ("--set", s)]
    assert cli.main(["train", task, "--out", str(out), *sets, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("task", sorted(TINY))
def test_tiny_run_through_cli(task, tmp_path):
    record = _train(task, tmp_path)
    assert set(record) == {"task", "config", "history", "final"}
    assert record["task"] == task
    history = record["history"]
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1))
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert record["final"], "final metrics are empty"
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert (tmp_path / CHECKPOINT).exists()


def test_resume_continues_bit_identically(tmp_path):
    task = get_task("index-recall")
    config = task.Config(n=128, epochs=3, embedding_dim=8, hidden_size=8, batch_size=32)
    full = fit(task, config, seed=3, out_dir=tmp_path / "full", progress=False)
    fit(task, config, seed=3, out_dir=tmp_path / "cut", progress=False, max_epochs=1)
    resumed = fit(task, config, seed=3, out_dir=tmp_path / "cut", progress=False, resume=True)
    assert resumed.history == [
        {**row, "time": resumed.history[i]["time"]} for i, row in enumerate(full.history)
    ]
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_extends_a_finished_run_bit_identically(tmp_path):
    task = get_task("index-recall")
    config = task.Config(n=128, epochs=3, embedding_dim=8, hidden_size=8, batch_size=32)
    full = fit(task, config, seed=3, out_dir=tmp_path / "full", progress=False)
    fit(task, config.replace(epochs=1), seed=3, out_dir=tmp_path / "short", progress=False)
    longer = fit(task, config, seed=3, out_dir=tmp_path / "short", progress=False, resume=True)
    assert [r["train_loss"] for r in longer.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(longer.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="at epoch 3, beyond epochs=2"):
        fit(task, config.replace(epochs=2), seed=3, out_dir=tmp_path / "short", resume=True,
            progress=False)  # fmt: skip


def test_resume_refuses_another_config(tmp_path):
    task = get_task("hihello")
    fit(task, task.Config(epochs=2), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another config .*'mode': \('sequence', 'step'\)"
                                         r".*only epochs and learning_rate may change"):
        fit(task, task.Config(epochs=2, mode="step"), out_dir=tmp_path, resume=True,
            progress=False)  # fmt: skip


def test_eval_checkpoint_matches_training(tmp_path, capsys):
    record = _train("index-recall", tmp_path)
    capsys.readouterr()
    assert cli.main(["eval", "index-recall", "--checkpoint", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["final"]["test_accuracy"] == pytest.approx(record["final"]["test_accuracy"])


def test_on_device_epoch_matches_host_loop():
    task = get_task("index-recall")
    config = task.Config(n=128, epochs=2, embedding_dim=8, hidden_size=8, batch_size=32)
    host = fit(task, config, progress=False)
    device = fit(task, config.replace(on_device_epoch=True), progress=False)
    for a, b in zip(jax.tree.leaves(host.state.params), jax.tree.leaves(device.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_checkpoint_holds_the_effective_config(tmp_path):
    _train("hihello", tmp_path)
    _, meta = load_checkpoint(tmp_path)
    assert meta["task"] == "hihello" and meta["config"]["epochs"] == 5


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no-such-task"], "unknown task 'no-such-task'; available: "),
        (["train", "hihello", "--set", "nope=1"], "unknown config key 'nope' .* valid keys: .*epochs"),
        (["train", "hihello", "--set", "epochs=many"], "epochs must be int, got 'many'"),
        (["train", "hihello", "--set", "mode=sideways"], "mode must be one of sequence, step"),
        (["train", "hihello", "--set", "on_device_epoch=maybe"], "must be a boolean"),
        (["train", "hihello", "--set", "epochs"], "--set expects key=value"),
        (["eval", "hihello", "--checkpoint", "/nonexistent"], "no checkpoint at"),
    ],
)
def test_cli_errors_are_clear(args, message, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxrnn {args[0]}: error:")
    import re

    assert re.search(message, err), err


def test_list_names_every_task(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("hihello", "index-recall", "bitflip", "sinusoid", "copy", "addition"):
        assert name in out
