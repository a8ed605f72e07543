"""Writing files so that nothing the user saved is lost."""

from __future__ import annotations

import os
import pathlib
import tempfile


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
