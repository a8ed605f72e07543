"""Checkpoint files: written atomically, checked when read.

A file is ``{"meta": JSON, "body": msgpack of the payload, "sha256": of the body}``; the payload
is ``{"state": TrainState state dict, "best": params (optional)}``. Writing refuses non-finite
values (the previous file stays); reading names the file and what is wrong with it — truncated,
corrupt (digest), not a jaxrnn checkpoint, or a model it does not fit (shapes listed).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import jax
import numpy as np
from flax import serialization, traverse_util

from .files import atomic_write

CHECKPOINT = "checkpoint.msgpack"
BEST = "best.msgpack"
META_KEYS = ("task", "config", "seed", "epoch", "history")  # every checkpoint's meta has them


def save_checkpoint(path: pathlib.Path, state, meta: dict[str, Any], best_params=None) -> None:
    """Write ``state``, ``meta`` (JSON-able) and the best params so far (if any) to ``path``
    atomically (see :func:`atomic_write`). Non-finite params are refused (FloatingPointError)
    and the previous file is kept."""
    payload = {"state": _host_state_dict(state, path)}
    if best_params is not None:
        payload["best"] = _host_state_dict(best_params, path)
    atomic_write(path, _checkpoint_bytes(payload, meta))


def save_params(path: pathlib.Path, params, meta: dict[str, Any]) -> None:
    """Params alone, in the checkpoint layout (``{"state": {"params": ...}}``):
    ``load_checkpoint`` and ``jaxrnn eval --checkpoint`` read it like a checkpoint."""
    atomic_write(
        path, _checkpoint_bytes({"state": {"params": _host_state_dict(params, path)}}, meta)
    )


def _checkpoint_bytes(payload: dict, meta: dict) -> bytes:
    """The file: ``{"meta": JSON, "body": msgpack of the payload, "sha256": of the body}``;
    the digest catches a damaged body that would still parse (a flipped byte in a weight)."""
    body = serialization.msgpack_serialize(payload)
    digest = hashlib.sha256(body).hexdigest()
    return serialization.msgpack_serialize(
        {"meta": json.dumps(meta), "sha256": digest, "body": body}
    )


def _host_state_dict(tree, path) -> dict:
    """``tree``'s state dict as NumPy arrays; raises if a floating array is not finite."""
    raw = jax.device_get(serialization.to_state_dict(tree))
    for name, leaf in traverse_util.flatten_dict(raw, sep=".").items():
        value = np.asarray(leaf)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            raise FloatingPointError(
                f"refusing to write {path}: {name} has non-finite values; "
                "the file on disk is left as it was"
            )
    return raw


def read_checkpoint(path: pathlib.Path) -> tuple[dict, dict]:
    """The raw payload (``state``, optional ``best``) and the meta of a checkpoint file (or of
    a run directory's ``checkpoint.msgpack``). A file that is not a whole jaxrnn checkpoint
    (truncated, garbage, another format) raises ``ValueError`` naming it."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        meta = json.loads(payload["meta"])
    except Exception as e:  # msgpack/JSON errors: say which file, and what it should be
        raise ValueError(
            f"{path} is not a readable jaxrnn checkpoint ({type(e).__name__}: "
            f"{e}); expected a file written by jaxrnn train"
        ) from e
    if "body" in payload:  # else the layout before digests: state and best beside meta
        body = payload["body"]
        digest = hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else None
        if digest is None or digest != payload.get("sha256"):
            raise ValueError(
                f"{path} is corrupt: its contents have sha256 {digest}, the file "
                f"records {payload.get('sha256')}; use another copy"
            )
        payload = serialization.msgpack_restore(body)
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if not isinstance(payload.get("state"), dict) or "params" not in payload["state"]:
        missing.insert(0, "state.params")
    if missing:
        raise ValueError(
            f"{path} is not a jaxrnn checkpoint: it lacks {', '.join(missing)}; "
            "expected a file written by jaxrnn train"
        )
    return payload, meta


def load_checkpoint(path: pathlib.Path, target=None):
    """Read a checkpoint: ``(state, meta)``; with ``target`` the state is restored into its
    structure (shapes checked), else returned as a raw state dict."""
    path = pathlib.Path(path)
    path = path / CHECKPOINT if path.is_dir() else path
    payload, meta = read_checkpoint(path)
    if target is None:
        return payload["state"], meta
    return restore_into(target, payload["state"], path, meta), meta


def restore_into(target, raw, path, meta):
    """``raw`` (a state dict) restored into ``target``'s structure; a checkpoint whose keys or
    shapes differ from the model's is refused with the differences listed."""
    want = _shapes(serialization.to_state_dict(target))
    got = _shapes(raw)
    if want != got:
        shapes = [
            f"{k}: checkpoint {got[k]}, model {want[k]}"
            for k in want
            if k in got and got[k] != want[k]
        ]
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        parts = [
            f"{what} {_few(keys)}"
            for what, keys in (
                ("shapes differ:", shapes),
                ("missing from the checkpoint:", missing),
                ("not in the model:", extra),
            )
            if keys
        ]
        raise ValueError(
            f"checkpoint {path} (task {meta.get('task')!r}) does not fit this "
            f"model: {'; '.join(parts)}"
        )
    return serialization.from_state_dict(target, raw)


def _shapes(state_dict) -> dict[str, Any]:
    flat = traverse_util.flatten_dict(state_dict, keep_empty_nodes=True, sep=".")
    return {k: "{}" if v is traverse_util.empty_node else np.shape(v) for k, v in flat.items()}


def _few(items: list[str], n: int = 4) -> str:
    return "; ".join(items[:n]) + (f" (and {len(items) - n} more)" if len(items) > n else "")
