"""Training across processes (``jaxrnn.distributed``): two local processes train like one.

Each multi-process run is two ``python -m jaxrnn train`` subprocesses on this machine, one
CPU device each, joined by ``jax.distributed`` on a free port of 127.0.0.1 and summing
gradients with gloo — what two hosts do, minus the network. XLA's device count is fixed when
jax starts, so the one-process runs with one and two devices are subprocesses too. They share
a persistent compilation cache: a later run of the same steps loads them compiled.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxrnn import cli, distributed, parallel, runs
from jaxrnn.checkpoints import read_checkpoint
from jaxrnn.distributed import Distributed
from jaxrnn.files import save_safetensors
from jaxrnn.interop import params_to_state_dict
from jaxrnn.tasks import get_task

SMALL = ["--set", "n=256", "--set", "hidden_size=32", "--set", "embedding_dim=16"]
TRAIN = ["train", "index-recall", *SMALL, "--set", "batch_size=32"]
STEPS = 16  # 2 epochs of 256 / 32 batches: --eval-every 1 records each step's loss
TIMEOUT = 120  # seconds: a run that hangs fails the test instead of the suite
OUTPUTS = {"checkpoint.msgpack", "metrics.json", "metrics.jsonl", "loss.png"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """This module's runs compile into (and load from) one cache of their own."""
    CACHE[:] = [str(tmp_path_factory.mktemp("jaxrnn-cache"))]


CACHE: list[str] = []


def start(args: list[str], devices: int = 1) -> subprocess.Popen:
    """``python -m jaxrnn ARGS`` on ``devices`` CPU devices."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAXRNN_CACHE=CACHE[0],
    )
    return subprocess.Popen(
        [sys.executable, "-m", "jaxrnn", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def processes(args: list[str], n: int = 2) -> list[subprocess.Popen]:
    """``n`` processes of one run of ``jaxrnn ARGS`` (one device each)."""
    address = f"127.0.0.1:{free_port()}"
    flags = ["--coordinator-address", address, "--num-processes", str(n)]
    return [start([*args, *flags, "--process-id", str(i)]) for i in range(n)]


def finish(procs: list[subprocess.Popen]) -> list[dict]:
    """Each process's exit status, stdout and stderr (killing all if one hangs)."""
    try:
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [{"rc": p.returncode, "out": o, "err": e} for p, (o, e) in zip(procs, outs)]


def history(out: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """The same 2-epoch run on one device, two devices of one process and two processes; and
    its first epoch alone on one device (``"epoch 1"``: a checkpoint to resume)."""
    tmp = tmp_path_factory.mktemp("distributed")
    args = [*TRAIN, "--eval-every", "1", "--set"]
    started = [  # at once: the two processes of a run mostly wait for each other
        start([*args, "epochs=2", "--out", str(tmp / "one")]),
        start([*args, "epochs=2", "--devices", "2", "--out", str(tmp / "two")], devices=2),
        *processes([*args, "epochs=2", "--out", str(tmp / "procs")]),
        start([*args, "epochs=1", "--out", str(tmp / "first")]),
    ]
    one, two, *procs, first = finish(started)
    done = {"one device": one, "two devices": two, "two processes": procs, "epoch 1": first}
    for name, result in done.items():
        for r in result if isinstance(result, list) else [result]:
            assert r["rc"] == 0, f"{name}: {r['err'][-3000:]}"
    out = {"one device": tmp / "one", "two devices": tmp / "two", "two processes": tmp / "procs"}
    return {"out": out, "done": done, "epoch 1": tmp / "first"}


def test_two_processes_train_like_one_device(trained):
    """The same losses at every step and the same final metrics: the two processes summed
    the gradients of the same global batches, each process placing its half."""
    rows = {name: history(out) for name, out in trained["out"].items()}
    epoch_one = [r["train_loss"] for r in history(trained["epoch 1"])]
    assert epoch_one == [r["train_loss"] for r in rows["one device"][: STEPS // 2]]
    finals = {
        name: json.loads((out / "metrics.json").read_text())["final"]
        for name, out in trained["out"].items()
    }
    one = rows["one device"]
    assert len(one) == STEPS and [r["step"] for r in one] == list(range(1, STEPS + 1))
    for name in ("two devices", "two processes"):
        assert [r["step"] for r in rows[name]] == [r["step"] for r in one], name
        for key in ("train_loss", "test_loss", "test_accuracy"):
            got, want = [r[key] for r in rows[name]], [r[key] for r in one]
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"{name}: {key}")
        assert finals[name].keys() == finals["one device"].keys()
        for key, value in finals["one device"].items():
            assert finals[name][key] == pytest.approx(value, rel=1e-5), (name, key)
    assert len({r["train_loss"] for r in one}) > STEPS // 2  # the losses do change


def test_two_processes_write_one_set_of_outputs(trained):
    """Process 0 writes the files, prints and shows the progress bar; process 1 nothing."""
    out = trained["out"]["two processes"]
    first, second = trained["done"]["two processes"]
    assert {p.name for p in out.iterdir()} == OUTPUTS
    rows = history(out)
    assert len(rows) == STEPS  # one writer: not two appending to metrics.jsonl
    record = json.loads((out / "metrics.json").read_text())
    assert record["history"] == rows
    _, meta = read_checkpoint(out / "checkpoint.msgpack")
    assert meta["epoch"] == 2 and meta["history"] == rows
    assert json.loads(first["out"][first["out"].index("{") :])["final"] == record["final"]
    assert "index-recall: 100%" in first["err"]
    assert "training" not in second["out"] and "final" not in second["out"]  # gloo's line only
    assert "index-recall:" not in second["err"]


def test_two_processes_resume_a_run(tmp_path, trained):
    """A one-device run's first epoch, resumed to two epochs by two processes (each reads the
    checkpoint): the uninterrupted run's steps — the batches do not depend on the processes."""
    out = tmp_path / "run"
    shutil.copytree(trained["epoch 1"], out)
    args = [*TRAIN, "--eval-every", "1", "--resume", "--set", "epochs=2", "--out", str(out)]
    for r in finish(processes(args)):
        assert r["rc"] == 0, r["err"][-3000:]
    got, want = history(out), history(trained["out"]["one device"])
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for key in ("train_loss", "test_accuracy"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5)
    assert {p.name for p in out.iterdir()} == OUTPUTS


@pytest.mark.parametrize(
    "flags, failing, kind, message, when",
    [  # process 0's out_dir holds a run; process 1's, on "another host", is empty
        (["--resume"], 1, "FileNotFoundError", "--resume: no checkpoint in", "reading the config"),
        ([], 0, "RunExistsError", "already holds a run (", "setting up the run"),  # in fit
    ],
    ids=["resume without the checkpoint", "out_dir holds a run"],
)
def test_an_error_on_one_process_stops_every_process(
    tmp_path, trained, flags, failing, kind, message, when
):
    """One process fails (its host lacks the checkpoint to resume, or holds a run in out_dir):
    it raises its own error, the other one that names it and its error — both at once,
    neither waits for the other."""
    outs = [tmp_path / "ok", tmp_path / "empty"]
    shutil.copytree(trained["epoch 1"], outs[0])
    outs[1].mkdir()
    address = f"127.0.0.1:{free_port()}"
    flags = [*flags, "--coordinator-address", address, "--num-processes", "2"]
    tick = time.perf_counter()
    results = finish(
        [start([*TRAIN, *flags, "--out", str(outs[i]), "--process-id", str(i)]) for i in (0, 1)]
    )
    assert time.perf_counter() - tick < 60
    assert [r["rc"] for r in results] == [2, 2]
    mine, other = results[failing]["err"], results[1 - failing]["err"]
    assert f"jaxrnn train: error: {outs[failing]}" in mine or f"error: {message}" in mine
    assert message in mine and "failed while" not in mine
    assert f"error: process {failing} of 2 failed while {when}: {kind}: " in other, other[-2000:]
    assert message in other


FAILING_WRITE = textwrap.dedent(
    """
    import sys
    from jaxrnn import runs
    from jaxrnn.callbacks import Callback
    from jaxrnn.distributed import Distributed, ProcessFailedError
    from jaxrnn.tasks import get_task

    class DiskFull(Callback):  # process 0 alone calls the callbacks, as it writes the files
        def on_evaluation(self, row):
            raise OSError(28, "No space left on device")

    address, process, out, cache = sys.argv[1:]
    task = get_task("index-recall")
    config = task.Config(n=256, hidden_size=32, embedding_dim=16, batch_size=32, epochs=2)
    try:
        runs.fit(
            task, config, out_dir=out, eval_every=1, progress=False, callbacks=[DiskFull()],
            distributed=Distributed(address, num_processes=2, process_id=int(process)),
            compilation_cache=cache,
        )
    except (OSError, ProcessFailedError) as e:
        print(f"{type(e).__name__}: {e}")
        sys.exit(3)
    """
)


def test_a_failed_write_on_process_0_stops_process_1(tmp_path):
    """Process 0 fails while recording the first evaluation (its checkpoint and callbacks):
    process 1, which waits there for it, raises an error naming it at once instead of
    training on into a step that process 0 never joins."""
    address, cache = f"127.0.0.1:{free_port()}", str(pathlib.Path(CACHE[0]) / "xla")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FAILING_WRITE, address, str(i), str(tmp_path / "run"), cache],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    first, second = finish(procs)
    assert first["rc"] == second["rc"] == 3, (first["err"][-2000:], second["err"][-2000:])
    assert "OSError: [Errno 28] No space left on device" in first["out"]
    assert (
        "ProcessFailedError: process 0 of 2 failed while recording epoch 0 and 1 batches of "
        "the next: OSError: [Errno 28] No space left on device" in second["out"]
    )
    _, meta = read_checkpoint(tmp_path / "run" / "checkpoint.msgpack")  # written before
    assert meta["batch"] == 1


def test_processes_that_build_different_states_are_stopped(tmp_path):
    """Each process must start from the same state: started from different weights, both
    processes stop with an error naming the one that differs, before any step."""
    task = get_task("index-recall")
    config = task.Config(n=256, hidden_size=32, embedding_dim=16)
    model = task.model(config)
    data = task.data(config, np.random.default_rng(0))
    params = task.init(model, jax.random.key(0), task.init_batch(data, config))
    weights = params_to_state_dict(params)
    save_safetensors(weights, tmp_path / "a.safetensors")
    weights["fc.bias"] = weights["fc.bias"] + 1
    save_safetensors(weights, tmp_path / "b.safetensors")
    address = f"127.0.0.1:{free_port()}"
    flags = ["--coordinator-address", address, "--num-processes", "2", "--out", str(tmp_path)]
    results = finish(
        [
            start([*TRAIN, *flags, "--process-id", str(i), "--init-from", str(tmp_path / name)])
            for i, name in enumerate(("a.safetensors", "b.safetensors"))
        ]
    )
    for r in results:
        assert r["rc"] == 2, r["err"][-3000:]
        assert "the train state differs between processes: processes [1] hold" in r["err"]
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_bad_flag_fails_before_joining():
    """A bad --set fails this process at once, before it waits for the others to join
    (nobody listens at the coordinator address)."""
    args = [*TRAIN, "--set", "epoch=2", "--coordinator-address", f"127.0.0.1:{free_port()}"]
    (r,) = finish([start([*args, "--num-processes", "2", "--process-id", "1"])])
    assert r["rc"] == 2 and "unknown config key 'epoch'" in r["err"]


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_process_stops_the_other(tmp_path, victim):
    """SIGKILL one process after the first evaluation: the other exits non-zero within
    seconds, never hangs. Process 0 names the lost process; when process 0 (jax's
    coordination service) dies, jax itself terminates process 1 and says so."""
    out = tmp_path / "run"
    procs = processes([*TRAIN, "--set", "epochs=1000", "--out", str(out)])
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").stat().st_size:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.02)
        os.kill(procs[victim].pid, signal.SIGKILL)
        tick = time.monotonic()
        other = procs[1 - victim]
        _, err = other.communicate(timeout=60)
        seconds = time.monotonic() - tick
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert other.returncode != 0
    assert seconds < 30, seconds
    if victim == 1:
        assert other.returncode == 2
        assert "error: process 0 of 2 lost process 1 (killed, crashed" in err
        assert any(sign in err for sign in distributed.PEER_LOST) and "--resume" in err
    else:
        assert "another task died" in err or "lost process 0" in err, err[-3000:]
    _, meta = read_checkpoint(out / "checkpoint.msgpack")  # the last good one, whole
    assert meta["epoch"] >= 1


# ----------------------------------------------------------------------------- in this process


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_processes": 2}, "give coordinator_address, num_processes and process_id together"),
        ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"in \[0, 1\]"),
        ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, "int >= 1"),
        ({"heartbeat_timeout": 0}, "heartbeat_timeout must be an int >= 1"),
    ],
)
def test_a_bad_distributed_spec_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Distributed(**kwargs)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-processes", "2"], "give --coordinator-address HOST:PORT, --num-processes N"),
        (
            ["--coordinator-address", "h", "--num-processes", "2", "--process-id", "0"],
            "coordinator_address must be 'HOST:PORT'",
        ),
    ],
)
def test_cli_distributed_flags_are_checked(flags, message, capsys):
    jax.devices()  # were the flags let through, joining would fail at once, not wait
    assert cli.main(["train", "index-recall", *flags]) == 2
    assert message in capsys.readouterr().err


def test_fit_after_jax_computed_says_to_initialize_first():
    jax.devices()
    before = jax.config.jax_cpu_collectives_implementation
    spec = Distributed("127.0.0.1:1234", num_processes=2, process_id=0)
    with pytest.raises(RuntimeError, match="must run before jax computes anything.*--process-id"):
        runs.fit(get_task("index-recall"), distributed=spec, progress=False)
    assert not jax.distributed.is_initialized()
    assert jax.config.jax_cpu_collectives_implementation == before
    with pytest.raises(TypeError, match="distributed must be None, True"):
        runs.fit(get_task("index-recall"), distributed={"num_processes": 2})


def test_one_process_agrees_with_itself():
    """Without jax.distributed: agree is a plain block, every process is the writer."""
    assert distributed.is_writer() and not distributed.joined()
    with pytest.raises(KeyError, match="kept"), distributed.agree("testing"):
        raise KeyError("kept")
    tree = {"w": jax.numpy.ones(3)}
    assert parallel.local(tree)["w"] is tree["w"]
    distributed.check_same(tree, "nothing")  # one process: nothing to compare
