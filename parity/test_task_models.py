"""Whole task models: each jaxrnn task model against its seed's PyTorch model.

``test_task_model`` runs every check of ``parity/tasks.py`` (names, round trip, outputs and
loss, gradients of the task loss, 20 Adam steps, generation / greedy decoding / sampling) on
each entry of ``parity.tasks.MODELS`` in float64 and float32; ``test_markov_baseline`` the
charlm Markov row. The other tests: the registry covers every task and every seed class, a
mismatched state_dict is a clear error, the checks can fail, and adam20's gradient clipping
is torch's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jaxrnn  # noqa: E402
from jaxrnn.tasks import TASKS, get_task  # noqa: E402
from parity import __main__ as report_main  # noqa: E402
from parity import models, tasks  # noqa: E402
from parity.cases import DTYPES  # noqa: E402
from parity.checks import parity_mode  # noqa: E402


@pytest.mark.parametrize(
    "entry, dtype",
    [pytest.param(e, d, id=tasks.task_id(e, d)) for e in tasks.MODELS for d in DTYPES],
)
def test_task_model(entry, dtype, parity_mode):
    report = tasks.run_task_model(entry, dtype)
    problems = [
        f"{check}: error {report.errors[check]:.3g} > tolerance "
        f"{tasks.tolerance(check, dtype):.0e} (worst: {report.notes.get(check) or '-'})"
        for check in report.failures(dtype)
    ]
    assert not problems, f"{tasks.task_id(entry, dtype)}\n  " + "\n  ".join(problems)
    assert set(report.errors) == set(tasks.CHECKS) - ({"decode"} if entry.decode is None else set())
    task = get_task(entry.task)
    if task.resolve(task.Config().replace(**entry.config)).grad_clip:  # must act at least once
        clipped = int(re.match(r"(\d+) of", report.notes["clipped"])[1])
        assert clipped > 0, report.notes["clipped"]


def test_markov_baseline(monkeypatch):
    """The Markov row: the seed's dict counts exactly, its Witten–Bell probabilities and bits
    per character within float64 tolerance; a row of ``python -m parity``; and it fails when
    the reference moves by 1e-9."""
    report = tasks.run_markov(tasks.MARKOV, "float64")
    assert not report.failures("float64"), report
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert report_main.main(["--only", "tasks", "-k", "markov"]) == 0
    assert re.search(r"^markov-f64 .* PASS$", out.getvalue(), re.MULTILINE), out.getvalue()

    reference = models.markov_dict_probabilities
    monkeypatch.setattr(
        models, "markov_dict_probabilities", lambda *args: reference(*args) * (1 + 1e-9)
    )
    assert tasks.run_markov(tasks.MARKOV, "float64").failures("float64") == ["out"]


def test_registry_covers_every_task():
    assert {e.task for e in tasks.MODELS} == set(TASKS) and len(TASKS) == 8
    assert len({e.id for e in tasks.ROWS}) == len(tasks.ROWS)
    assert set(tasks.QUICK) <= {e.id for e in tasks.ROWS}
    built = set()
    for entry in tasks.MODELS:
        task = get_task(entry.task)
        config = task.resolve(task.Config().replace(**entry.config))
        built |= {type(m).__name__ for m in entry.torch_model(config).modules()}
    seed_classes = {
        "Net",
        "HiHelloModel",
        "HiHelloModel2",
        "Input2Hidden",
        "Hidden2Output",
        "CustomRNNCell",
        "BitFlipModel",
        "LinRNN",
        "SeqEncoder",
        "SeqDecoder",
        "SeqEncoderDecoder",
        "SeqEncoderRNN",
        "SeqDecoderRNN",
        "SeqEncoderDecoderRNN",
        "SeqEncoderRNNMasked",
        "SeqEncoderDecoderRNNMasked",
        "SumRNN",
        "SumLSTM",
        "Seq2Seq",
        "PredictorLSTM",
        "SentimentRNN",
    }
    assert seed_classes <= built, f"no row builds {sorted(seed_classes - built)}"


def _params_like(task_name: str, **changes):
    task = get_task(task_name)
    config = task.resolve(task.Config().replace(**changes))
    model = task.model(config)
    batch = task.init_batch(task.data(config, np.random.default_rng(0)), config)
    return config, jax.eval_shape(lambda k: task.init(model, k, batch), jax.random.key(0))


def test_state_dict_of_another_model_is_a_clear_error():
    """Name-matched transfer refuses a model of a different structure, saying what differs."""
    _, like = _params_like("copy", cell="builtin", n_train=4, n_test=1)
    like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like)
    custom = models.SeqEncoderDecoder(3, 20)  # the hand-written cell, not the nn.RNN one
    with pytest.raises(KeyError, match="missing keys.*encoder.rnn.weight_ih_l0") as e:
        jaxrnn.state_dict_to_params(custom.state_dict(), like=like)
    assert "unexpected keys" in str(e.value) and "encoder.initial_hidden_state" in str(e.value)

    config, like = _params_like("addition", model="sumrnn", n_examples=40)
    like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like)
    lstm = models.SumLSTM(12, 11, config.hidden_size, config.num_layers)  # 4H-row weights
    with pytest.raises(ValueError, match=r"encoder_rnn.weight_ih_l0: state_dict has \(400, 12\)"):
        jaxrnn.state_dict_to_params(lstm.state_dict(), like=like)


def test_the_checks_can_fail():
    """A reference with the wrong criterion (the step model's per-step losses averaged, as
    Model2 does, instead of summed as the seed's Model loop does) fails out, grads and adam20;
    a torch weight perturbed by 1e-6 after the transfer fails them in float64."""
    entry = next(e for e in tasks.MODELS if e.id == "hihello-step")

    def mean_over_steps(module, batch):
        loss, outputs = tasks.hihello_step_loss(module, batch)
        return loss / batch["x"].shape[1], outputs

    wrong_loss = dataclasses.replace(entry, torch_loss=mean_over_steps)
    with parity_mode("float64"):
        report = tasks.run_task_model(wrong_loss, "float64")
    assert {"out", "grads", "adam20"} <= set(report.failures("float64")), report.errors
    assert "loss" in report.notes["out"]

    def perturbed(config):
        module = entry.torch_model(config)
        module.rnn.register_forward_pre_hook(_nudge)
        return module

    nudged = dataclasses.replace(entry, torch_model=perturbed)
    with parity_mode("float64"):
        report = tasks.run_task_model(nudged, "float64")
    assert {"out", "grads", "adam20"} <= set(report.failures("float64")), report.errors


def _nudge(rnn, args):
    """Once, before the first forward: move one weight by 1e-6 (after the state_dict copy)."""
    if not getattr(rnn, "_nudged", False):
        rnn._nudged = True
        with torch.no_grad():
            rnn.weight_hh_l0[0, 0] += 1e-6


def test_sampling_check_can_fail():
    """charlm's decode compares characters drawn with the same noise: a torch sampler fed
    other uniforms (each shifted by 0.5, mod 1) draws other characters, and decode is inf."""
    entry = next(e for e in tasks.MODELS if e.id == "charlm")

    def other_noise(module, b, config):
        u = (np.array(tasks.charlm_uniforms()) + 0.5) % 1.0
        prompt = b["x"][0, : tasks.PROMPT_LENGTH]
        return {
            "tokens": torch.stack(
                [
                    models.sample_chars(module, prompt, torch.from_numpy(u), t)
                    for t in tasks.sampling_temperatures(config)
                ]
            )
        }

    shifted = dataclasses.replace(entry, decode=tasks.Decode(other_noise, tasks.charlm_sample_jax))
    with parity_mode("float32"):  # the jitted step of test_task_model[charlm-f32], if it ran
        report = tasks.run_task_model(shifted, "float32")
    assert report.failures("float32") == ["decode"], report.errors
    assert "tokens differ" in report.notes["decode"]
