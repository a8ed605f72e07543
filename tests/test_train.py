"""The training engine and the CLI: tiny configurations trained through ``jaxrnn.cli.main``."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn.checkpoints import CHECKPOINT, load_checkpoint
from jaxrnn.engine import mixed_precision
from jaxrnn.runs import fit, plot_history
from jaxrnn.tasks import get_task

TINY = {
    "hihello": ["epochs=5"],
    "index-recall": [
        "n=256",
        "epochs=3",
        "embedding_dim=8",
        "hidden_size=16",
        "batch_size=32",
        "learning_rate=0.01",
    ],
    "copy": [
        "variant=masked",
        "cell=builtin",
        "n_train=256",
        "n_test=64",
        "hidden_size=16",
        "epochs=3",
        "learning_rate=0.01",
    ],
    "addition": [
        "n_examples=320",
        "hidden_size=16",
        "embedding_dim=8",
        "epochs=3",
        "learning_rate=0.01",
    ],
    "bitflip": ["n_bits=4", "embedding_dim=4", "epochs=3"],
    "sinusoid": ["n_train=64", "n_test=16", "n_time_steps=30", "epochs=3"],
}


def _train(task: str, out, *extra: str) -> dict:
    sets = [a for s in TINY[task] for a in ("--set", s)]
    assert cli.main(["train", task, "--out", str(out), *sets, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("task", sorted(TINY))
def test_tiny_run_through_cli(task, tmp_path):
    record = _train(task, tmp_path)
    assert set(record) == {"task", "config", "history", "final", "seconds"}
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
        fit(
            task,
            config.replace(epochs=2),
            seed=3,
            out_dir=tmp_path / "short",
            resume=True,
            progress=False,
        )


def test_resume_refuses_another_config(tmp_path):
    task = get_task("hihello")
    fit(task, task.Config(epochs=2), out_dir=tmp_path, progress=False)
    with pytest.raises(
        ValueError,
        match=r"another config .*'mode': \('sequence', 'step'\)"
        r".*only epochs and learning_rate may change",
    ):
        fit(task, task.Config(epochs=2, mode="step"), out_dir=tmp_path, resume=True, progress=False)


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
        (
            ["train", "hihello", "--set", "nope=1"],
            "unknown config key 'nope' .* valid keys: .*epochs",
        ),
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


def test_mixed_precision_casts_floats_in_and_float32_out():
    seen = {}

    def loss(model, params, batch, *, key, train):
        seen.update(w=params["w"].dtype, n=params["n"].dtype)
        seen.update(x=batch["x"].dtype, y=batch["y"].dtype)
        value = jnp.sum(params["w"] * batch["x"])
        return value, {"value": value, "count": batch["y"].sum()}

    params = {"w": jnp.full((3,), 0.1, jnp.float32), "n": jnp.arange(3)}
    batch = {"x": jnp.ones(3, jnp.float32), "y": jnp.arange(3)}
    bf16 = mixed_precision(loss, "bfloat16")
    (value, metrics), grads = jax.value_and_grad(bf16, argnums=1, has_aux=True, allow_int=True)(
        None, params, batch, key=None, train=True
    )
    assert seen == {"w": jnp.bfloat16, "n": jnp.int32, "x": jnp.bfloat16, "y": jnp.int32}
    assert value.dtype == metrics["value"].dtype == grads["w"].dtype == jnp.float32
    assert metrics["count"].dtype == jnp.int32
    # 0.1 rounded to bfloat16 (8 significant bits): the forward really ran in bfloat16
    assert value != pytest.approx(0.3, abs=1e-4) and value == pytest.approx(0.3, abs=1e-2)
    assert mixed_precision(loss, "float32") is loss

    # what a model makes itself (a one-hot) is cast where it enters a module
    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x):
            seen["probe"] = x.dtype
            return nn.Dense(2)(x)

    class OneHotModel(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return Probe()(jax.nn.one_hot(ids, 4))  # a float32 one-hot

    model, ids = OneHotModel(), jnp.arange(3)
    params = model.init(jax.random.key(0), ids)["params"]
    assert seen["probe"] == jnp.float32
    dense_loss = lambda m, p, b, **kw: (jnp.sum(m.apply({"params": p}, b)), {})  # noqa: E731
    mixed_precision(dense_loss, "bfloat16")(model, params, ids)
    assert seen["probe"] == jnp.bfloat16
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        mixed_precision(loss, "float16")


@pytest.mark.parametrize(
    "task, extra",
    [
        ("index-recall", ()),
        ("sinusoid", ()),  # float inputs
        ("copy", ("--set", "cell=custom")),  # one-hot made inside the model, a scan carry
    ],
)
def test_bfloat16_training_keeps_float32_weights(task, extra, tmp_path):
    full = _train(task, tmp_path / "f32", *extra)
    half = _train(task, tmp_path / "bf16", *extra, "--set", "compute_dtype=bfloat16")
    assert half["config"]["compute_dtype"] == "bfloat16"
    f32_loss = [row["train_loss"] for row in full["history"]]
    bf16_loss = [row["train_loss"] for row in half["history"]]
    assert bf16_loss[-1] < bf16_loss[0]
    assert bf16_loss != f32_loss  # bfloat16 did run ...
    np.testing.assert_allclose(bf16_loss, f32_loss, rtol=0.02)  # ... and tracks float32
    state = load_checkpoint(tmp_path / "bf16")[0]
    assert {str(p.dtype) for p in jax.tree.leaves(state["params"])} == {"float32"}


def test_loss_plot_draws_a_history_whose_first_evaluation_is_at_step_0(tmp_path):
    """An evaluation before any step (epoch 1, step 0) has no steps per epoch to scale by."""
    history = [
        {"epoch": 1, "step": 0, "train_loss": 1.0, "test_loss": 1.1},
        {"epoch": 1, "step": 0, "train_loss": 0.9, "test_loss": 1.0},
    ]
    plot_history(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
