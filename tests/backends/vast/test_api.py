"""Contract tests of the Vast backend against the fake Vast API (httpx.MockTransport; no network).

Each test states what the reference (shared/reference/vast_sdk.md) says we
must send, and checks the requests the fake recorded.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from tests.backends.vast.vast_harness import KEY, Harness, Image, Manifest, make_bundle, make_plan
from vast_magic.backends.vast import backend as backend_module
from vast_magic.backends.vast import deploy, sealing
from vast_magic.backends.vast.api import USER_AGENT
from vast_magic.errors import (VastAuthError, VastNotFoundError, VastRateLimitedError,
                                             VastRejectedError, VastUnavailableError, VastUploadError)
from vast_magic.testing import AUTOSCALER, STORAGE, WEB, FakeVast
from vast_magic.errors import BackendError, ConfigError
from vast_magic.events import Failed, Retry, TierDecided
from vast_magic.reports import LogLine


# -- the PUT ----------------------------------------------------------------------------------------
def test_put_request_matches_reference(h, tmp_path):
    plan = make_plan(tmp_path, ttl=120.0, version_label="v1")
    result = h.apply(plan)
    (put,) = h.fake.sent("PUT", "/api/v0/deployments/")
    assert put.url.startswith(f"{WEB}/api/v0/deployments/?")
    assert put.headers["authorization"] == f"Bearer {KEY}"
    assert put.headers["user-agent"] == USER_AGENT == "vastai-sdk/1.9.1"
    assert put.query == {"api_key": KEY}
    assert put.headers["content-type"] == "application/json"
    body = put.body
    assert list(body) == ["name", "image", "file_hash", "file_size", "env", "tag", "search_params", "storage",
                          "ttl", "version_label", "cold_workers", "max_workers"]
    assert body["name"] == "demo" and body["tag"] == "default" and body["image"] == Image.from_image
    assert re.fullmatch(r"[0-9a-f]{64}", body["file_hash"])
    assert body["file_size"] == Path(plan.bundle_path).stat().st_size
    envelope_key = sealing.read_key(h.backend.home, "demo", "default").hex()
    assert body["env"] == ("-p 3000:3000/tcp -p 8080:8080/tcp -e REPORT_ADDR=https://run.vast.ai "
                           f"-e ENV_PATH=/venv/main -e HF_TOKEN=\"s3cret value\" -e VAST_MAGIC_ENVELOPE_KEY={envelope_key} "
                           "-e VAST_MAGIC_MAX_REQUEST_BYTES=67108864")
    assert body["search_params"] == "verified=true rentable=true rented=false"
    assert (body["storage"], body["ttl"], body["version_label"]) == (16, 120.0, "v1")
    assert (body["cold_workers"], body["max_workers"]) == (1, 4)
    assert "MODE" not in json.dumps(body)  # plain env goes into config.json, not the PUT
    assert result.backend_action == "created" and result.endpoint == f"vast endpoint {put_answer_endpoint(h)}"


def put_answer_endpoint(h: Harness) -> int:
    return next(iter(h.fake.deployments.values())).endpoint_id


@pytest.mark.parametrize("image, secrets, webserver, expected", [
    (Image(ports=(), venv=None), (), WEB, "-p 3000:3000/tcp -e REPORT_ADDR=https://run.vast.ai"),
    (Image(ports=((9000, "udp"), (8080, "tcp"), (3000, "tcp")), venv=None), (), WEB,
     "-p 3000:3000/tcp -p 8080:8080/tcp -p 9000:9000/udp -e REPORT_ADDR=https://run.vast.ai"),
    (Image(ports=(), venv=None, system_python=True), (), "https://staging.vast.test/",
     "-p 3000:3000/tcp -e REPORT_ADDR=https://run.vast.ai -e VAST_API_URL=https://staging.vast.test "
     "-e USE_SYSTEM_PYTHON=true -e UV_SYSTEM_PYTHON=1 -e UV_BREAK_SYSTEM_PACKAGES=1"),
    (Image(ports=(), venv="/venv/x"), (("A", "1"), ("B", "two words"), ("C", "it's"), ("D", 'say "hi" now')), WEB,
     "-p 3000:3000/tcp -e REPORT_ADDR=https://run.vast.ai -e ENV_PATH=/venv/x -e A=1 -e B=\"two words\" "
     "-e C=\"it's\"' -e D='say \"hi\" now'"),
    (Image(ports=(), venv="/opt/my venv"), (("E", ""), ("F", "a=b")), WEB,
     "-p 3000:3000/tcp -e REPORT_ADDR=https://run.vast.ai -e ENV_PATH=\"/opt/my venv\" -e E= -e F=a=b"),
])
def test_env_string(image, secrets, webserver, expected):
    assert deploy.compile_env(image, secrets, autoscaler_url=AUTOSCALER, webserver_url=webserver) == expected


@pytest.mark.parametrize("secrets, autoscaler, message", [
    ((("TOKEN", "a'b\"c"),), AUTOSCALER, "env TOKEN: the value contains both kinds of quote"),
    ((("TOKEN", "two\nlines"),), AUTOSCALER, "env TOKEN: the value contains a newline"),
    ((), "http://127.0.0.1:1/\x00", "env REPORT_ADDR: the value contains a NUL character"),
])
def test_env_string_refuses_values_that_cannot_round_trip(secrets, autoscaler, message):
    with pytest.raises(ConfigError) as info:
        deploy.compile_env(Image(ports=(), venv=None), secrets, autoscaler_url=autoscaler)
    assert message in str(info.value) and "a'b" not in str(info.value) and "two" not in str(info.value)


def test_a_bad_env_value_fails_before_anything_is_sent(h, tmp_path):
    with pytest.raises(ConfigError, match="env HF_TOKEN: the value contains a carriage return"):
        h.apply(make_plan(tmp_path, secrets=(("HF_TOKEN", "tok\r"),)))
    assert h.fake.requests == []


def test_ports_sorted_whatever_the_insertion_order():
    orders = [((8080, "tcp"), (22, "tcp"), (9000, "udp")), ((9000, "udp"), (8080, "tcp"), (22, "tcp"))]
    envs = {deploy.compile_env(Image(ports=o), (), autoscaler_url=AUTOSCALER) for o in orders}
    assert len(envs) == 1


@pytest.mark.parametrize("login, expected", [
    ((), {}),
    ((("user", "me"), ("pass", "pw"), ("repo", "ghcr.io")),
     {"docker_login_user": "me", "docker_login_pass": "pw", "docker_login_repo": "ghcr.io"}),
    ({"docker_login_repo": "r", "docker_login_user": "u"}, {"docker_login_user": "u", "docker_login_repo": "r"}),
])
def test_docker_login_fields(tmp_path, login, expected):
    body = deploy.put_body(make_plan(tmp_path, image=Image(docker_login=login)), file_hash="0" * 64, file_size=1,
                           env="")
    assert {k: v for k, v in body.items() if k.startswith("docker_login")} == expected


def test_bundle_hash_ignores_manifest_and_archive_name(tmp_path):
    a = deploy.bundle_hash(make_bundle(tmp_path / "a.tar.gz", manifest='{"max_workers": 1}'))
    b = deploy.bundle_hash(make_bundle(tmp_path / "other-name.tar.gz", manifest='{"max_workers": 9}'))
    c = deploy.bundle_hash(make_bundle(tmp_path / "c.tar.gz", code="x = 2\n"))
    assert a == b != c


# -- upload, soft update, tiers ----------------------------------------------------------------------
def test_upload_is_presigned_multipart_without_authorization(h, tmp_path):
    plan = make_plan(tmp_path)
    h.apply(plan)
    (post,) = h.fake.sent("POST", "/upload")
    assert post.url == f"{STORAGE}/upload" and "authorization" not in post.headers and post.query == {}
    boundary = post.headers["content-type"].split("boundary=")[1]
    parts = post.raw.split(f"--{boundary}".encode())[1:-1]
    names = [re.search(rb'name="([^"]+)"', p).group(1).decode() for p in parts]
    assert names == ["key", "policy", "x-amz-signature", "file"]
    assert b'filename="b.tar.gz"' in parts[-1] and b"Content-Type: application/gzip" in parts[-1]
    assert Path(plan.bundle_path).read_bytes() in parts[-1]


def scenario_steps(tmp_path):
    """(plan changes, expected action, upload?, update_workers?) in order, against one fake."""
    return [
        (dict(tier=4), "created", True, False),
        (dict(tier=0), "exists", False, False),
        (dict(tier=1, autoscaling={"max_workers": 8, "cold_workers": 1}), "autoscale_update", False, False),
        (dict(tier=2, autoscaling={"max_workers": 8, "cold_workers": 1},
              bundle_path=make_bundle(tmp_path / "b2.tar.gz", code="x = 2\n")), "soft_update", True, True),
    ]


def test_vast_actions_drive_upload_and_update(h, tmp_path):
    for changes, action, uploads, updates in scenario_steps(tmp_path):
        before_up, before_upd = len(h.fake.uploads), len(h.fake.updates)
        result = h.apply(make_plan(tmp_path, **changes))
        assert result.backend_action == action
        assert len(h.fake.uploads) - before_up == int(uploads), action
        assert len(h.fake.updates) - before_upd == int(updates), action
    assert h.fake.updates[-1] == {"workergroup_id": next(iter(h.fake.deployments.values())).workergroup_id,
                                  "api_key": KEY}
    decided = h.of(TierDecided)
    assert [e.backend_action for e in decided] == ["created", "exists", "autoscale_update", "soft_update"]
    assert all(len(e.reasons) == 1 for e in decided)  # predicted tier matched every action: no note


def test_soft_update_looks_up_workergroup_and_warns_when_missing(tmp_path):
    fake = FakeVast(api_key=KEY, put_workergroup=False)
    h = Harness(tmp_path, fake)
    steps = scenario_steps(tmp_path)
    h.apply(make_plan(tmp_path, **steps[0][0]))
    h.apply(make_plan(tmp_path, **steps[3][0]))
    assert len(fake.sent("GET", "/api/v0/workergroups/")) == 1 and len(fake.updates) == 1
    fake.workergroups_visible = False
    h.apply(make_plan(tmp_path, tier=2, bundle_path=make_bundle(tmp_path / "b3.tar.gz", code="x = 3\n")))
    assert len(fake.updates) == 1
    warnings = [e for e in h.of(LogLine) if "no workergroup" in e.text]
    assert len(warnings) == 1 and warnings[0].stream == "system"


@pytest.mark.parametrize("tier, expected_note", [
    (3, "image-level change: Vast answered 'created': a new endpoint starts"),
    (2, "Vast answered 'created' (tier 4), predicted tier 2"),
    (4, None),
])
def test_predicted_tier_versus_action(h, tmp_path, tier, expected_note):
    h.apply(make_plan(tmp_path, tier=tier))
    (decided,) = h.of(TierDecided)
    assert decided.tier == tier and decided.backend_action == "created"
    assert decided.reasons == (("new deployment",) + ((expected_note,) if expected_note else ()))


# (predicted tier, Vast's action) -> the note next to the reasons; the four actions are exactly reference 8.1's
NOTES = [
    (3, "soft_update", "image-level change: Vast answered 'soft_update': Vast performs a hard update itself (it "
                       "restarts the same workers on the new image), so vast_magic sent no /update_workers/"),
    (3, "created", "image-level change: Vast answered 'created': a new endpoint starts"),
    (3, "autoscale_update", "image-level change: Vast answered 'autoscale_update': Vast changes only the scaling; "
                            "the workers keep their image"),
    (3, "exists", "image-level change: Vast answered 'exists': Vast saw no change; the workers keep their image"),
    (2, "soft_update", None), (1, "autoscale_update", None), (0, "exists", None), (4, "created", None),
    (2, "exists", "Vast answered 'exists' (tier 0), predicted tier 2"),
    (2, "hard_update", "Vast answered an unknown action 'hard_update' (expected one of exists, autoscale_update, "
                       "soft_update, created); no /update_workers/ was sent"),
]


@pytest.mark.parametrize("predicted, action, note", NOTES)
def test_tier_note_for_each_action(predicted, action, note):
    assert backend_module.tier_note(predicted, action) == note
    assert backend_module.is_hard_update(predicted, action) == (predicted == 3 and action == "soft_update")


@pytest.mark.parametrize("reasons, vast_side", [
    (("image: a -> b",), True), (("storage: 16 -> 32",), True), (("secret: HF_TOKEN changed",), True),
    (("search: verified=true -> verified=false",), True), (("env: MODE changed",), False),
    (("env: +MODE", "env: -OLD"), False), (("env: MODE changed", "secret: +TOKEN"), True),
    (("env: MODE changed", "code: square changed"), False),
])
def test_only_changes_vast_sees_make_its_own_hard_update(reasons, vast_side):
    """Plain env values travel in config.json: Vast sees a new bundle (soft update) and needs /update_workers/."""
    assert backend_module.vast_side_change(reasons) is vast_side
    assert backend_module.is_hard_update(3, "soft_update", vast_side) is vast_side
    note = backend_module.tier_note(3, "soft_update", vast_side)
    assert ("no /update_workers/" in note) is vast_side and ("sent /update_workers/" in note) is not vast_side


def test_exactly_the_four_actions_of_the_reference():
    assert sorted(backend_module.ACTIONS) == sorted(["created", "soft_update", "autoscale_update", "exists"])


def test_image_change_is_vasts_hard_update_without_update_workers(tmp_path):
    """Predicted tier 3 answered ``soft_update``: no /update_workers/, and ensure_ready waits for a worker that
    restarted on the new image (the workers are read before the PUT, since Vast starts on the PUT)."""
    h = Harness(tmp_path, FakeVast(api_key=KEY, ready_after=0))
    h.apply(make_plan(tmp_path, wait=True))
    first = h.fake.sent("POST", "/get_endpoint_workers/")[-1]
    loaded_before = next(iter(h.fake.deployments.values())).generation
    result = h.apply(make_plan(tmp_path, tier=3, reasons=("image: base -> other",), wait=True,
                               image=Image(from_image="vastai/other:1")))
    assert result.backend_action == "soft_update" and h.fake.updates == []
    assert h.fake.sent("POST", "/update_workers/") == []
    decided = h.of(TierDecided)[-1]
    assert decided.reasons[-1].startswith("image-level change: Vast answered 'soft_update': Vast performs a hard "
                                          "update itself")
    assert result.notes == (decided.reasons[-1],)                  # the deploy report lists it after the reasons
    paths = [r.path for r in h.fake.requests[h.fake.requests.index(first) + 1:]]
    assert paths[:2] == ["/get_endpoint_workers/", "/api/v0/deployments/"]      # read before the PUT
    (worker,) = result.workers
    assert worker.state == "ready" and next(iter(h.fake.deployments.values())).generation == loaded_before + 1
    # the read before the PUT counts against the rate limit: the watch waits out the rest of the 5 s first
    assert h.backend.poll_interval == 5.0 and h.sleeps and 0.0 < h.sleeps[-1] <= 5.0


@pytest.mark.parametrize("changes, action", [
    (dict(), "exists"),
    (dict(autoscaling={"max_workers": 9, "cold_workers": 1}), "autoscale_update"),
    (dict(image=Image(from_image="vastai/other:2")), "soft_update"),
])
def test_a_predicted_tier_3_never_sends_update_workers(tmp_path, changes, action):
    """Whatever Vast answers to a predicted tier 3, the report quotes it and no /update_workers/ follows."""
    h = Harness(tmp_path, FakeVast(api_key=KEY, ready_after=0))
    h.apply(make_plan(tmp_path, wait=True))
    result = h.apply(make_plan(tmp_path, tier=3, reasons=("secret: HF_TOKEN changed",), wait=True, **changes))
    assert result.backend_action == action and h.fake.sent("POST", "/update_workers/") == []
    assert result.notes[0].startswith(f"image-level change: Vast answered {action!r}: ")
    assert [w.state for w in result.workers] == ["ready"]


def test_record_remembers_last_deploy(h, tmp_path):
    h.apply(make_plan(tmp_path, manifest=Manifest('{"m": 2}')))
    record = json.loads((tmp_path / "home" / "vast" / "demo" / "default.json").read_text())
    d = next(iter(h.fake.deployments.values()))
    assert (record["deployment_id"], record["endpoint_id"], record["manifest_json"]) == (d.id, d.endpoint_id, '{"m": 2}')
    assert (tmp_path / "home" / "vast" / "demo" / "default.json").stat().st_mode & 0o777 == 0o600
    assert KEY not in json.dumps(record) and "s3cret" not in json.dumps(record)


def test_previous_manifest_round_trips(h, tmp_path):
    from vast_magic.bundle.manifest import Manifest as RealManifest
    manifest = RealManifest(name="demo", tag="default", image="img", ports=((3000, "tcp"),),
                            secrets=(("HF_TOKEN", "hmac-digest"),), autoscaling=(("max_workers", 4),))
    assert asyncio.run(h.backend.previous_manifest_json("demo", "default")) is None
    h.apply(make_plan(tmp_path, manifest=manifest))
    assert RealManifest.from_json(asyncio.run(h.backend.previous_manifest_json("demo", "default"))) == manifest
    assert asyncio.run(h.backend.previous_manifest_json("demo", "other-tag")) is None


# -- the error table --------------------------------------------------------------------------------------
@pytest.mark.parametrize("outcomes, error, advice, retries", [
    ((401,), VastAuthError, "set VAST_API_KEY or pass api_key=", 0),
    ((403,), VastAuthError, "set VAST_API_KEY or pass api_key=", 0),
    ((404,), VastNotFoundError, "ensure_ready", 0),
    ((422,), VastRejectedError, "Fix the setting", 0),
    ((429, 429, 429, 429), VastRateLimitedError, "wait a minute", 3),
    ((503, 502, 500, 504), VastUnavailableError, "retry in a few minutes", 3),
    ((httpx.ReadTimeout("slow"),) * 4, VastUnavailableError, "timed out", 3),
    ((httpx.ConnectError("refused"),) * 4, VastUnavailableError, "check your network", 3),
])
def test_put_errors(h, tmp_path, outcomes, error, advice, retries):
    h.fake.fail("PUT", "/api/v0/deployments/", *outcomes)
    with pytest.raises(error) as info:
        h.apply(make_plan(tmp_path))
    message = str(info.value)
    assert advice.lower() in message.lower() and KEY not in message
    assert len(h.of(Retry)) == retries and isinstance(info.value, BackendError)
    assert h.of(Failed)[-1].message == message


def test_5xx_then_success_is_one_visible_retry(h, tmp_path):
    h.fake.fail("PUT", "/api/v0/deployments/", 503)
    assert h.apply(make_plan(tmp_path)).backend_action == "created"
    (retry,) = h.of(Retry)
    assert (retry.what, retry.attempt, retry.max_attempts, retry.reason) == ("PUT /api/v0/deployments/", 1, 4, "HTTP 503")
    assert retry.delay == 1.5 and h.sleeps[:1] == [retry.delay]          # 2 ** 0 + the injected jitter 0.5


def test_backoff_doubles_with_the_injected_jitter(h, tmp_path):
    h.fake.fail("PUT", "/api/v0/deployments/", 503, 503, 503)
    h.apply(make_plan(tmp_path))
    assert [e.delay for e in h.of(Retry)] == [1.5, 2.5, 4.5] == h.sleeps[:3]     # the cap (5 s): backends/test_retry.py


@pytest.mark.parametrize("outcomes", [(403,), (500, 500, 500, 500)])
def test_upload_failure(h, tmp_path, outcomes):
    h.fake.fail("POST", "/upload", *outcomes)
    with pytest.raises(VastUploadError, match="deploy again"):
        h.apply(make_plan(tmp_path))


def test_error_answer_that_echoes_the_key_is_scrubbed(h, tmp_path):
    h.fake.fail("PUT", "/api/v0/deployments/", 422)
    original = h.fake.handle

    async def echo(request):
        response = await original(request)
        return httpx.Response(422, text=f"bad request {request.url}") if response.status_code == 422 else response
    h.backend.api.transport = httpx.MockTransport(echo)
    with pytest.raises(VastRejectedError) as info:
        h.apply(make_plan(tmp_path))
    assert KEY not in str(info.value) and "api_key=***" in str(info.value)


def test_error_answer_that_echoes_secrets_is_scrubbed(h, tmp_path):
    async def echo_body(request):
        return httpx.Response(422, text=f"invalid env: {json.loads(request.read())['env']}")
    h.backend.api.transport = httpx.MockTransport(echo_body)
    plan = make_plan(tmp_path, image=Image(docker_login=(("docker_login_pass", "hunter2"),)))
    with pytest.raises(VastRejectedError) as info:
        h.apply(plan)
    assert "s3cret" not in str(info.value) and 'HF_TOKEN="***"' in str(info.value)


def test_key_never_in_repr_or_logs(h, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    h.fake.fail("PUT", "/api/v0/deployments/", 503)
    h.apply(make_plan(tmp_path))
    assert KEY not in repr(h.backend) and KEY not in repr(h.backend.api)
    assert "api_key=***" in caplog.text and KEY not in caplog.text


def test_changed_field_is_independent_of_plan_order(tmp_path):
    a = deploy.put_body(make_plan(tmp_path, autoscaling={"max_workers": 2, "cold_workers": 1}), file_hash="0", file_size=1, env="")
    b = deploy.put_body(make_plan(tmp_path, autoscaling={"cold_workers": 1, "max_workers": 2}), file_hash="0", file_size=1, env="")
    assert list(a) == list(b)

