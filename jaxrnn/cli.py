"""``jaxrnn list | train | eval | sample | export`` (also ``python -m jaxrnn``).

The command line over :mod:`jaxrnn.runs` and :mod:`jaxrnn.tasks`; the only module that speaks
in flags (``--resume``, ``--set``): the library's errors name its arguments, and this module
adds the command to type where one helps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import traceback
import typing

import jax

from .callbacks import TensorBoard
from .data import cache_dir
from .distributed import (
    Distributed,
    ProcessFailedError,
    agree,
    initialize,
    is_writer,
    joined,
    leave,
)
from .files import load_safetensors, save_safetensors
from .interop import load_torch_state_dict, params_to_state_dict, save_torch_state_dict
from .runs import (
    NonFiniteError,
    RunExistsError,
    evaluate_checkpoint,
    fit,
    restore_run,
    resume_config,
)
from .task import TaskConfig
from .tasks import TASKS, get_task, task_of_checkpoint
from .tasks.charlm import load_model, sample

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_overrides(config_cls: type[TaskConfig], items: list[str]) -> dict:
    """``["key=value", ...]`` → typed ``{key: value}`` checked against the config's fields."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in fields:
            raise ValueError(
                f"unknown config key {key!r} for {config_cls.__name__}; valid keys: "
                f"{', '.join(sorted(fields))}"
            )
        out[key] = _convert(key, raw.strip(), hints[key])
    return out


def _convert(key: str, raw: str, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if type(None) in args:  # Optional[X]: "none" or an X
        if raw.lower() == "none":
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == raw:
                return choice
        raise ValueError(f"{key} must be one of {', '.join(map(str, args))}; got {raw!r}")
    if origin is tuple:
        parts = [p for p in raw.strip("()[]").split(",") if p.strip()]
        return tuple(_convert(key, p.strip(), args[0]) for p in parts)
    if hint is bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(f"{key} must be a boolean (true/false), got {raw!r}")
    try:
        return hint(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {getattr(hint, '__name__', hint)}, got {raw!r}") from None


def _cmd_list(args) -> int:
    for name in sorted(TASKS):
        task = TASKS[name]
        print(f"{name:14s} {task.description}")
    return 0


def _cmd_train(args) -> int:
    task = get_task(args.task)
    overrides = parse_overrides(task.Config, args.set or [])
    distributed = _distributed(args)  # checked before joining: a bad flag fails every process
    initialize(distributed)  # jax.distributed, before jax computes anything
    out = pathlib.Path(args.out or f"runs/{task.name}")
    seed = 0 if args.seed is None else args.seed
    with agree("reading the config"):  # e.g. one host without the checkpoint: all stop
        if args.resume:  # the checkpoint's config and seed: --set names only what changes
            config, seed = _resume_config(task, out, overrides)
            seed = seed if args.seed is None else args.seed
        else:
            config = task.Config(**overrides)
        init = read_weights(args.init_from) if args.init_from else None
    board = args.tensorboard
    callbacks = [TensorBoard(board or out / "tensorboard")] if board is not None else []
    writer = is_writer()  # process 0 of a multi-process run prints; fit writes there alone
    if writer:
        print(f"training {task.name} → {out}")
    try:
        result = fit(
            task,
            config,
            seed=seed,
            out_dir=out,
            resume=args.resume,
            overwrite=args.overwrite,
            eval_every=args.eval_every,
            callbacks=callbacks,
            init_state_dict=init,
            devices=args.devices,
            compilation_cache=None if args.no_compile_cache else cache_dir() / "xla",
            distributed=distributed,
        )
    except KeyError as e:  # a state_dict that is not the model's: say which file
        if init is None or "state_dict" not in str(e):
            raise
        raise ValueError(f"{args.init_from}: {e.args[0]}") from None
    except RunExistsError as e:
        hint = "add --resume to continue it, --overwrite to replace it, or choose another --out"
        raise RunExistsError(e.path, e.found, hint) from None
    except NonFiniteError as e:  # the command that continues from the last good checkpoint
        if e.checkpoint is not None:
            e.args = (
                f"{e.args[0]} To continue from it: jaxrnn train {task.name} --out {out} "
                f"--resume --set learning_rate={e.learning_rate / 10:g}",
            )
        raise
    if writer:
        print(json.dumps({"task": task.name, "final": result.final}, indent=2, default=str))
    return 0


def _distributed(args) -> Distributed | None:
    """The multi-process run the flags ask for: ``--coordinator-address``, ``--num-processes``
    and ``--process-id`` together, or ``--distributed`` alone (jax's cluster detection)."""
    flags = (args.coordinator_address, args.num_processes, args.process_id)
    if all(flag is None for flag in flags):
        return Distributed() if args.distributed else None
    if any(flag is None for flag in flags):
        raise ValueError(
            "give --coordinator-address HOST:PORT, --num-processes N and --process-id I "
            "together (or --distributed alone, for jax's cluster auto-detection)"
        )
    return Distributed(*flags)


def read_weights(path: str) -> dict:
    """A weights file by its suffix: ``.safetensors``, else a ``torch.save``-d state_dict."""
    if pathlib.Path(path).suffix == ".safetensors":
        return load_safetensors(path)
    return load_torch_state_dict(path)


def _resume_config(task, out, overrides):
    try:
        return resume_config(task, out, overrides)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(str(e).replace("cannot resume:", "--resume:", 1)) from None


def _task(args):
    """The task named on the command line, else the checkpoint's; both must agree."""
    task = task_of_checkpoint(args.checkpoint)
    if args.task is not None and args.task != task.name:
        raise ValueError(f"{args.checkpoint} holds a {task.name!r} checkpoint, not {args.task!r}")
    return task


def _cmd_export(args) -> int:
    if not (args.to_torch or args.to_safetensors):
        raise ValueError("export needs --to-torch FILE.pt and/or --to-safetensors FILE")
    _, _, params, _, meta = restore_run(_task(args), args.checkpoint)
    state_dict = params_to_state_dict(params)
    which = f"best epoch {meta['best']['epoch']}" if meta.get("best") else f"epoch {meta['epoch']}"
    for path, save in (
        (args.to_torch, save_torch_state_dict),
        (args.to_safetensors, save_safetensors),
    ):
        if path:
            save(state_dict, path)
            print(f"wrote {len(state_dict)} tensors ({which} of {args.checkpoint}) to {path}")
    return 0


def _cmd_eval(args) -> int:
    task = _task(args)
    final = evaluate_checkpoint(task, args.checkpoint)
    print(json.dumps({"task": task.name, "final": final}, indent=2, default=str))
    return 0


def _cmd_sample(args) -> int:
    model, params, config = load_model(args.checkpoint)
    text = sample(
        model,
        params,
        config.alphabet,
        args.prompt,
        args.length,
        args.temperature,
        key=jax.random.key(args.seed),
    )
    print(args.prompt + text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxrnn", description="jaxrnn tasks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the tasks").set_defaults(func=_cmd_list)
    _train_parser(sub.add_parser("train", help="train a task end to end"))
    ev = sub.add_parser("eval", help="evaluate a checkpoint")
    ev.add_argument("task", nargs="?", help="optional: the checkpoint knows its task")
    ev.add_argument("--checkpoint", required=True, help="a run directory or checkpoint file")
    ev.set_defaults(func=_cmd_eval)
    ex = sub.add_parser("export", help="write a run's params as a torch state_dict")
    ex.add_argument("task", nargs="?", help="optional: the checkpoint knows its task")
    ex.add_argument("--checkpoint", required=True, help="a run directory or checkpoint file")
    ex.add_argument("--to-torch", metavar="FILE.pt", help="a torch.save file (needs torch)")
    ex.add_argument(
        "--to-safetensors",
        metavar="FILE.safetensors",
        help="a safetensors file: torch reads it without pickle (safetensors.torch.load_file)",
    )
    ex.set_defaults(func=_cmd_export)
    sm = sub.add_parser("sample", help="generate text from a charlm checkpoint")
    sm.add_argument("--checkpoint", required=True, help="a charlm run directory or checkpoint")
    sm.add_argument("--prompt", default="", help='text to continue (default "": a new line)')
    sm.add_argument("--length", type=int, default=500, help="characters to generate")
    sm.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    sm.add_argument("--seed", type=int, default=0)
    sm.set_defaults(func=_cmd_sample)
    return parser


def _train_parser(train: argparse.ArgumentParser) -> None:
    train.add_argument("task")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    train.add_argument("--seed", type=int, help="default 0 (with --resume: the checkpoint's)")
    train.add_argument("--out", help="output directory (default runs/TASK)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from its checkpoint, with its config (--set may change "
        "epochs and learning_rate)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace the run in OUT (deletes its files)"
    )
    train.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="also evaluate, checkpoint and select every N steps (a long run reports sooner)",
    )
    train.add_argument(
        "--tensorboard",
        nargs="?",
        const="",
        metavar="DIR",
        help="write TensorBoard event files (default DIR: OUT/tensorboard)",
    )
    train.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="compile from scratch (default: JAX's persistent cache in the jaxrnn cache dir)",
    )
    train.add_argument(
        "--init-from",
        "--init-from-torch",
        dest="init_from",
        metavar="FILE",
        help="start from weights of the task's reference model: a torch state_dict (.pt) or "
        "a .safetensors file",
    )
    train.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="data-parallel over N devices (batch split, params replicated); "
        "on a CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N",
    )
    _distributed_flags(train)
    train.set_defaults(func=_cmd_train)


def _distributed_flags(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group(
        "multi-process training (data parallel across hosts; process 0 writes the outputs)"
    )
    group.add_argument(
        "--coordinator-address",
        metavar="HOST:PORT",
        help="process 0's address and a free port on it, the same for every process",
    )
    group.add_argument("--num-processes", type=int, metavar="N", help="processes in the run")
    group.add_argument("--process-id", type=int, metavar="I", help="this process: 0 ... N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a run found by jax's cluster auto-detection (SLURM srun, Open MPI, Cloud "
        "TPU) instead of the three flags above",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        KeyError,
        ValueError,
        OSError,
        FloatingPointError,
        ImportError,
        ProcessFailedError,
    ) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"jaxrnn {args.command}: error: {message}", file=sys.stderr)
        return leave(2)  # a multi-process run: now, not after jax waits for a lost peer
    except BaseException:  # a bug, Ctrl-C: the traceback, then as above
        if not joined():
            raise
        traceback.print_exc()
        return leave(1)


if __name__ == "__main__":
    sys.exit(main())
