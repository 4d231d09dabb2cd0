"""Registering a deployment with Vast: the PUT body, the upload and the soft update (reference 1.2).

``put_body`` builds the ``PUT /api/v0/deployments/`` body with the field order
of the official ``DeploymentConfig`` and ``None`` fields dropped. The env
string follows ``_compile_env`` with two deliberate differences: published
ports are sorted, so the body is stable across hash seeds (weakness 19), and
secrets travel here as ``-e NAME=value`` (they are never in config.json or the
tarball), each value written so that Vast's parser reads it back exactly.
``file_hash`` is our own content hash of what workers receive.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import tarfile
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..._env_string import render_flag
from ...errors import VastAPIError, VastUploadError
from ...events import EventSink
from ...reports import LogLine
from ..base import DeployPlan
from .api import DEFAULT_WEBSERVER, VastAPI

__all__ = [
    "AUTOSCALING_KEYS", "DOCKER_LOGIN_KEYS", "DEFAULT_PORT", "PutAnswer", "ports_of", "python_env", "compile_env",
    "search_params", "docker_login_fields", "put_body", "bundle_hash", "register", "upload", "soft_update",
    "find_workergroup"
]

#: autoscaling fields in the order of the official DeploymentConfig (reference 6)
AUTOSCALING_KEYS = ("cold_workers", "max_workers", "min_load", "min_cold_load", "target_util", "cold_mult",
                    "max_queue_time", "target_queue_time", "inactivity_timeout", "autoscaler_instance")
DOCKER_LOGIN_KEYS = ("docker_login_user", "docker_login_pass", "docker_login_repo")
DEFAULT_PORT = (3000, "tcp")
#: members that may differ without the workers needing a new bundle (autoscaling and tag live in the manifest)
_UNHASHED_MEMBERS = frozenset({"manifest.json"})


@dataclass(frozen=True)
class PutAnswer:
    """The fields of ``DeploymentPutResponse`` we act on."""

    action: str
    deployment_id: int
    endpoint_id: int
    workergroup_id: int | None = None
    upload_url: str | None = None
    upload_fields: dict | None = None
    evicted_versions: tuple = ()

    @classmethod
    def from_json(cls, data: Any, what: str) -> "PutAnswer":
        try:
            return cls(action=str(data["action"]), deployment_id=data["deployment_id"], endpoint_id=data["endpoint_id"],
                       workergroup_id=data.get("workergroup_id"), upload_url=data.get("upload_url"),
                       upload_fields=data.get("upload_fields"), evicted_versions=tuple(data.get("evicted_versions") or ()))
        except (KeyError, TypeError, AttributeError):
            raise VastAPIError(f"{what}: unexpected answer from Vast (no action/deployment_id/endpoint_id); "
                               "retry, and report it if it persists.") from None

    @property
    def wants_upload(self) -> bool:
        return bool(self.upload_url) and self.upload_fields is not None


# -- the PUT body -----------------------------------------------------------------------------
def ports_of(image: Any) -> list[tuple[int, str]]:
    """Published ports, always including the worker port 3000/tcp, sorted."""
    found = {DEFAULT_PORT}
    for port in getattr(image, "ports", None) or ():
        number, kind = (port, "tcp") if isinstance(port, int) else (port[0], port[1] if len(port) > 1 else "tcp")
        found.add((int(number), str(kind)))
    return sorted(found)


def python_env(image: Any) -> list[str]:
    """``USE_SYSTEM_PYTHON`` or ``ENV_PATH`` exactly as the official SDK sends them."""
    if getattr(image, "system_python", False):
        return ["-e USE_SYSTEM_PYTHON=true", "-e UV_SYSTEM_PYTHON=1", "-e UV_BREAK_SYSTEM_PACKAGES=1"]
    venv = getattr(image, "venv", None)
    return [render_flag("ENV_PATH", venv)] if venv else []


def compile_env(image: Any, secrets: Iterable[tuple[str, str]], *, autoscaler_url: str,
                webserver_url: str = DEFAULT_WEBSERVER) -> str:
    """The docker-run style ``env`` string of the PUT body.

    Every ``-e`` value is written so that Vast's parser gives it back exactly; one
    that cannot be is a ConfigError naming the variable, before anything is sent
    (``_env_string``, reference 8.4).
    """
    parts = [f"-p {number}:{number}/{kind}" for number, kind in ports_of(image)]
    parts.append(render_flag("REPORT_ADDR", autoscaler_url))
    if webserver_url.rstrip("/") != DEFAULT_WEBSERVER:
        parts.append(render_flag("VAST_API_URL", webserver_url.rstrip("/")))
    parts += python_env(image)
    parts += [render_flag(name, value) for name, value in secrets]
    return " ".join(parts)


def search_params(image: Any) -> str | None:
    """The requirement query rendered as the search string (reference 5)."""
    search = getattr(image, "search", None)
    if search:
        return str(search)
    requirements = getattr(image, "requirements", None)
    return str(requirements) if requirements is not None else None


def docker_login_fields(image: Any) -> dict[str, str]:
    login = getattr(image, "docker_login", None) or {}
    pairs = login.items() if hasattr(login, "items") else login
    out = {}
    for key, value in pairs:
        field = key if key.startswith("docker_login_") else f"docker_login_{key}"
        if field in DOCKER_LOGIN_KEYS and value is not None:
            out[field] = value.reveal() if hasattr(value, "reveal") else value
    return {k: out[k] for k in DOCKER_LOGIN_KEYS if k in out}


def put_body(plan: DeployPlan, *, file_hash: str, file_size: int, env: str) -> dict[str, Any]:
    """``DeploymentConfig.to_dict()``: official field order, ``None`` dropped, autoscaling as top-level fields."""
    image = plan.image
    body: dict[str, Any] = {
        "name": plan.name, "image": getattr(image, "from_image", None), "file_hash": file_hash, "file_size": file_size,
        "env": env, "tag": plan.tag, "search_params": search_params(image), "storage": getattr(image, "storage", None),
        "ttl": plan.ttl, "version_label": plan.version_label, **docker_login_fields(image),
    }
    scaling = dict(plan.autoscaling or {})
    body.update({k: scaling.pop(k) for k in AUTOSCALING_KEYS if k in scaling})
    body.update(scaling)
    return {k: v for k, v in body.items() if v is not None}


def bundle_hash(path: str | os.PathLike) -> str:
    """SHA-256 over what workers receive: each member's name, size and bytes, length-prefixed, in tar order.

    ``manifest.json`` is left out: it also records autoscaling and tag, which
    Vast receives as PUT fields, so a scaling-only change stays an ``autoscale_update``.
    """
    digest = hashlib.sha256(b"vast_magic-bundle-1\0")
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in _UNHASHED_MEMBERS or not (member.isfile() or member.isdir()):
                continue
            data = tar.extractfile(member).read() if member.isfile() else b""
            for chunk in (name.encode(), str(member.mode & 0o777).encode(), data):
                digest.update(len(chunk).to_bytes(8, "big") + chunk)
    return digest.hexdigest()


# -- the calls --------------------------------------------------------------------------------
async def register(api: VastAPI, body: dict, emit: EventSink) -> PutAnswer:
    what = "PUT /api/v0/deployments/"
    response = await api.request("PUT", api.web("/api/v0/deployments/"), what=what, json=body, emit=emit)
    data = api.json(response, what)
    if isinstance(data, dict) and data.get("success") is False:
        raise VastAPIError(f"{what}: Vast refused the deployment: {api.scrub(str(data.get('msg') or data))}.")
    return PutAnswer.from_json(data, what)


async def upload(api: VastAPI, answer: PutAnswer, bundle_path: str, emit: EventSink) -> None:
    """Presigned POST: the fields in their order, then ``file``; no Authorization header (reference 1.2 step 5)."""
    what = "bundle upload"
    data = await _read(bundle_path)
    fields = {str(k): str(v) for k, v in (answer.upload_fields or {}).items()}
    files = {"file": (os.path.basename(bundle_path), data, "application/gzip")}
    send = lambda: api.client().post(answer.upload_url, data=fields, files=files,  # noqa: E731
                                      headers={"User-Agent": api.headers(bearer=False)["User-Agent"]},
                                      timeout=max(api.timeout, 120.0))
    try:
        response = await api.with_retries(send, what=what, emit=emit, raise_for_status=False)
    except VastAPIError as exc:
        raise VastUploadError(f"{exc} The bundle was not uploaded; deploy again.", exc.status) from None
    if response.status_code not in (200, 201, 204):
        detail = api.scrub(response.text.strip()[:300])
        raise VastUploadError(f"{what} failed: HTTP {response.status_code} from the storage service"
                              f"{': ' + detail if detail else ''}; deploy again (the upload URL may have expired).",
                              response.status_code)


async def _read(path: str) -> bytes:
    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read()
    return await asyncio.to_thread(read)


async def soft_update(api: VastAPI, answer: PutAnswer, emit: EventSink) -> int | None:
    """Rolling update of the workers (reference 1.2 step 6); no workergroup is a warning, never a crash."""
    group = answer.workergroup_id
    if group is None:
        group = await find_workergroup(api, answer.endpoint_id, emit)
    if group is None:
        emit(LogLine(_now(), "vast", "system", f"warning: no workergroup found for endpoint {answer.endpoint_id}; "
                                               "running workers were not told to update (new workers get the new version)."))
        return None
    await api.request("POST", api.autoscaler("/update_workers/"), what="POST /update_workers/",
                      json={"workergroup_id": group, "api_key": api.api_key}, emit=emit)
    return group


async def find_workergroup(api: VastAPI, endpoint_id: int, emit: EventSink) -> int | None:
    what = "GET /api/v0/workergroups/"
    response = await api.request("GET", api.web("/api/v0/workergroups/"), what=what, emit=emit)
    data = api.json(response, what)
    results = data.get("results") if isinstance(data, dict) else None
    for group in results or ():
        if isinstance(group, dict) and group.get("endpoint_id") == endpoint_id:
            return group.get("id")
    return None


def _now() -> float:
    return time.time()

