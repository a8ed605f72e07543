"""``jaxrnn train TASK --init-from-torch FILE.pt`` and ``jaxrnn export TASK --to-torch FILE.pt``:
the seed's torch model and a jaxrnn run exchange weights through files, by name, bit-exactly."""

import pickle

import numpy as np
import pytest
import torch

from jaxrnn import cli
from jaxrnn.interop import load_torch_state_dict
from jaxrnn.runs import restore_run
from jaxrnn.tasks import get_task

from . import models

TINY = ["n=256", "epochs=1", "embedding_dim=8", "hidden_size=16", "batch_size=32"]
SETS = [a for s in TINY for a in ("--set", s)]


def _reference():
    """The seed 000 model at the tiny config (10 symbols, embedding 8, hidden 16)."""
    torch.manual_seed(0)
    return models.Net(10, 8, 16)


def test_torch_to_jaxrnn_to_torch_round_trip_is_bit_exact(tmp_path):
    net = _reference()
    torch.save(net.state_dict(), tmp_path / "init.pt")
    # learning_rate 0: Adam's update is exactly 0, so the run ends with the torch weights.
    args = [
        "train",
        "index-recall",
        "--out",
        str(tmp_path / "run"),
        *SETS,
        "--set",
        "learning_rate=0",
        "--init-from-torch",
        str(tmp_path / "init.pt"),
    ]
    assert cli.main(args) == 0
    assert (
        cli.main(
            [
                "export",
                "index-recall",
                "--checkpoint",
                str(tmp_path / "run"),
                "--to-torch",
                str(tmp_path / "out.pt"),
            ]
        )
        == 0
    )
    back = _reference()
    for p in back.parameters():
        torch.nn.init.zeros_(p)
    back.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True))  # strict
    for name, value in net.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_exported_trained_run_computes_what_jaxrnn_computes(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "index-recall", "--out", str(run), *SETS]) == 0
    assert (
        cli.main(
            [
                "export",
                "index-recall",
                "--checkpoint",
                str(run),
                "--to-torch",
                str(tmp_path / "out.pt"),
            ]
        )
        == 0
    )
    net = _reference().double()
    net.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True))
    task = get_task("index-recall")
    config, steps, params, data, _ = restore_run(task, run)
    x = data["test"]["x"][:16]
    ours = np.asarray(steps.model.apply({"params": params}, **task.model_inputs({"x": x})))
    theirs = net(torch.from_numpy(x).long()).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * max(1, np.abs(theirs).max()))


def test_safetensors_round_trip_with_the_torch_model_needs_no_pickle(tmp_path):
    """torch writes safetensors, jaxrnn trains from them (lr 0) and exports safetensors, which
    torch loads back with ``safetensors.torch`` (no pickle anywhere): the same tensors."""
    from safetensors.torch import load_file, save_file

    net = _reference()
    save_file(net.state_dict(), tmp_path / "init.safetensors")
    run, out = tmp_path / "run", tmp_path / "out.safetensors"
    sets = [*SETS, "--set", "learning_rate=0", "--init-from", str(tmp_path / "init.safetensors")]
    assert cli.main(["train", "index-recall", "--out", str(run), *sets]) == 0
    assert cli.main(["export", "--checkpoint", str(run), "--to-safetensors", str(out)]) == 0
    back = _reference()
    for p in back.parameters():
        torch.nn.init.zeros_(p)
    back.load_state_dict(load_file(out))  # strict
    for name, value in net.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_state_dict_of_another_model_is_refused_with_the_keys(tmp_path, capsys):
    torch.save(torch.nn.LSTM(8, 16).state_dict(), tmp_path / "lstm.pt")
    args = [
        "train",
        "index-recall",
        "--out",
        str(tmp_path / "run"),
        *SETS,
        "--init-from-torch",
        str(tmp_path / "lstm.pt"),
    ]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "lstm.pt" in err and "missing keys" in err and "embedding.weight" in err


class Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_untrusted_pickles_are_not_run(tmp_path, capsys):
    """``weights_only=True``: an object whose unpickling would call a function is refused."""
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="evil.pt is not a loadable torch state_dict"):
        load_torch_state_dict(tmp_path / "evil.pt")
    assert "this ran" not in capsys.readouterr().out
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="holds a dict, not a state_dict"):
        load_torch_state_dict(tmp_path / "meta.pt")
    with pytest.raises(FileNotFoundError, match="no torch state_dict file"):
        load_torch_state_dict(tmp_path / "missing.pt")


def test_export_of_another_tasks_checkpoint_is_refused(tmp_path, capsys):
    assert cli.main(["train", "index-recall", "--out", str(tmp_path / "run"), *SETS]) == 0
    args = ["export", "hihello", "--checkpoint", str(tmp_path / "run"), "--to-torch", "x.pt"]
    assert cli.main(args) == 2
    assert "holds a 'index-recall' checkpoint, not 'hihello'" in capsys.readouterr().err
