"""addition's data: held-out problems really are held out; the commutative augmentation;
the presets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn.engine import make_optimizer
from jaxrnn.task import TaskConfig
from jaxrnn.tasks import get_task
from jaxrnn.tasks.addition import IN_ALPHABET, OUT_ALPHABET, decode_ids


def _problems(split, config):
    read_y = -1 if config.reverse_answer else 1
    return [
        (decode_ids(x, IN_ALPHABET), decode_ids(y, OUT_ALPHABET)[::read_y])
        for x, y in zip(split["x"], split["y"])
    ]


def test_test_problems_are_not_train_problems_in_either_order():
    task = get_task("addition")
    # 2-digit operands: 8,100 pairs, so 3,000 draws collide often — the filter must act.
    config = task.Config(n_examples=3000, min_digits=2, max_digits=2, commutative=True)
    data = task.data(config, np.random.default_rng(0))
    train = {p for p, _ in _problems(data["train"], config)}
    test = _problems(data["test"], config)
    assert 0 < len(test) < 300  # some of the 300 drawn test problems were dropped
    for problem, answer in test:
        x, y = problem.split("+")
        assert problem not in train and f"{y}+{x}" not in train
        assert int(answer) == int(x) + int(y)


def test_commutative_doubles_the_train_problems_with_swapped_operands():
    task = get_task("addition")
    plain = task.Config(n_examples=200, commutative=False)
    both = plain.replace(commutative=True)
    a = _problems(task.data(plain, np.random.default_rng(1))["train"], plain)
    b = _problems(task.data(both, np.random.default_rng(1))["train"], both)
    assert b[: len(a)] == a and len(b) == 2 * len(a)
    swapped = ["+".join(p.split("+")[::-1]) for p, _ in a]
    assert [p for p, _ in b[len(a) :]] == swapped
    assert [s for _, s in b[len(a) :]] == [s for _, s in a]


def test_weight_decay_is_decoupled_like_torch_adamw():
    """With a zero gradient Adam's update is 0, so AdamW moves p by exactly -lr·wd·p."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    opt = make_optimizer(TaskConfig(learning_rate=0.1, weight_decay=0.01))
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["w"], params["w"] * (1 - 0.1 * 0.01), rtol=1e-7)


def test_presets_fill_only_the_fields_left_unset():
    task = get_task("addition")
    fast = task.resolve(task.Config())
    assert (fast.batch_size, fast.learning_rate, fast.grad_clip, fast.on_device_epoch) == (
        128,
        3e-3,
        1.0,
        True,
    )
    seed = task.resolve(task.Config(preset="seed"))
    assert (seed.batch_size, seed.learning_rate, seed.grad_clip, seed.epochs) == (32, 1e-3, 0.0, 30)
    mine = task.resolve(task.Config(learning_rate=5e-4, epochs=3))
    assert (mine.learning_rate, mine.epochs, mine.batch_size) == (5e-4, 3, 128)


def test_the_seed_models_train_as_the_seed_does_whatever_the_preset():
    task = get_task("addition")
    for preset in ("fast", "seed"):
        c = task.resolve(task.Config(model="sumlstm", preset=preset))
        assert (c.hidden_size, c.num_layers, c.epochs) == (200, 5, 10)
        assert (c.batch_size, c.learning_rate, c.grad_clip, c.on_device_epoch) == (
            32,
            1e-3,
            0.0,
            False,
        )


def test_an_unknown_preset_is_named():
    task = get_task("addition")
    with pytest.raises(ValueError, match="preset must be one of"):
        task.resolve(task.Config(preset="slow"))
