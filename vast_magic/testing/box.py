"""Vast in a box: a loopback Vast control plane whose workers are the official ``vastai`` worker.

``VastBox`` answers as Vast's webserver, presigned storage and autoscaler on
127.0.0.1, and for each worker it recruits it starts the official serve entry
point (``python -m vastai.serverless.remote.serve_deployment`` from a cached
``vastai==1.9.1`` venv, see ``testing.official``) without
``DEBUG_DEPLOYMENT_TAR``: the worker downloads the bundle the client
uploaded, enters its contexts, benchmarks, reports to the box, fetches the
box's public key, and serves calls signed by the box. Nothing leaves the
machine: every service and every worker listens on 127.0.0.1 only, and every
process the box starts is stopped by PID when it stops. So ``backend="vast"``
runs end to end with no account::

    from vast_magic import Deployment
    from vast_magic.testing import VastBox

    with VastBox() as box:                 # the first start builds the official venv (about a minute)
        app = Deployment(name="demo", backend="vast", **box.deployment_args())
        ...                                # @app.remote, app.ensure_ready(), await f(x), app.teardown()

``box.env()`` gives the same settings as environment variables (for a kernel
or a shell); ``python -m vast_magic.testing`` runs a box in the
foreground and prints them. ``VAST_MAGIC_VAST_POLL_INTERVAL`` in that env is
the documented testing knob that lets the client poll a loopback autoscaler
faster than Vast's 5 s.

What the box does not do: GPUs (every worker runs on this machine, whatever the
image's requirements say; the offer search answers with this machine, filtered
by the query), docker images, ``apt_gets`` (refused), and Vast's own scaling
policy (it keeps ``cold_workers`` workers, 1 when unset, at most ``max_workers``).
"""
from __future__ import annotations

import argparse
import atexit
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import _box_autoscaler as autoscaler
from . import _box_http as http
from . import _box_rules as rules
from ._box_control import ControlPlane
from ._box_model import BoxRequest
from ._box_signer import Signer
from .official import official_python

__all__ = ["POLL_INTERVAL", "VastBox", "main"]

#: how often a client polls the box's get_endpoint_workers (Vast's own limit, 5 s, is for the real API)
POLL_INTERVAL = 0.5
_TICK = 0.1


class VastBox:
    """A loopback Vast control plane with real official workers; start it, point a Deployment at it, stop it."""

    def __init__(self, *, api_key: str | None = None, max_workers: int = 2, workers_shape: str = "dict",
                 offers: list[dict] | None = None, poll_interval: float = POLL_INTERVAL,
                 ports: dict[str, int] | None = None):
        if workers_shape not in ("dict", "list"):
            raise ValueError("workers_shape is 'dict' ({'workers': [...]}, the API spec) or 'list' (the SDK's)")
        self.api_key = api_key or f"box-user-{secrets.token_hex(12)}"
        self.max_workers, self.workers_shape, self.poll_interval = max_workers, workers_shape, poll_interval
        self.offers = list(offers) if offers is not None else [rules.machine_offer()]
        self.ports = dict(ports or {})
        self.plane: ControlPlane | None = None
        self._servers: dict[str, Any] = {}
        self._signer: Signer | None = None
        self._root: Path | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def __repr__(self) -> str:
        state = f"webserver={self.web_url!r}, autoscaler={self.autoscaler_url!r}" if self.plane else "stopped"
        return f"VastBox({state}, api_key='***')"

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "VastBox":
        """Build (or reuse) the official venv, start the signer and the three services, then the supervisor."""
        if self.plane is not None:
            return self
        python = official_python()
        self._root = Path(tempfile.mkdtemp(prefix="vast-box-"))
        try:
            self._signer = Signer(python)
            self._servers = {role: http.serve(role, None, self.ports.get(role, 0)) for role in http.ROLES}
            urls = {role: f"http://127.0.0.1:{server.server_address[1]}" for role, server in self._servers.items()}
            self.plane = ControlPlane(api_key=self.api_key, python=python, root=self._root, urls=urls,
                                      signer=self._signer, max_workers=self.max_workers,
                                      workers_shape=self.workers_shape, offers=self.offers)
            for server in self._servers.values():
                server.plane = self.plane
        except BaseException:
            self.stop()
            raise
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="vast-box-supervisor", daemon=True)
        self._supervisor.start()
        atexit.register(self.stop)
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(_TICK):
            with self.plane.lock:
                try:
                    autoscaler.tick(self.plane)
                except Exception as exc:      # the supervisor never dies; the box log says why
                    self.plane.note(f"supervisor error: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop every worker (SIGINT, then SIGKILL after 10 s) and the signer by PID, close the services."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        if self.plane is not None:
            with self.plane.lock:
                autoscaler.stop_all(self.plane)
        if self._signer is not None:
            self._signer.close()
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
        self.plane, self._servers, self._signer, self._root, self._supervisor = None, {}, None, None, None
        atexit.unregister(self.stop)

    def __enter__(self) -> "VastBox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- pointing a client at it ----------------------------------------------------------------------
    @property
    def web_url(self) -> str:
        return self._plane().urls["webserver"]

    @property
    def autoscaler_url(self) -> str:
        return self._plane().urls["autoscaler"]

    def deployment_args(self) -> dict[str, str]:
        """``Deployment(..., **box.deployment_args())``: the key and both URLs."""
        return {"api_key": self.api_key, "vast_url": self.web_url, "autoscaler_url": self.autoscaler_url}

    def env(self) -> dict[str, str]:
        """The same as environment variables, plus the poll-interval testing knob."""
        return {"VAST_API_KEY": self.api_key, "VAST_MAGIC_VAST_URL": self.web_url,
                "VAST_MAGIC_AUTOSCALER_URL": self.autoscaler_url,
                "VAST_MAGIC_VAST_POLL_INTERVAL": f"{self.poll_interval:g}"}

    # -- what happened (for tests and people) -------------------------------------------------------------
    def requests(self, role: str | None = None, method: str | None = None, path: str | None = None) -> list[BoxRequest]:
        with self._plane().lock:
            return [r for r in self._plane().requests if (role is None or r.role == role)
                    and (method is None or r.method == method) and (path is None or r.path == path)]

    def workers(self) -> list[dict[str, Any]]:
        """Every worker recruited so far: id, deployment, version, status, pid, error."""
        with self._plane().lock:
            return [{"id": w.id, "deployment": self._plane().deployments[w.deployment_id].name,
                     "deployment_id": w.deployment_id, "version": w.version_id, "status": w.status, "pid": w.pid,
                     "port": w.port, "alive": w.process is not None and w.process.poll() is None, "error": w.error,
                     "replaces": w.replaces} for w in self._plane().workers.values()]

    def worker_log(self, worker_id: int) -> str:
        with self._plane().lock:
            folder = self._plane().workers[worker_id].folder
        return (folder / "worker.log").read_text(errors="replace")

    def log(self) -> list[str]:
        """The box's own notes: registrations, recruits, readiness, replacements, errors."""
        with self._plane().lock:
            return list(self._plane().events)

    def wait_until(self, condition: Any, timeout: float = 60.0) -> None:
        """Poll ``condition(box)`` until true, or raise with the box log (bounded, for tests)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise TimeoutError("vast box: condition not reached; box log:\n" + "\n".join(self.log()[-20:]))
            time.sleep(0.05)

    def _plane(self) -> ControlPlane:
        if self.plane is None:
            raise RuntimeError("the box is not running: call box.start() (or use `with VastBox() as box:`)")
        return self.plane


def main(argv: list[str] | None = None) -> int:
    """``python -m vast_magic.testing``: run a box in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m vast_magic.testing", description=main.__doc__)
    parser.add_argument("--api-key", help="the key clients must use (default: a random one)")
    parser.add_argument("--max-workers", type=int, default=2)
    for role in http.ROLES:
        parser.add_argument(f"--{role}-port", type=int, default=0, help=f"port of the {role} (default: any free)")
    args = parser.parse_args(argv)
    ports = {role: getattr(args, f"{role}_port") for role in http.ROLES}
    with VastBox(api_key=args.api_key, max_workers=args.max_workers, ports=ports) as box:
        print("vast box running; point a notebook or shell at it with:")
        for key, value in box.env().items():
            print(f"  export {key}={value}")
        print("Ctrl-C stops it and its workers.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping the box and its workers")
    return 0
