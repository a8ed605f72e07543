"""Engine features for tasks like ``sentiment``: the per-epoch evaluation split, model
selection on a history key (``Task.select``) that survives a resume, and the ``batches`` hook.

A toy task makes every number predictable: one parameter ``w`` starts at 0 and is pulled to 1
by Adam; the score ``-(w - 0.43)²`` peaks in the middle of the run, so the best epoch is
neither the first nor the last.
"""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxrnn.checkpoints import BEST, CHECKPOINT, load_checkpoint
from jaxrnn.runs import evaluate_checkpoint, fit
from jaxrnn.task import Task, TaskConfig, iterate_batches

PEAK = 0.43


@dataclasses.dataclass(frozen=True)
class ToyConfig(TaskConfig):
    epochs: int = 8
    batch_size: int = 4
    learning_rate: float = 0.1
    splits: tuple[str, ...] = ("train", "valid", "test")


class Weight(nn.Module):
    @nn.compact
    def __call__(self, x):  # x [B, 1] → [B]
        return (self.param("w", nn.initializers.zeros, ()) * x)[:, 0]


class Toy(Task):
    name = "toy-select"
    Config = ToyConfig
    metric = "test_score"
    select = "valid_score"

    def data(self, config, rng):
        return {name: {"x": np.ones((4, 1), np.float32)} for name in config.splits}

    def model(self, config):
        return Weight()

    def loss(self, model, params, batch, *, key, train):
        w = model.apply({"params": params}, batch["x"]).mean()
        return (w - 1) ** 2, {"score": -((w - PEAK) ** 2), "w": w}

    def evaluate(self, steps, params, data, config):
        final = {}
        for name in set(data) - {"train"}:
            metrics = steps.evaluate(params, self.batches(data[name], config, None))
            final |= {f"{name}_{k}": v for k, v in metrics.items()}
        return final


class ToyLast(Toy):
    """No selection: the last epoch is the model."""

    select = None


class ToyRagged(ToyLast):
    """A ``batches`` hook whose batches differ in shape (3 + 1 examples), like length buckets."""

    def __init__(self):
        self.eval_calls = 0

    def batches(self, split, config, rng):
        self.eval_calls += rng is None
        order = np.arange(4) if rng is None else rng.permutation(4)
        return [
            {k: v[order[:3]] for k, v in split.items()},
            {k: v[order[3:]] for k, v in split.items()},
        ]


TOY, LAST = Toy(), ToyLast()  # one instance each: the engine's jitted steps are cached per task


def _same_tree(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "splits, evaluated",
    [(("train", "valid", "test"), "valid"), (("train", "test"), "test"), (("train",), "train")],
)
def test_each_epoch_is_evaluated_on_valid_else_test_else_train(splits, evaluated):
    result = fit(LAST, ToyConfig(epochs=2, splits=splits), progress=False)
    keys = {k for k in result.history[-1] if k.endswith("_score")}
    assert keys == {"train_score", f"{evaluated}_score"}


def test_selection_keeps_the_best_epoch_and_evaluates_it(tmp_path):
    result = fit(TOY, ToyConfig(), out_dir=tmp_path, progress=False)
    scores = [row["valid_score"] for row in result.history]
    best = int(np.argmax(scores)) + 1
    assert 1 < best < len(scores), f"the toy's score should peak mid-run: {scores}"
    assert result.best.epoch == best and result.final["best_epoch"] == best
    # The final evaluation ran on the best epoch's parameters, not the last ones.
    assert result.final["valid_w"] == pytest.approx(result.history[best - 1]["valid_w"])
    assert result.final["valid_w"] != pytest.approx(result.history[-1]["valid_w"])
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["best_epoch"] == best
    assert record["selected_by"] == {"metric": "valid_score", "mode": "max", "value": max(scores)}
    saved, meta = load_checkpoint(tmp_path / BEST)
    _same_tree(saved["params"], result.best.params)
    assert meta["epoch"] == best and meta["best"]["epoch"] == best


def test_selection_min_mode_and_no_selection():
    class ToyMin(Toy):
        select, select_mode = "valid_loss", "min"

    result = fit(ToyMin(), progress=False)
    losses = [row["valid_loss"] for row in result.history]
    assert result.best.epoch == int(np.argmin(losses)) + 1
    assert fit(LAST, ToyConfig(epochs=2), progress=False).best is None


def test_selection_needs_a_history_key():
    class ToyTypo(Toy):
        select = "valid_scor"

    message = "select='valid_scor' is not a history key; the keys are epoch, step"
    with pytest.raises(ValueError, match=message):
        fit(ToyTypo(), ToyConfig(epochs=1), progress=False)


@pytest.mark.parametrize("cut", [2, 6])  # interrupted before and after the best epoch
def test_resume_with_selection_is_bit_identical(tmp_path, cut):
    task, config = TOY, ToyConfig()
    full = fit(task, config, out_dir=tmp_path / "full", progress=False)
    fit(task, config, out_dir=tmp_path / "cut", progress=False, max_epochs=cut)
    resumed = fit(task, config, out_dir=tmp_path / "cut", progress=False, resume=True)
    drop_time = lambda h: [{k: v for k, v in row.items() if k != "time"} for row in h]  # noqa: E731
    assert drop_time(resumed.history) == drop_time(full.history)
    assert resumed.best.epoch == full.best.epoch and resumed.final == full.final
    _same_tree(resumed.best.params, full.best.params)
    _same_tree(resumed.state.params, full.state.params)
    saved = [load_checkpoint(tmp_path / run / BEST)[0] for run in ("cut", "full")]
    _same_tree(*saved)


def test_evaluate_checkpoint_uses_the_best_params(tmp_path):
    result = fit(TOY, ToyConfig(), out_dir=tmp_path, progress=False)
    for path in (tmp_path, tmp_path / CHECKPOINT, tmp_path / BEST):
        final = evaluate_checkpoint(TOY, path)
        assert final == pytest.approx(result.final), path


def test_batches_hook_drives_training_and_evaluation():
    task = ToyRagged()
    result = fit(task, ToyConfig(epochs=3), progress=False)
    assert int(result.state.step) == 3 * 2  # two hook batches per epoch, not one of 4
    assert task.eval_calls == 3 + 2  # after each epoch, then the final valid and test


def test_on_device_epoch_refuses_batches_of_several_shapes():
    with pytest.raises(
        ValueError,
        match=r"on_device_epoch=True .* 2 different shapes .* "
        r"set on_device_epoch=False",
    ):
        fit(ToyRagged(), ToyConfig(epochs=1, on_device_epoch=True), progress=False)


def test_default_batches_hook_is_iterate_batches():
    split, config = {"x": np.arange(10)}, ToyConfig(batch_size=3)
    hooked = LAST.batches(split, config, np.random.default_rng(0))
    plain = iterate_batches(split, 3, np.random.default_rng(0))
    assert [b["x"].tolist() for b in hooked] == [b["x"].tolist() for b in plain]
    in_order = LAST.batches(split, config, None)
    assert [b["x"].tolist() for b in in_order] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
