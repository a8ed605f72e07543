"""The eight tasks, by name: ``TASKS[name]`` is the class, :func:`get_task` an instance.

Each task reproduces one classic PyTorch RNN tutorial (see each module's docstring) as a
:class:`jaxrnn.task.Task` that :func:`jaxrnn.runs.fit` trains.
"""

from __future__ import annotations

import os
import pathlib

from ..checkpoints import read_checkpoint
from ..task import Task
from .addition import Addition
from .bitflip import BitFlip
from .charlm import CharLM
from .copy import Copy
from .hihello import HiHello
from .index_recall import IndexRecall
from .sentiment import Sentiment
from .sinusoid import Sinusoid

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (HiHello, IndexRecall, BitFlip, Sinusoid, Copy, Addition, CharLM, Sentiment)
}


def get_task(name: str) -> Task:
    """The task called ``name`` (``jaxrnn list`` shows them); unknown names raise KeyError."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


def task_of_checkpoint(checkpoint: str | os.PathLike) -> Task:
    """The task a checkpoint (a run directory or a checkpoint file) was trained on."""
    _, meta = read_checkpoint(pathlib.Path(checkpoint))
    return get_task(meta["task"])
