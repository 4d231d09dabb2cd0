"""What this machine remembers about its Vast deployments: ``home/vast/<name>/<tag>.json``.

One record per (name, tag), written after every successful PUT: the
deployment and endpoint ids and the Manifest JSON that was applied, so the
next deploy can decide its tier without asking Vast. Files are 0600, written
atomically; the record holds no key or secret.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DeployRecord", "record_path", "read_record", "write_record", "records_for", "all_records", "delete_record"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class DeployRecord:
    name: str
    tag: str
    deployment_id: int
    endpoint_id: int
    manifest_json: str | None
    action: str
    ttl: float | None = None
    updated: float = 0.0


def _component(text: str) -> str:
    """A file name for ``text``; names that needed changes get a digest so they never collide."""
    safe = _UNSAFE.sub("_", text)
    if safe == text and text not in ("", ".", ".."):
        return text
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def record_path(home: str | os.PathLike, name: str, tag: str) -> Path:
    return Path(home) / "vast" / _component(name) / f"{_component(tag)}.json"


def read_record(home: str | os.PathLike, name: str, tag: str) -> DeployRecord | None:
    try:
        data = json.loads(record_path(home, name, tag).read_text())
        return DeployRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_record(home: str | os.PathLike, record: DeployRecord) -> None:
    path = record_path(home, record.name, record.tag)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = asdict(record) | {"updated": time.time()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _records(paths) -> list[DeployRecord]:
    found = []
    for path in sorted(paths):
        try:
            found.append(DeployRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return found


def records_for(home: str | os.PathLike, name: str) -> list[DeployRecord]:
    return [r for r in _records((Path(home) / "vast" / _component(name)).glob("*.json")) if r.name == name]


def all_records(home: str | os.PathLike) -> list[DeployRecord]:
    """Every deployment this machine made on Vast and has not torn down."""
    return _records((Path(home) / "vast").glob("*/*.json"))


def delete_record(home: str | os.PathLike, name: str, tag: str) -> None:
    record_path(home, name, tag).unlink(missing_ok=True)
