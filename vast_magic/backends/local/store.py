"""The engine's durable state: SQLite in WAL mode at ``home/state.db`` (0600).

Only the daemon writes. Clients read it read-only (``read_previous_manifest_json``)
for dry runs and tier decisions, so those never start the daemon. Secrets
are stored in the ``secrets`` column: the database file lives in the 0700
home and is created 0600, which is the same protection a separate 0600
secrets file would give, with one less file to keep consistent.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import BackendError

__all__ = [
    "SCHEMA", "DeploymentRecord", "WorkerRecord", "db_path", "Store", "read_only", "corrupt_state",
    "read_previous_manifest_json"
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT NOT NULL, tag TEXT NOT NULL, endpoint TEXT NOT NULL, version TEXT NOT NULL,
    manifest TEXT NOT NULL, bundle_path TEXT NOT NULL, bundle_dir TEXT NOT NULL,
    autoscaling TEXT NOT NULL, env TEXT NOT NULL, secrets TEXT NOT NULL,
    python TEXT NOT NULL, site_packages TEXT NOT NULL, not_applied TEXT NOT NULL,
    ttl REAL, last_heartbeat REAL NOT NULL, state TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (name, tag)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tag TEXT NOT NULL, pid INTEGER, start_time INTEGER,
    port INTEGER, state TEXT NOT NULL, perf REAL, version TEXT NOT NULL, error TEXT,
    workdir TEXT NOT NULL, log_path TEXT NOT NULL, created REAL NOT NULL
);
"""

_JSON_COLUMNS = {"autoscaling", "env", "secrets", "site_packages", "not_applied"}


@dataclass
class DeploymentRecord:
    name: str
    tag: str
    endpoint: str
    version: str                 # code fingerprint of the serving version
    manifest: str                # Manifest.to_json()
    bundle_path: str
    bundle_dir: str              # extracted, read-only source for worker copies
    autoscaling: dict
    env: list
    secrets: list
    python: str                  # interpreter the workers run
    site_packages: list
    not_applied: list
    ttl: float | None
    last_heartbeat: float
    state: str                   # deploying | ready | failed
    created: float


@dataclass
class WorkerRecord:
    id: str
    name: str
    tag: str
    pid: int | None
    start_time: int | None       # /proc/<pid>/stat field 22: tells a reused pid apart
    port: int | None
    state: str
    perf: float | None
    version: str
    error: str | None
    workdir: str
    log_path: str
    created: float


def db_path(home: Path) -> Path:
    return Path(home) / "state.db"


class Store:
    """A writer connection owned by the daemon (one thread)."""

    def __init__(self, home: Path):
        path = db_path(home)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise corrupt_state(path, exc) from None

    def close(self) -> None:
        self.db.close()

    # -- deployments ---------------------------------------------------------------
    def put_deployment(self, rec: DeploymentRecord) -> None:
        self._insert("deployments", _encode(asdict(rec)))

    def deployment(self, name: str, tag: str) -> DeploymentRecord | None:
        row = self._select("deployments", "name = ? AND tag = ?", (name, tag))
        return row[0] if row else None

    def deployments(self) -> list[DeploymentRecord]:
        return self._select("deployments", "1", ())

    def delete_deployment(self, name: str, tag: str) -> None:
        self.db.execute("DELETE FROM deployments WHERE name = ? AND tag = ?", (name, tag))

    def set_heartbeat(self, name: str, tag: str, when: float) -> None:
        self.db.execute("UPDATE deployments SET last_heartbeat = ? WHERE name = ? AND tag = ?", (when, name, tag))

    # -- workers ---------------------------------------------------------------------
    def put_worker(self, rec: WorkerRecord) -> None:
        self._insert("workers", asdict(rec))

    def workers(self, name: str | None = None, tag: str | None = None) -> list[WorkerRecord]:
        if name is None:
            return self._select("workers", "1", ())
        return self._select("workers", "name = ? AND tag = ?", (name, tag))

    def delete_worker(self, worker_id: str) -> None:
        self.db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    # -- plumbing --------------------------------------------------------------------
    def _insert(self, table: str, data: dict[str, Any]) -> None:
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        self.db.execute(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})", tuple(data.values()))

    def _select(self, table: str, where: str, params: tuple) -> list:
        return _select(self.db, table, where, params)


def _encode(data: dict[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if k in _JSON_COLUMNS else v for k, v in data.items()}


def _select(db: sqlite3.Connection, table: str, where: str, params: tuple) -> list:
    cls = DeploymentRecord if table == "deployments" else WorkerRecord
    names = [f.name for f in fields(cls)]
    rows = db.execute(f"SELECT {', '.join(names)} FROM {table} WHERE {where} ORDER BY rowid", params).fetchall()
    out = []
    for row in rows:
        data = dict(zip(names, row))
        out.append(cls(**{k: json.loads(v) if k in _JSON_COLUMNS else v for k, v in data.items()}))
    return out


def read_only(home: Path, table: str, where: str = "1", params: tuple = ()) -> list:
    """Rows read through a ``mode=ro`` connection; [] when there is no database yet."""
    path = db_path(home)
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return []
    try:
        return _select(db, table, where, params)
    except sqlite3.OperationalError:   # schema not created yet
        return []
    except sqlite3.DatabaseError as exc:
        raise corrupt_state(path, exc) from None
    finally:
        db.close()


def corrupt_state(path: Path, exc: Exception) -> BackendError:
    return BackendError(f"{path} is not a readable vast_magic state database ({exc}). Run `vast-magic engine stop`, "
                        f"move the file aside (mv {path} {path}.broken) and deploy again; the deployments it "
                        "recorded must then be deployed anew.")


def read_previous_manifest_json(home: Path, name: str, tag: str) -> str | None:
    """The JSON of the Manifest last applied for (name, tag), or None; never starts the daemon."""
    rows = read_only(home, "deployments", "name = ? AND tag = ?", (name, tag))
    return rows[0].manifest if rows else None
