"""Bundle set-up before any user code runs: config.json, its ``runs`` commands and plain envs.

Commands run in the bundle directory like the official worker does (strings via
``sh -c``, lists as argv); their output goes to the worker log line by line and
the last lines are kept, because "exit status 1" alone explains nothing.
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import sys

__all__ = ["TAIL_LINES", "SetupError", "read_config", "apply_envs", "run_commands", "run_command"]

TAIL_LINES = 20


class SetupError(RuntimeError):
    """config.json is unusable or a set-up command failed."""


def read_config(bundle_dir: str) -> dict:
    path = os.path.join(bundle_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise SetupError(f"{path} must hold a JSON object")
    return config


def apply_envs(envs) -> None:
    """Set config.json's plain envs (``[[key, value], ...]`` or a dict) in this process."""
    pairs = envs.items() if isinstance(envs, dict) else (envs or [])
    for pair in pairs:
        key, value = pair
        os.environ[str(key)] = str(value)


async def run_commands(runs, cwd: str) -> None:
    for command in runs or []:
        await run_command(command, cwd)


async def run_command(command, cwd: str) -> None:
    """Run one set-up command; raise SetupError with its last output lines if it fails."""
    argv = ["sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise SetupError("empty set-up command in config.json runs")
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                limit=1 << 20)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            tail.append(line)
            print(line, file=sys.stdout, flush=True)
        code = await proc.wait()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if code != 0:
        raise SetupError(f"set-up command {command!r} exited with status {code}; last lines:\n" + "\n".join(tail))
