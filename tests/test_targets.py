"""Every task's default configuration reaches its target (README, "Task results"). Minutes
each: not in CI.

    pytest -m slow tests/test_targets.py

Tests never touch the network: the real-data tasks run only when their corpus is already in
the cache (``jaxrnn train charlm`` / ``jaxrnn train sentiment`` fetch it once).
"""

import pytest

from jaxrnn import data
from jaxrnn.runs import fit
from jaxrnn.tasks import get_task

pytestmark = pytest.mark.slow

TARGETS = [
    ("index-recall", {}, lambda f: f["test_accuracy"] >= 0.99),
    ("hihello", {"mode": "sequence"}, lambda f: f["predicted"] == "ihello"),
    ("hihello", {"mode": "step"}, lambda f: f["predicted"] == "ihello"),
    ("bitflip", {}, lambda f: f["test_bit_accuracy"] == 1.0 and f["test_exact"] == 1.0),
    ("sinusoid", {}, lambda f: f["generation_mse"] <= 0.05),
    ("sinusoid", {"n_hidden": 1}, lambda f: f["generation_mse"] > 0.3),  # the seed's failure
    ("copy", {}, lambda f: f["test_token_accuracy"] >= 0.995),
    ("copy", {"variant": "reverse"}, lambda f: f["test_token_accuracy"] >= 0.99),
    ("copy", {"variant": "masked", "cell": "builtin"}, lambda f: f["test_token_accuracy"] >= 0.95),
    ("addition", {}, lambda f: f["test_exact_match"] >= 0.95),
    ("sentiment", {}, lambda f: f["test_accuracy"] >= 0.72),
    ("sentiment", {"cell": "lstm"}, lambda f: f["test_accuracy"] >= 0.75),
    ("charlm", {}, lambda f: f["val_bits_per_char"] < f["markov_best_val_bits_per_char"]),
]
CORPUS = {"sentiment": "rotten-tomatoes", "charlm": "shakespeare"}  # the defaults


@pytest.mark.parametrize("name, overrides, reached", TARGETS)
def test_default_run_reaches_target(name, overrides, reached, tmp_path):
    if name in CORPUS and not data.cached(CORPUS[name]):
        pytest.skip(
            f"corpus {CORPUS[name]!r} is not in {data.cache_dir()}: run jaxrnn train {name}"
        )
    task = get_task(name)
    result = fit(task, task.Config(**overrides), seed=0, out_dir=tmp_path, progress=False)
    assert reached(result.final), result.final
