"""The box's decisions, as tables (pure functions; no process, no socket)."""
from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import pytest

from vast_magic.backends.vast.offers import search_body
from vast_magic.image import Image
from vast_magic.query import H100_SXM, RTX_4090, gpu_name, gpu_ram, num_gpus
from vast_magic.testing import _box_rules as rules
from vast_magic.testing._box_http import form_fields

BASE = {"name": "d", "image": "img", "file_hash": "h1", "file_size": 10, "env": "-p 3000:3000/tcp", "max_workers": 2}


@pytest.mark.parametrize("old, change, action", [
    (None, {}, "created"),
    (BASE, {}, "exists"),
    (BASE, {"file_hash": "h2"}, "soft_update"),
    (BASE, {"env": "-p 3000:3000/tcp -e A=1"}, "soft_update"),          # image-level: Vast's own hard update
    (BASE, {"image": "other"}, "soft_update"),
    (BASE, {"search_params": "gpu_ram>=24"}, "soft_update"),
    (BASE, {"max_workers": 4}, "autoscale_update"),
    (BASE, {"ttl": 60}, "autoscale_update"),
    (BASE, {"version_label": "v9"}, "exists"),
])
def test_put_actions_are_the_four_of_reference_8_1(old, change, action):
    assert rules.put_action(old, {**BASE, **change}) == action


@pytest.mark.parametrize("body, limit, count", [
    ({}, 2, 1), ({"cold_workers": 0}, 2, 0), ({"cold_workers": 3}, 2, 2), ({"cold_workers": 3, "max_workers": 1}, 5, 1),
    ({"cold_workers": "x"}, 2, 1), ({"cold_workers": 2, "max_workers": None}, 4, 2),
])
def test_target_workers(body, limit, count):
    assert rules.target_workers(body, limit) == count


@pytest.mark.parametrize("text, env, ports", [
    ("-p 3000:3000/tcp -e REPORT_ADDR=http://127.0.0.1:9", {"REPORT_ADDR": "http://127.0.0.1:9"}, ["3000:3000/tcp"]),
    ('-e TZ=UTC -e TASKID="TEST"', {"TZ": "UTC", "TASKID": "TEST"}, []),
    ("-e A='b c' -e B=x=y", {"A": "b c", "B": "x=y"}, []),                    # quotes group; value after first =
    ("-h host -v /a:/b -e K=V", {"K": "V"}, []),
    ("-e NOEQUALS -e  K=V  ", {"K": "V"}, []),
    ("", {}, []),
])
def test_env_strings_parse_like_the_cli(text, env, ports):
    assert rules.parse_env_string(text) == (env, ports)


WEB, AUTOSCALER = "http://127.0.0.1:1", "http://127.0.0.1:2"
GOOD_ENV = {"VAST_API_URL": WEB, "REPORT_ADDR": AUTOSCALER}


def tarball(path, members: dict) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


CONFIG = json.dumps({"name": "d", "pip_installs": [], "apt_gets": [], "envs": [], "runs": []})


@pytest.mark.parametrize("members, env, problem", [
    ({"./config.json": CONFIG, "./deployment.py": ""}, GOOD_ENV, None),
    ({"config.json": CONFIG}, GOOD_ENV, None),
    ({"./config.json": CONFIG}, {"REPORT_ADDR": AUTOSCALER}, "sends workers to https://console.vast.ai for their "
                                                             "bundle, not to this box"),
    ({"./config.json": CONFIG}, {"VAST_API_URL": WEB, "REPORT_ADDR": "https://run.vast.ai"},
     "reports to https://run.vast.ai, not to this box's autoscaler"),
    ({"./config.json": CONFIG, "/etc/evil": "x"}, GOOD_ENV, "would write outside the worker's folder"),
    ({"./config.json": CONFIG, "../up": "x"}, GOOD_ENV, "would write outside the worker's folder on this machine: ../up"),
    ({"./config.json": json.dumps({"name": "d", "apt_gets": ["ffmpeg"]})}, GOOD_ENV,
     "asks for apt packages ['ffmpeg']; the box does not install system packages"),
    ({"./deployment.py": ""}, GOOD_ENV, "not a deployment tarball with a config.json"),
])
def test_bundle_problems(tmp_path, members, env, problem):
    found = rules.bundle_problem(tarball(tmp_path / "b.tar.gz", members), env, web_url=WEB, autoscaler_url=AUTOSCALER)
    assert (found is None) if problem is None else (problem in found), found


def test_a_file_that_is_not_a_tarball_is_a_problem(tmp_path):
    (tmp_path / "x").write_bytes(b"not gzip")
    assert "not a deployment tarball" in rules.bundle_problem(tmp_path / "x", GOOD_ENV, web_url=WEB,
                                                               autoscaler_url=AUTOSCALER)


RTX = {"id": 7, "gpu_name": "RTX 4090", "gpu_ram": 24564, "num_gpus": 1, "dph_total": 0.4, "verified": True,
       "rentable": True, "rented": False}


@pytest.mark.parametrize("requirements, offers, ids", [
    ((), [rules.machine_offer(2)], [1]),                                   # the search defaults: this machine
    ((gpu_ram >= 24, gpu_name.in_([RTX_4090, H100_SXM])), [rules.machine_offer(2)], []),   # no GPU here
    ((gpu_ram >= 24, gpu_name.in_([RTX_4090, H100_SXM])), [rules.machine_offer(2), RTX], [7]),
    ((gpu_name.notin_([RTX_4090]),), [RTX, rules.machine_offer(2)], [1]),
    ((num_gpus >= 2,), [RTX], []),
    ((), [{"id": 9, "gpu_name": "X"}], []),                                # no verified/rentable columns: no match
])
def test_offer_search_filters_by_the_query(requirements, offers, ids):
    image = Image("img").require(*requirements) if requirements else Image("img")
    assert [o["id"] for o in rules.search_offers(offers, search_body(image.spec()))] == ids


def test_worker_rows_hold_a_placeholder_until_measured():
    worker = SimpleNamespace(id=3, status="model_loading", report=None, measured_perf=0.0, loaded_at=0.0,
                             started_at=1.0, error=None)
    row = rules.worker_row(worker, 2.0)
    assert (row["status"], row["perf"], row["measured_perf"]) == ("model_loading", rules.PLACEHOLDER_PERF, 0.0)
    worker.status, worker.measured_perf, worker.loaded_at = "idle", 99.0, 1.5
    row = rules.worker_row(worker, 2.0)
    assert (row["status"], row["perf"], row["measured_perf"], row["loaded_at"]) == ("idle", 99.0, 99.0, 1.5)
    assert set(row) >= {"id", "status", "cur_load", "new_load", "cur_load_rolling_avg", "cur_perf", "perf",
                        "measured_perf", "dlperf", "reliability", "reqs_working", "disk_usage", "loaded_at",
                        "started_at"}                                   # the SDK's worker fields (reference 8.2)


@pytest.mark.parametrize("statuses, deleted, text", [
    ((), False, "waiting for workers: none recruited yet"),
    (("loading", "model_loading", "loading"), False, "waiting for workers: 2 loading, 1 model_loading"),
    (("idle",), True, "endpoint stopped"),
])
def test_route_waiting_status(statuses, deleted, text):
    assert rules.waiting_status(statuses, deleted) == text


def test_multipart_fields_keep_their_order():
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.tar.gz\"\r\n"
            f"Content-Type: application/gzip\r\n\r\n").encode() + b"\x1f\x8b\x00\r\n" + f"--{boundary}--\r\n".encode()
    assert form_fields(f"multipart/form-data; boundary={boundary}", body) == [("key", b"k1"), ("file", b"\x1f\x8b\x00")]
    assert form_fields("application/json", b"{}") == []
