"""Training never loses work: numerical faults stop it at a named step, checkpoints are atomic
and checked, resumes may lower the learning rate, and nothing untrusted is unpickled.

A toy task makes faults exact: one parameter ``w`` (starting at 0) is pulled towards 10 by Adam,
and the model is only defined for ``w < cap`` (``log1p(-w / cap)`` is NaN beyond): with
``learning_rate=1`` Adam moves ``w`` by about 1 per step, so with ``cap=2.5`` the loss is NaN
at step 4 — after the checkpoint of epoch 1 (2 steps per epoch). Poisoned examples give a NaN
loss, an infinite loss, or a finite loss with NaN gradients at a chosen step.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from jaxrnn import cli
from jaxrnn.checkpoints import CHECKPOINT, load_checkpoint, save_checkpoint
from jaxrnn.engine import TrainState, make_optimizer, make_steps, no_fault
from jaxrnn.runs import NonFiniteError, config_from_meta, fit
from jaxrnn.task import Task, TaskConfig, iterate_batches
from jaxrnn.tasks import TASKS, get_task

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the toy task


@dataclasses.dataclass(frozen=True)
class FaultConfig(TaskConfig):
    epochs: int = 3
    batch_size: int = 1
    learning_rate: float = 0.1
    n: int = 4  # examples = steps per epoch (batches of 1, in order)
    cap: float | None = None  # the model is defined for w < cap; None: resolved to 1e9
    poison: Literal["none", "nan", "inf", "grad"] = "none"
    poison_at: int = 2  # the poisoned example, i.e. the step of each epoch (0-based)


class Scalar(nn.Module):
    cap: float

    @nn.compact
    def __call__(self, x):
        return self.param("w", nn.initializers.zeros, ())


class FaultToy(Task):
    name = "fault-toy"
    Config = FaultConfig
    metric = "train_w"

    def resolve(self, config):
        return config.replace(cap=1e9) if config.cap is None else config

    def data(self, config, rng):
        x, z = np.ones((config.n, 1), np.float32), np.ones((config.n, 1), np.float32)
        if config.poison == "nan":
            x[config.poison_at] = np.nan
        elif config.poison == "inf":
            x[config.poison_at] = 1e30  # (w x - 10)² overflows float32
        elif config.poison == "grad":
            z[config.poison_at] = 0.0  # sqrt(z + 0 w): value 0, gradient 0 · ∞ = NaN
        return {"train": {"x": x, "z": z}}

    def batches(self, split, config, rng):
        return iterate_batches(split, config.batch_size, None)  # in order: known step numbers

    def model(self, config):
        return Scalar(cap=config.cap)

    def loss(self, model, params, batch, *, key, train):
        w = model.apply({"params": params}, batch["x"])
        fit_term = jnp.mean((w * batch["x"] - 10.0) ** 2)
        domain = jnp.log1p(-w / model.cap)  # NaN for w > cap, as a model past its domain
        trap = jnp.mean(jnp.sqrt(batch["z"] + 0.0 * w))
        return fit_term + domain + trap, {"w": w}

    def evaluate(self, steps, params, data, config):
        return {"w": float(params["w"])}


TOY = FaultToy()
BLOWS_UP = dict(n=2, cap=2.5, learning_rate=1.0)  # NaN loss at step 4 (epoch 2, batch 2 of 2)


# ----------------------------------------------------------------------------- faults


@pytest.mark.parametrize("on_device_epoch", [False, True], ids=["host_loop", "on_device"])
@pytest.mark.parametrize(
    "poison, what",
    [("nan", r"loss \(nan\)"), ("inf", r"loss \(inf\)"), ("grad", r"gradients \(loss [0-9.]+\)")],
)
def test_a_non_finite_step_stops_training_and_is_named(poison, what, on_device_epoch, tmp_path):
    config = FaultConfig(poison=poison, on_device_epoch=on_device_epoch)
    with pytest.raises(NonFiniteError) as caught:
        fit(TOY, config, out_dir=tmp_path, progress=False)
    assert (caught.value.step, caught.value.epoch) == (3, 1)
    expected = (
        rf"fault-toy: non-finite {what} at step 3 \(epoch 1, batch 3 of 4, "
        r"learning_rate=0.1\); training stopped and no update was applied from that "
        r"step on. No checkpoint was written to .*: no evaluation finished."
    )
    assert re.search(expected, str(caught.value)), str(caught.value)
    assert isinstance(caught.value, FloatingPointError)
    assert not (tmp_path / CHECKPOINT).exists()


def test_the_step_applies_no_update_from_the_first_bad_step_on():
    """The jitted step itself: the fault is carried on device, the state frozen at the last
    good step (so a NaN never reaches the params or Adam's moments)."""
    config = TOY.resolve(FaultConfig())
    model = TOY.model(config)
    good = {"x": np.ones((1, 1), np.float32), "z": np.ones((1, 1), np.float32)}
    bad = {"x": np.full((1, 1), np.nan, np.float32), "z": good["z"]}
    state = TrainState.create(
        apply_fn=model.apply,
        params={"w": jnp.zeros(())},
        tx=make_optimizer(config),
        key=jax.random.PRNGKey(0),
    )
    train_step = make_steps(TOY, model).train
    fault = no_fault()
    state, _, fault = train_step(state, good, fault)
    after_good = jax.device_get((state.params, state.opt_state, state.step))
    assert int(fault["step"]) == int(no_fault()["step"]) and after_good[0]["w"] != 0
    state, metrics, fault = train_step(state, bad, fault)
    state, _, fault = train_step(state, good, fault)  # a good batch after the fault: no update
    assert int(fault["step"]) == 2 and np.isnan(float(fault["loss"]))
    assert np.isnan(float(metrics["loss"]))
    now = jax.device_get((state.params, state.opt_state, state.step))
    for a, b in zip(jax.tree.leaves(after_good), jax.tree.leaves(now), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_fault_keeps_the_last_good_checkpoint_and_resumes_with_a_lower_rate(tmp_path):
    config = FaultConfig(**BLOWS_UP)
    fit(TOY, config, out_dir=tmp_path, progress=False, max_epochs=1)
    epoch1 = (tmp_path / CHECKPOINT).read_bytes()
    _, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 1

    with pytest.raises(NonFiniteError) as caught:
        fit(TOY, config, out_dir=tmp_path, progress=False, resume=True)
    message = str(caught.value)
    assert (caught.value.step, caught.value.epoch) == (4, 2)
    assert "non-finite loss (nan) at step 4 (epoch 2, batch 2 of 2, learning_rate=1)" in message
    assert f"The last good checkpoint, {tmp_path / CHECKPOINT} (epoch 1), is kept" in message
    assert "fit(..., resume=True) with a lower learning_rate" in message and "e.g. 0.1" in message
    assert "--resume" not in message  # the library names its arguments, not the CLI's flags
    assert caught.value.checkpoint == tmp_path / CHECKPOINT and caught.value.learning_rate == 1
    assert (tmp_path / CHECKPOINT).read_bytes() == epoch1  # not overwritten

    lower = fit(
        TOY, config.replace(learning_rate=0.01), out_dir=tmp_path, progress=False, resume=True
    )
    assert [row["epoch"] for row in lower.history] == [1, 2, 3]
    assert lower.history[0] == meta["history"][0]  # epoch 1 is the checkpoint's
    w = float(lower.state.params["w"])
    assert 2.0 < w < config.cap and all(np.isfinite(r["train_loss"]) for r in lower.history)
    _, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 3 and meta["config"]["learning_rate"] == 0.01


def test_cli_fault_then_resume_with_only_the_learning_rate_set(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(TASKS, TOY.name, FaultToy)
    sets = [a for k, v in BLOWS_UP.items() for a in ("--set", f"{k}={v}")]
    assert cli.main(["train", TOY.name, "--out", str(tmp_path), *sets]) == 2
    err = capsys.readouterr().err
    assert (
        "\njaxrnn train: error: fault-toy: non-finite loss (nan) at step 4 (epoch 2, batch 2 of 2"
    ) in err, err  # after the progress bar
    assert f"jaxrnn train fault-toy --out {tmp_path} --resume --set learning_rate=0.1" in err
    # --resume takes the checkpoint's config (n, cap): --set names only what changes.
    args = ["train", TOY.name, "--out", str(tmp_path), "--resume", "--set", "learning_rate=0.01"]
    assert cli.main(args) == 0
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["config"] | BLOWS_UP | {"learning_rate": 0.01} == record["config"]
    assert [row["epoch"] for row in record["history"]] == [1, 2, 3]
    capsys.readouterr()
    args = ["train", TOY.name, "--out", str(tmp_path), "--resume", "--set", "cap=3"]
    assert cli.main(args) == 2
    assert "only epochs and learning_rate may change" in capsys.readouterr().err


def test_non_finite_params_are_never_written(tmp_path):
    config = TOY.resolve(FaultConfig())
    state = TrainState.create(
        apply_fn=None,
        params={"w": jnp.float32(1)},
        tx=make_optimizer(config),
        key=jax.random.PRNGKey(0),
    )
    meta = {"task": TOY.name, "config": {}, "seed": 0, "epoch": 1, "history": []}
    save_checkpoint(tmp_path / CHECKPOINT, state, meta)
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(
        FloatingPointError,
        match=rf"refusing to write {re.escape(str(tmp_path))}"
        r".*: params.w has non-finite values",
    ):
        save_checkpoint(
            tmp_path / CHECKPOINT, state.replace(params={"w": jnp.float32(np.nan)}), meta
        )
    assert (tmp_path / CHECKPOINT).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_the_effective_config_is_stored_with_the_checkpoint(tmp_path):
    """The resolved config (``cap=None`` filled in by the task), not the one passed."""
    given = FaultConfig(epochs=1)
    fit(TOY, given, out_dir=tmp_path, progress=False)
    _, meta = load_checkpoint(tmp_path)
    assert meta["config"]["cap"] == 1e9 and meta["seed"] == 0
    assert config_from_meta(TOY, meta) == TOY.resolve(given) != given
    assert json.loads((tmp_path / "metrics.json").read_text())["config"] == meta["config"]


# ----------------------------------------------------------------------------- a real model

IR = dict(n=64, epochs=2, embedding_dim=4, hidden_size=4, batch_size=32, learning_rate=0.01)


@pytest.fixture(scope="module")
def index_recall_run(tmp_path_factory):
    """One epoch of a tiny index-recall run (2 steps per epoch), with its checkpoint."""
    out = tmp_path_factory.mktemp("index-recall")
    task = get_task("index-recall")
    fit(task, task.Config(**IR), out_dir=out, progress=False, max_epochs=1)
    return out


def test_a_huge_learning_rate_on_a_real_model(index_recall_run, tmp_path):
    run = shutil.copytree(index_recall_run, tmp_path / "run")
    before = (run / CHECKPOINT).read_bytes()
    task = get_task("index-recall")
    huge = task.Config(**IR).replace(learning_rate=1e38)
    with pytest.raises(
        NonFiniteError,
        match=r"non-finite (loss|gradients) .* at step [34] "
        r"\(epoch 2, batch [12] of 2",
    ) as caught:
        fit(task, huge, out_dir=run, progress=False, resume=True)
    assert caught.value.epoch == 2 and (run / CHECKPOINT).read_bytes() == before


# ----------------------------------------------------------------------------- atomic saves

KILLED_SAVE = r"""
import os, pathlib, shutil, sys, time
from jaxrnn import files
from jaxrnn.checkpoints import CHECKPOINT
from jaxrnn.tasks import get_task
from jaxrnn.runs import fit

out = pathlib.Path(sys.argv[1])
opened = []

class HalfWrite:
    '''The temp file of the second save: half the bytes reach the disk, then the process
    hangs (and is killed) before the rename.'''
    def __init__(self, f):
        self.f = f
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.f.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self.f, name)
    def write(self, data):
        shutil.copy(out / CHECKPOINT, out / "previous.bin")  # what must survive
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        os.fsync(self.f.fileno())
        print("HALF", len(data) // 2, flush=True)
        time.sleep(600)

class Os:
    def __getattr__(self, name):
        return getattr(os, name)
    def fdopen(self, *args, **kwargs):
        f = os.fdopen(*args, **kwargs)
        opened.append(f)
        return HalfWrite(f) if len(opened) == 2 else f

files.os = Os()  # only jaxrnn.files sees it
task = get_task("hihello")
fit(task, task.Config(epochs=3), out_dir=out, progress=False)
print("NOT KILLED", flush=True)
"""


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.startswith("HALF"), (line, proc.stderr.read() if proc.poll() else "")
        os.kill(proc.pid, signal.SIGKILL)  # mid-save: the temp file holds half the bytes
        assert proc.wait() == -signal.SIGKILL
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    assert (tmp_path / CHECKPOINT).read_bytes() == (tmp_path / "previous.bin").read_bytes()
    _, meta = load_checkpoint(tmp_path)  # loadable, and the previous one: epoch 1
    assert meta["epoch"] == 1
    (partial,) = tmp_path.glob(f"{CHECKPOINT}.*.tmp")  # the killed save's temp file
    assert partial.stat().st_size == int(line.split()[1])
    with pytest.raises(ValueError, match=f"{re.escape(str(partial))} is not a readable jaxrnn"):
        load_checkpoint(partial)  # half a checkpoint is never taken for one

    # No work lost: resuming gives exactly the uninterrupted run.
    task = get_task("hihello")
    resumed = fit(task, task.Config(epochs=3), out_dir=tmp_path, progress=False, resume=True)
    full = fit(task, task.Config(epochs=3), progress=False)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- bad checkpoints


@pytest.fixture(scope="module")
def hihello_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hihello")
    task = get_task("hihello")
    fit(task, task.Config(epochs=2), out_dir=out, progress=False)
    return out


def _with_meta(raw: bytes, change) -> bytes:
    """The checkpoint ``raw`` with its meta replaced by ``change(meta)``."""
    outer = serialization.msgpack_restore(raw)
    outer["meta"] = json.dumps(change(json.loads(outer["meta"])))
    return serialization.msgpack_serialize(outer)


def _flip_middle_byte(raw: bytes) -> bytes:
    i = len(raw) // 2  # inside the params: without the digest this would load unnoticed
    return raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]


LEGACY_NO_PARAMS = serialization.msgpack_serialize(
    {
        "state": {},
        "meta": json.dumps({"task": "hihello", "config": {}, "seed": 0, "epoch": 1, "history": []}),
    }
)
UNREADABLE = "is not a readable jaxrnn checkpoint"
CORRUPT = {
    "truncated": (lambda raw: raw[: len(raw) // 2], UNREADABLE),
    "garbage": (lambda raw: np.random.default_rng(0).bytes(len(raw)), UNREADABLE),
    "empty": (lambda raw: b"", UNREADABLE),
    "flipped_byte": (
        _flip_middle_byte,
        "is corrupt: its contents have sha256 [0-9a-f]{64}, "
        "the file records [0-9a-f]{64}; use another copy",
    ),
    "other_msgpack": (
        lambda raw: serialization.msgpack_serialize({"weights": np.ones(3)}),
        UNREADABLE + r" \(KeyError: 'meta'\)",
    ),
    "no_params": (
        lambda raw: LEGACY_NO_PARAMS,
        "is not a jaxrnn checkpoint: it lacks state.params",
    ),
    "meta_without_keys": (
        lambda raw: _with_meta(raw, lambda meta: {"task": meta["task"]}),
        "is not a jaxrnn checkpoint: it lacks config, seed, epoch, history",
    ),
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_a_corrupt_checkpoint_is_refused_naming_the_file(kind, hihello_run, tmp_path, capsys):
    corrupt, message = CORRUPT[kind]
    shutil.copytree(hihello_run, tmp_path, dirs_exist_ok=True)
    path = tmp_path / CHECKPOINT
    path.write_bytes(corrupt(path.read_bytes()))
    expected = re.escape(str(path)) + " " + message
    assert cli.main(["eval", "hihello", "--checkpoint", str(tmp_path)]) == 2
    assert re.search("jaxrnn eval: error: " + expected, capsys.readouterr().err)
    task = get_task("hihello")
    with pytest.raises(ValueError, match=expected):
        fit(task, task.Config(epochs=3), out_dir=tmp_path, progress=False, resume=True)


def test_a_checkpoint_from_before_the_digest_still_loads(hihello_run, tmp_path, capsys):
    """Runs saved before checkpoints carried a sha256 (state and meta side by side) load."""
    outer = serialization.msgpack_restore((hihello_run / CHECKPOINT).read_bytes())
    legacy = {**serialization.msgpack_restore(outer["body"]), "meta": outer["meta"]}
    (tmp_path / CHECKPOINT).write_bytes(serialization.msgpack_serialize(legacy))
    assert cli.main(["eval", "hihello", "--checkpoint", str(tmp_path)]) == 0
    assert (
        json.loads(capsys.readouterr().out)["final"]
        == json.loads((hihello_run / "metrics.json").read_text())["final"]
    )


def test_a_checkpoint_of_another_task_or_seed_is_refused(hihello_run, capsys):
    args = ["train", "index-recall", "--out", str(hihello_run), "--resume"]
    assert cli.main(args) == 2
    assert (
        f"--resume: {hihello_run / CHECKPOINT} holds a 'hihello' checkpoint, not 'index-recall'"
    ) in capsys.readouterr().err
    assert cli.main(["eval", "index-recall", "--checkpoint", str(hihello_run)]) == 2
    assert "holds a 'hihello' checkpoint, not 'index-recall'" in capsys.readouterr().err
    task = get_task("hihello")
    with pytest.raises(ValueError, match=r"trained with seed 0, not 5 \(the data and shuffles"):
        fit(task, task.Config(epochs=3), seed=5, out_dir=hihello_run, resume=True, progress=False)


def test_a_checkpoint_whose_shapes_differ_lists_the_differences(index_recall_run, tmp_path, capsys):
    path = tmp_path / CHECKPOINT
    path.write_bytes(
        _with_meta(
            (index_recall_run / CHECKPOINT).read_bytes(),
            lambda m: {**m, "config": {**m["config"], "hidden_size": 6}},
        )
    )
    assert cli.main(["eval", "index-recall", "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"checkpoint {path} (task 'index-recall') does not fit this model: shapes differ: "
        "rnn.weight_ih_l0: checkpoint (16, 4), model (24, 4); rnn.weight_hh_l0: checkpoint "
        "(16, 4), model (24, 6); "
    ) in err, err
    assert err.rstrip().endswith("(and 1 more)")  # fc.kernel (4, 10) vs (6, 10)
    # the whole training state (params and Adam's moments) is compared the same way
    task = get_task("index-recall")
    config = task.Config(**IR).replace(hidden_size=6)
    model = task.model(config)

    def create():
        params = task.init(model, jax.random.PRNGKey(0), {"x": jnp.zeros((2, 10), jnp.int32)})
        return TrainState.create(
            apply_fn=model.apply,
            params=params,
            tx=make_optimizer(config),
            key=jax.random.PRNGKey(1),
        )

    expected = (
        rf"checkpoint {re.escape(str(index_recall_run / CHECKPOINT))} \(task "
        r"'index-recall'\) does not fit this model: shapes differ: params.fc.kernel: "
        r"checkpoint \(4, 10\), model \(6, 10\);.*params.rnn.weight_hh_l0: checkpoint "
        r"\(16, 4\), model \(24, 6\) \(and 11 more\)"
    )  # Adam's moments too
    with pytest.raises(ValueError, match=expected):
        load_checkpoint(index_recall_run, jax.eval_shape(create))  # shapes are all it needs


def test_a_checkpoint_with_config_keys_the_task_does_not_know(index_recall_run, tmp_path, capsys):
    path = tmp_path / CHECKPOINT
    path.write_bytes(
        _with_meta(
            (index_recall_run / CHECKPOINT).read_bytes(),
            lambda m: {**m, "config": {**m["config"], "attention": True}},
        )
    )
    assert cli.main(["eval", "index-recall", "--checkpoint", str(path)]) == 2
    assert (
        f"{path}: its config has keys that IndexRecallConfig does not know: attention"
        in capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- trust


def _calls(root: pathlib.Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                yield path.relative_to(ROOT), node.lineno, f"{name}.{node.func.attr}", node


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "not a constant"
    return None


def test_no_loader_can_run_pickled_code():
    """Every ``torch.load`` passes ``weights_only=True``; no ``np.load`` allows pickles; the
    library never unpickles (its own files are msgpack and JSON)."""
    torch_loads, bad = 0, []
    for folder in ("jaxrnn", "parity", "examples", "benchmarks"):
        for path, line, call, node in _calls(ROOT / folder):
            if call == "torch.load":
                torch_loads += 1
                if _keyword(node, "weights_only") is not True:
                    bad.append(f"{path}:{line}: torch.load without weights_only=True")
            elif call in ("np.load", "numpy.load"):
                if _keyword(node, "allow_pickle") not in (None, False):
                    bad.append(f"{path}:{line}: np.load with allow_pickle")
            elif folder == "jaxrnn" and call in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
                bad.append(f"{path}:{line}: {call}")
    assert not bad, bad
    assert torch_loads >= 1  # the scan does see jaxrnn.interop's loader
