"""Writing files so that nothing the user saved is lost."""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.numpy


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """The bytes go to a temp file in the same directory, are fsynced, then renamed over
    ``path``: a write killed midway leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_figure(fig, path: str | os.PathLike) -> str:
    """Lay out, write (PNG, 100 dpi) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def save_safetensors(state_dict: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``{name: array}`` → a ``.safetensors`` file, written atomically. Plain tensors and a
    JSON header, no pickle: torch reads it with ``safetensors.torch.load_file`` (and
    ``model.load_state_dict``), without jaxrnn and without running code from the file."""
    arrays = {name: np.ascontiguousarray(np.asarray(v)) for name, v in state_dict.items()}
    atomic_write(pathlib.Path(path), safetensors.numpy.save(arrays))


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file → ``{name: numpy array}``; anything else is refused naming it."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return safetensors.numpy.load(path.read_bytes())
    except Exception as e:  # safetensors' own errors: say which file, and what it should be
        raise ValueError(
            f"{path} is not a readable .safetensors file ({type(e).__name__}: {e})"
        ) from e
