"""The box's control plane: Vast's webserver, presigned storage and autoscaler over one set of records.

Every operation takes the parsed request and returns an ``Answer``; one lock
guards the records, so the HTTP threads and the supervisor see one state.
What each route answers follows the reference (sections 1-4 and 8); the
decisions that the public record leaves open are the pure rules in
``_box_rules``. Workers are recruited when a version's upload arrives (or on
the first ``/route/`` when ``cold_workers`` is 0), replaced on
``/update_workers/``, or by the PUT itself for an image-level change (Vast's
own hard update; the old one serves until its replacement reports ready,
then it stops taking calls and is stopped once its requests are done), and
stopped on delete or when a ttl runs out without heartbeats.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import _box_rules as rules
from . import _box_workers as procs
from ._box_model import Answer, BoxDeployment, BoxRequest, BoxWorker, Version

__all__ = ["ControlPlane"]

_REQUIRED = ("name", "image", "file_hash", "file_size")
_KILL_AFTER = 10.0        # seconds from SIGINT to SIGKILL
_KEEP_REQUESTS = 5000     # the newest requests the box remembers (for tests and people)


class ControlPlane:
    def __init__(self, *, api_key: str, python: Path, root: Path, urls: dict[str, str], signer: Any,
                 max_workers: int, workers_shape: str, offers: list[dict], clock: Callable[[], float] = time.time):
        self.api_key, self.python, self.root, self.urls = api_key, python, root, urls
        self.signer, self.max_workers, self.workers_shape, self.offers = signer, max_workers, workers_shape, offers
        self.clock = clock
        self.lock = threading.RLock()
        self.deployments: dict[int, BoxDeployment] = {}
        self.workers: dict[int, BoxWorker] = {}
        self.requests: collections.deque[BoxRequest] = collections.deque(maxlen=_KEEP_REQUESTS)
        self.events: collections.deque[str] = collections.deque(maxlen=_KEEP_REQUESTS)
        self.hook = procs.write_hook(root / "hook")
        self._ids = itertools.count(101)
        self.numbers = itertools.count(1)
        self.turns = itertools.count()
        self._secret = secrets.token_bytes(32)
        self._next_worker = 0

    # -- records ----------------------------------------------------------------------------------
    def note(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {text}")

    def _live(self, name: str, tag: str) -> BoxDeployment | None:
        return next((d for d in self.deployments.values() if (d.name, d.tag) == (name, tag) and not d.deleted), None)

    def _by(self, attribute: str, value: Any) -> BoxDeployment | None:
        return next((d for d in self.deployments.values() if getattr(d, attribute) == value and not d.deleted), None)

    def workers_of(self, deployment: BoxDeployment, *, include_stopped: bool = False) -> list[BoxWorker]:
        return [w for w in self.workers.values() if w.deployment_id == deployment.id
                and (include_stopped or w.status not in rules.TERMINAL)]

    def is_user(self, request: BoxRequest) -> bool:
        body_key = request.json.get("api_key") if isinstance(request.json, dict) else None
        offered = [k for k in (request.bearer, body_key, (request.query.get("api_key") or [None])[0]) if k]
        return bool(offered) and all(hmac.compare_digest(str(k).encode(), self.api_key.encode()) for k in offered)

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    # -- webserver --------------------------------------------------------------------------------
    def put(self, request: BoxRequest) -> Answer:
        body = request.json if isinstance(request.json, dict) else {}
        missing = [k for k in _REQUIRED if k not in body]
        if missing:
            return Answer(422, {"success": False, "msg": f"missing fields: {', '.join(missing)}"})
        now = self.clock()
        deployment = self._live(body["name"], body.get("tag") or "default")
        action = rules.put_action(deployment.body if deployment else None, body)
        hard = rules.image_changed(deployment.body if deployment else None, body)
        if deployment is None:
            ids = next(self._ids)
            deployment = BoxDeployment(ids, body["name"], body.get("tag") or "default", ids + 1000,
                                       f"box-{body['name']}-{ids}", secrets.token_hex(16), ids + 2000, {}, now, now)
            self.deployments[deployment.id] = deployment
        previous, deployment.body = deployment.version if deployment.versions else None, dict(body)
        answer = {"success": True, "action": action, "deployment_id": deployment.id,
                  "endpoint_id": deployment.endpoint_id, "workergroup_id": deployment.workergroup_id}
        if action in ("created", "soft_update"):
            version = self._new_version(deployment, body, previous, hard)
            if not version.uploaded:
                answer |= {"upload_url": f"{self.urls['storage']}/upload", "upload_fields": version.upload_fields}
        elif action == "autoscale_update":
            self.scale(deployment)
        self.note(f"PUT {deployment.name}/{deployment.tag}: {action} (deployment {deployment.id})")
        return Answer(200, answer)

    def _new_version(self, deployment: BoxDeployment, body: dict, previous: Version | None,
                     hard_update: bool = False) -> Version:
        number = len(deployment.versions) + 1
        same_bundle = previous is not None and previous.file_hash == body["file_hash"] and previous.uploaded
        key = previous.blob_key if same_bundle else f"deployments/{deployment.id}/v{number}.tar.gz"
        policy = f"{key}|{int(self.clock()) + 3600}"
        fields = {"key": key, "policy": policy, "x-amz-signature": self._sign(policy)}
        version = Version(number, body["file_hash"], int(body["file_size"]), str(body.get("env") or ""), key, fields,
                          uploaded=same_bundle, hard_update=hard_update)
        deployment.versions[number] = version
        deployment.current = number
        if same_bundle:
            self._check(deployment, version)
        return version

    def get(self, deployment_id: int) -> Answer:
        deployment = self.deployments.get(deployment_id)
        if deployment is None or deployment.deleted:
            return Answer(404, {"success": False, "msg": "deployment not found"})
        return Answer(200, {"deployment": self._data(deployment)})

    def list(self) -> Answer:
        return Answer(200, {"deployments": [self._data(d) for d in self.deployments.values() if not d.deleted]})

    def _data(self, d: BoxDeployment) -> dict:
        body = d.body
        return {"id": d.id, "name": d.name, "tag": d.tag, "endpoint_id": d.endpoint_id,
                "endpoint_state": "stopped" if d.deleted else "active", "worker_count": len(self.workers_of(d)),
                "s3_key": d.version.blob_key, "env": body.get("env"), "image": body.get("image"),
                "storage": body.get("storage"), "search_params": body.get("search_params"),
                "file_hash": body.get("file_hash"), "current_version_id": d.current, "last_healthy_version_id":
                max((w.version_id for w in self.workers_of(d) if w.status == "idle"), default=None),
                "ttl": body.get("ttl"), "last_client_heartbeat": d.last_heartbeat, "created_at": d.created_at,
                "updated_at": d.last_heartbeat}

    def delete(self, deployment_id: int) -> Answer:
        deployment = self.deployments.get(deployment_id)
        if deployment is None or deployment.deleted:
            return Answer(404, {"success": False, "msg": "deployment not found"})
        self.delete_deployment(deployment, "deleted")
        return Answer(200, {"success": True})

    def delete_by_name(self, body: Any) -> Answer:
        body = body if isinstance(body, dict) else {}
        hits = [d for d in self.deployments.values() if d.name == body.get("name") and not d.deleted
                and ("tag" not in body or d.tag == body["tag"])]
        if not hits:
            return Answer(404, {"success": False, "msg": "no deployment with that name"})
        for deployment in hits:
            self.delete_deployment(deployment, "deleted by name")
        return Answer(200, {"success": True, "deleted": len(hits)})

    def delete_deployment(self, deployment: BoxDeployment, why: str) -> None:
        deployment.deleted = True
        for worker in self.workers_of(deployment, include_stopped=True):
            if worker.status != "stopped" and worker.kill_at is None:
                self.stop_worker(worker)
        self.note(f"{deployment.name}/{deployment.tag}: {why}; its workers are stopping")

    def heartbeat(self, deployment_id: int) -> Answer:
        deployment = self.deployments.get(deployment_id)
        if deployment is None or deployment.deleted:
            return Answer(404, {"success": False, "msg": "deployment not found"})
        deployment.heartbeats += 1
        deployment.last_heartbeat = self.clock()
        return Answer(200, {"success": True})

    def download_url(self, deployment_id: int, request: BoxRequest) -> Answer:
        worker = next((w for w in self.workers.values() if request.bearer
                       and hmac.compare_digest(w.container_key, request.bearer)), None)
        if worker is None or worker.deployment_id != deployment_id:
            return Answer(401, {"success": False, "msg": "invalid container api key"})
        version = self.deployments[deployment_id].versions[worker.version_id]
        expires = str(int(self.clock()) + 600)
        return Answer(200, {"success": True, "download_url": f"{self.urls['storage']}/blobs/{version.blob_key}"
                            f"?expires={expires}&signature={self._sign(version.blob_key + expires)}"})

    def endpoint(self, endpoint_id: int) -> Answer:
        deployment = self._by("endpoint_id", endpoint_id)
        if deployment is None:
            return Answer(404, {"success": False, "msg": "endpoint not found"})
        return Answer(200, {"result": {"id": endpoint_id, "endpoint_name": deployment.endpoint_name,
                                       "api_key": deployment.endpoint_key, "user_id": 1,
                                       "created_at": deployment.created_at}})

    def workergroups(self) -> Answer:
        return Answer(200, {"results": [{"id": d.workergroup_id, "endpoint_id": d.endpoint_id}
                                        for d in self.deployments.values() if not d.deleted]})

    def search(self, body: Any) -> Answer:
        return Answer(200, {"offers": rules.search_offers(self.offers, body if isinstance(body, dict) else {})})

    # -- storage ----------------------------------------------------------------------------------
    def upload(self, fields: list[tuple[str, bytes]]) -> Answer:
        """A presigned multipart POST: the issued fields, then ``file`` last (reference 1.2 step 5)."""
        names = [name for name, _ in fields]
        if not names or names[-1] != "file":
            return Answer(400, "the file part must come last in a presigned POST")
        sent = {name: value.decode(errors="replace") for name, value in fields[:-1]}
        found = [(d, v) for d in self.deployments.values() for v in d.versions.values()
                 if v.upload_fields == sent and not v.uploaded]
        if not found:
            return Answer(403, "the upload fields do not match a pending upload (expired or already used)")
        deployment, version = found[0]
        data = fields[-1][1]
        if len(data) != version.file_size:
            return Answer(400, f"the file has {len(data)} bytes, the deployment registered file_size "
                               f"{version.file_size}")
        path = self._blob_path(version.blob_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        version.uploaded = True
        self._check(deployment, version)
        return Answer(204)

    def _blob_path(self, key: str) -> Path:
        return self.root / "blobs" / hashlib.sha256(key.encode()).hexdigest()

    def blob(self, key: str, query: dict) -> Answer:
        expires, signature = (query.get("expires") or [""])[0], (query.get("signature") or [""])[0]
        if not hmac.compare_digest(signature, self._sign(key + expires)) or float(expires or 0) < self.clock():
            return Answer(403, "bad or expired download signature")
        path = self._blob_path(key)
        return Answer(200, path.read_bytes(), "application/gzip") if path.is_file() else Answer(404, "no such blob")

    def _check(self, deployment: BoxDeployment, version: Version) -> None:
        """Decide whether the box can run this version, then recruit when the endpoint has no worker yet."""
        env, _ = rules.parse_env_string(version.env)
        version.problem = rules.bundle_problem(self._blob_path(version.blob_key), env,
                                               web_url=self.urls["webserver"], autoscaler_url=self.urls["autoscaler"])
        if version.problem:
            self.note(f"{deployment.name} v{version.id}: the box will not run it: {version.problem}")
        if version.id == deployment.current and not self.workers_of(deployment):
            self.scale(deployment)
        elif version.id == deployment.current and version.hard_update:
            self.note(f"{deployment.name} v{version.id}: image-level change, Vast's own hard update")
            self.replace_stale(deployment)

    def replace_stale(self, deployment: BoxDeployment) -> int:
        """A replacement for each worker on an older version (the old one serves until it is ready)."""
        workers = self.workers_of(deployment)
        taken = {w.replaces for w in workers if w.replaces is not None}
        stale = [w for w in workers if w.version_id != deployment.current and w.retiring_since is None
                 and w.id not in taken]
        for worker in stale:
            self.recruit(deployment, replaces=worker.id)
        return len(stale)

    # -- recruiting and stopping --------------------------------------------------------------------
    def scale(self, deployment: BoxDeployment) -> None:
        """Bring the endpoint to its target count on the current version (surplus: newest retire first)."""
        if not deployment.version.uploaded:
            return
        live = [w for w in self.workers_of(deployment) if w.retiring_since is None]
        target = rules.target_workers(deployment.body, self.max_workers)
        for _ in range(target - len(live)):
            self.recruit(deployment)
        for worker in sorted(live, key=lambda w: w.id, reverse=True)[:max(0, len(live) - target)]:
            self.retire(worker)

    def recruit(self, deployment: BoxDeployment, replaces: int | None = None) -> BoxWorker:
        self._next_worker += 1
        version = deployment.version
        worker = BoxWorker(self._next_worker, deployment.id, version.id, secrets.token_hex(16), secrets.token_hex(16),
                           procs.free_port(), self.root / "workers" / str(self._next_worker), self.clock(),
                           replaces=replaces)
        self.workers[worker.id] = worker
        if version.problem:
            worker.status, worker.error = "error", f"vast box: {version.problem}"
            return worker
        from_env_string, _ = rules.parse_env_string(version.env)
        platform = {"IS_DEPLOYMENT": "true", "DEPLOYMENT_ID": str(deployment.id), "CONTAINER_API_KEY":
                    worker.container_key, "CONTAINER_ID": str(worker.id), "WORKER_PORT": str(worker.port),
                    "WORKER_HTTP_PORT": str(procs.free_port()), f"VAST_TCP_PORT_{worker.port}": str(worker.port),
                    "PUBLIC_IPADDR": procs.BIND_HOST, "MASTER_TOKEN": worker.mtoken}
        env = procs.worker_env(python=self.python, hook=self.hook, folder=worker.folder,
                               from_env_string=from_env_string, platform=platform)
        worker.process = procs.spawn(self.python, worker.folder, env)
        worker.status = "loading"
        self.note(f"recruited worker {worker.id} (pid {worker.pid}) for {deployment.name} v{version.id}"
                  + (f", replacing worker {replaces}" if replaces else ""))
        return worker

    def retire(self, worker: BoxWorker) -> None:
        """No more calls; stopped once a report after now shows no request in flight (or after a limit)."""
        worker.status, worker.retiring_since = "destroying", self.clock()

    def stop_worker(self, worker: BoxWorker) -> None:
        if worker.process is not None and worker.process.poll() is None:
            procs.signal_group(worker.process)
            worker.kill_at = self.clock() + _KILL_AFTER
        worker.status, worker.stopped_at = "destroying", worker.stopped_at or self.clock()
        worker.retiring_since = worker.retiring_since or self.clock()
