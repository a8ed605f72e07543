"""What :func:`jaxrnn.runs.fit` tells the outside world while it trains.

A callback is any object with some of these methods (:class:`Callback` has them all, doing
nothing; subclass it and override what you need)::

    on_start(run)            before the first step; ``run.history`` holds a resumed run's rows
    on_steps(step, metrics)  every ``every`` steps: the global step and the mean training
                             metrics since the last call (floats; each call syncs the host)
    on_evaluation(row)       after each evaluation: the history row (``epoch``, ``step``,
                             ``time``, ``train_*``, ``valid_*`` / ``test_*``)
    on_end(result)           after the final evaluation, with the :class:`~jaxrnn.runs.Result`

``fit`` writes ``metrics.jsonl`` through :class:`MetricsLog`; :class:`TensorBoard` writes the
same scalars as TensorBoard event files (``pip install 'jaxrnn[tensorboard]'``).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

METRICS_LOG = "metrics.jsonl"


class Callback:
    """A callback that does nothing; override any of its methods (see the module docs)."""

    every: int = 0  # steps between on_steps calls; 0: never

    def on_start(self, run) -> None:
        pass

    def on_steps(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_evaluation(self, row: dict[str, Any]) -> None:
        pass

    def on_end(self, result) -> None:
        pass


def jsonable(value):
    """``json.dumps``' ``default``: NumPy and JAX scalars and arrays as numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


class MetricsLog(Callback):
    """``metrics.jsonl`` in ``out_dir``: one JSON line per evaluation, appended and flushed as
    the run goes (``tail -f`` it). A resumed run first rewrites the file from its checkpoint's
    history, so the file always holds exactly the rows the checkpoint knows, then appends."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = pathlib.Path(out_dir) / METRICS_LOG

    def on_start(self, run) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(row, default=jsonable) + "\n" for row in run.history)
        self.path.write_text(lines)

    def on_evaluation(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, default=jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())


class TensorBoard(Callback):
    """TensorBoard event files in ``log_dir``: every numeric key of each evaluation row as a
    scalar at the row's ``step`` (the same values as ``metrics.jsonl``), and with ``every``
    the training metrics every that many steps (tags ``steps/...``).

    Needs ``tensorboardX`` (``pip install 'jaxrnn[tensorboard]'``); view with
    ``tensorboard --logdir LOG_DIR``. A resumed run drops events after its checkpoint's step.
    """

    def __init__(self, log_dir: str | os.PathLike, every: int = 0):
        try:
            import tensorboardX
        except ImportError:
            raise ImportError(
                "TensorBoard logging needs tensorboardX: pip install 'jaxrnn[tensorboard]'"
            ) from None
        self._writer_cls = tensorboardX.SummaryWriter
        self.log_dir, self.every, self.writer = pathlib.Path(log_dir), every, None

    def on_start(self, run) -> None:
        step = run.history[-1]["step"] if run.history else None
        self.writer = self._writer_cls(str(self.log_dir), purge_step=step and step + 1)

    def on_steps(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(f"steps/{key}", value, step)

    def on_evaluation(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key not in ("step", "epoch") and _is_number(value):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def on_end(self, result) -> None:
        self.writer.close()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
