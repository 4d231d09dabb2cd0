"""The box's three HTTP services on 127.0.0.1: webserver, autoscaler and presigned storage.

Each is a ``ThreadingHTTPServer`` whose handler parses the request, records
it, and calls the control plane under its lock. Paths are those of the
reference: ``/api/v0/...`` on the webserver (Bearer user key; the worker's
``download_url`` takes its container key), the autoscaler's ``/route/``,
``/get_endpoint_workers/``, ``/worker_status/``, ``/delete_requests/``,
``/update_workers/`` and ``/pubkey/``, and the storage's presigned ``POST
/upload`` and signed ``GET /blobs/<key>``.
"""
from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import json
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import _box_autoscaler as autoscaler
from ._box_model import Answer, BoxRequest

__all__ = ["ROLES", "serve", "dispatch", "form_fields"]

ROLES = ("webserver", "autoscaler", "storage")
_KEEP_BYTES = 64 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], role: str, plane: Any):
        super().__init__(address, _Handler)
        self.role, self.plane = role, plane


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._serve()

    do_PUT = do_POST = do_DELETE = do_GET

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            parsed = json.loads(raw) if raw and "json" in headers.get("content-type", "") else None
        except ValueError:
            parsed = None
        request = BoxRequest(self.server.role, self.command, split.path, parse_qs(split.query), headers, raw, parsed)
        plane = self.server.plane
        with plane.lock:
            try:
                answer = dispatch(plane, request)
            except Exception as exc:   # the box must answer, and say what broke
                plane.note(f"box error on {request.method} {request.path}: {traceback.format_exc(limit=3)}")
                answer = Answer(500, {"error_msg": f"vast box: {type(exc).__name__}: {exc}"})
            plane.requests.append(_kept(request, answer))
        self._answer(answer)

    def _answer(self, answer: Answer) -> None:
        body, kind = answer.body, answer.content_type
        if isinstance(body, (dict, list)):
            data, kind = json.dumps(body).encode(), kind or "application/json"
        elif isinstance(body, bytes):
            data = body
        else:
            data, kind = ("" if body is None else str(body)).encode(), kind or "text/plain"
        self.send_response(answer.status)
        if kind and answer.status != 204:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(0 if answer.status == 204 else len(data)))
        self.end_headers()
        if answer.status != 204 and self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _kept(request: BoxRequest, answer: Answer) -> BoxRequest:
    """What the record keeps: bodies over ``_KEEP_BYTES`` (bundles, blobs) only by their size."""
    raw = request.raw if len(request.raw) <= _KEEP_BYTES else b""
    if isinstance(answer.body, bytes) and len(answer.body) > _KEEP_BYTES:
        answer = Answer(answer.status, f"<{len(answer.body)} bytes>", answer.content_type)
    return dataclasses.replace(request, raw=raw, answer=answer)


def serve(role: str, plane: Any, port: int = 0) -> _Server:
    """Start one service on 127.0.0.1 (``port`` 0: any free port) in a daemon thread."""
    server = _Server(("127.0.0.1", port), role, plane)
    threading.Thread(target=server.serve_forever, name=f"vast-box-{role}", daemon=True).start()
    return server


def dispatch(plane: Any, request: BoxRequest) -> Answer:
    if request.role == "webserver":
        return _webserver(plane, request)
    if request.role == "autoscaler":
        return _autoscaler(plane, request)
    return _storage(plane, request)


def _webserver(plane: Any, r: BoxRequest) -> Answer:
    parts = [p for p in r.path.split("/") if p]
    if parts[:2] != ["api", "v0"]:
        return Answer(404, {"msg": f"no route {r.method} {r.path}"})
    parts = parts[2:]
    if parts[:1] == ["deployment"] and parts[2:] == ["download_url"] and r.method == "GET":
        return plane.download_url(_int(parts[1]), r)          # the worker's container key, not the user's
    heartbeat = parts[2:] == ["heartbeat"]
    if r.bearer is None or not plane.is_user(r):
        return Answer(401, {"success": False, "msg": "invalid api key"})
    routes = {
        ("PUT", "deployments"): lambda: plane.put(r),
        ("GET", "deployments"): plane.list,
        ("DELETE", "deployments"): lambda: plane.delete_by_name(r.json),
        ("GET", "workergroups"): plane.workergroups,
        ("POST", "bundles"): lambda: plane.search(r.json),
    }
    if len(parts) == 1 and (r.method, parts[0]) in routes:
        return routes[(r.method, parts[0])]()
    if len(parts) == 2 and parts[0] == "endptjobs" and r.method == "GET":
        return plane.endpoint(_int(parts[1]))
    if len(parts) >= 2 and parts[0] == "deployment":
        deployment_id, rest = _int(parts[1]), parts[2:]
        if rest == [] and r.method == "GET":
            return plane.get(deployment_id)
        if rest == [] and r.method == "DELETE":
            return plane.delete(deployment_id)
        if heartbeat and r.method == "POST":
            return plane.heartbeat(deployment_id)
    return Answer(404, {"msg": f"no route {r.method} {r.path}"})


def _autoscaler(plane: Any, r: BoxRequest) -> Answer:
    path = r.path.rstrip("/")
    if r.method == "GET" and path == "/pubkey":
        return autoscaler.pubkey(plane)
    routes = {"/route": autoscaler.route, "/get_endpoint_workers": autoscaler.endpoint_workers,
              "/worker_status": autoscaler.worker_status, "/delete_requests": autoscaler.delete_requests,
              "/update_workers": autoscaler.update_workers}
    if r.method == "POST" and path in routes:
        return routes[path](plane, r)
    return Answer(404, {"error_msg": f"no route {r.method} {r.path}"})


def _storage(plane: Any, r: BoxRequest) -> Answer:
    if r.method == "POST" and r.path.rstrip("/") == "/upload":
        if "authorization" in r.headers:
            return Answer(400, "a presigned POST carries no Authorization header")
        return plane.upload(form_fields(r.headers.get("content-type", ""), r.raw))
    if r.method == "GET" and r.path.startswith("/blobs/"):
        return plane.blob(r.path[len("/blobs/"):], r.query)
    return Answer(404, "no such storage route")


def form_fields(content_type: str, raw: bytes) -> list[tuple[str, bytes]]:
    """The parts of a multipart/form-data body, in order, as (name, bytes)."""
    if not content_type.startswith("multipart/form-data"):
        return []
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields.append((str(name), part.get_payload(decode=True) or b""))
    return fields


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1
