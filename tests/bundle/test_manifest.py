"""The Manifest: canonical content, stable JSON and fingerprint, secrets only as HMACs."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.bundle.sample_inputs import (CONTEXTS, KEY, REMOTES, SECRET_VALUE, demo_inputs, make_autoscaling, make_code,
                                        make_image, source, value)
from vast_magic.bundle import Manifest, decide_tier, secret_key
from vast_magic.bundle.registry_spec import RemoteSpec
from vast_magic.errors import BundleError, ConfigError
from vast_magic.secret import Secret


def test_same_inputs_give_the_same_json_and_fingerprint():
    first, second = demo_inputs().manifest(), demo_inputs().manifest()
    assert first.to_json() == second.to_json() and first.fingerprint() == second.fingerprint()


def test_fingerprint_is_the_same_across_hash_seeds():
    code = "import tests.bundle.sample_inputs as t; print(t.demo_inputs().manifest().fingerprint())"
    root = str(Path(__file__).resolve().parents[2])      # where ``tests`` is a package
    outputs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outputs.add(proc.stdout.strip())
    assert len(outputs) == 1 and str(demo_inputs().manifest().fingerprint()) in outputs


def test_json_round_trip_and_sorted_keys():
    manifest = demo_inputs().manifest()
    assert Manifest.from_json(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    assert list(data) == sorted(data)
    assert Manifest.from_json(manifest.to_json()).fingerprint() == manifest.fingerprint()


def test_content_is_canonical_and_names_every_item():
    data = json.loads(demo_inputs().manifest().to_json())
    assert [k for k, _ in data["code"]] == ["deployment:app", "file:localmod", "import:math", "source:helper",
                                            "value:OFFSET", "value:TAGS"]
    assert [k for k, _ in data["remotes"]] == ["square"] and [k for k, _ in data["contexts"]] == ["Model"]
    assert data["runs"] == ["echo hi", ["python", "-V"]] and data["pip"] == ["numpy"]
    assert data["autoscaling"] == [["max_workers", 4]] and data["python_mode"] == make_image().python_mode
    assert [k for k, _ in data["env"]] == ["MODE"] and [k for k, _ in data["secrets"]] == ["HF_TOKEN"]


def test_secret_value_never_appears_only_its_hmac():
    text = demo_inputs().manifest().to_json()
    assert SECRET_VALUE not in text
    assert dict(json.loads(text)["secrets"])["HF_TOKEN"] == Secret(SECRET_VALUE).digest(KEY)


# (label, how the inputs change, which fingerprint parts change)
CHANGES = [
    ("comment-only edit", lambda i: replace(i, code=make_code(helper="def helper(x):\n    # note\n    return x + OFFSET\n")), set()),
    ("helper body", lambda i: replace(i, code=make_code(helper="def helper(x):\n    return x - OFFSET\n")), {"code"}),
    ("value", lambda i: replace(i, code=make_code(offset=101)), {"code"}),
    ("benchmark data", lambda i: replace(i, remotes=(replace(REMOTES[0], benchmark_dataset=({"x": 9},)),)), {"code"}),
    ("remote option", lambda i: replace(i, remotes=(replace(REMOTES[0], max_queue_time=5.0),)), {"code"}),
    ("context args", lambda i: replace(i, contexts=(replace(CONTEXTS[0], kwargs=(("offset", 11),)),)), {"code"}),
    ("pip", lambda i: replace(i, image=make_image(pip=("numpy", "scipy"))), {"code"}),
    ("runs", lambda i: replace(i, image=make_image(runs=("echo bye",))), {"code"}),
    ("image", lambda i: replace(i, image=make_image(from_image="vastai/pytorch")), {"image"}),
    ("storage", lambda i: replace(i, image=make_image(storage=32.0)), {"image"}),
    ("plain env", lambda i: replace(i, image=make_image(env=(("MODE", "slow"), ("HF_TOKEN", Secret(SECRET_VALUE))))), {"image"}),
    ("secret", lambda i: replace(i, image=make_image(env=(("MODE", "fast"), ("HF_TOKEN", Secret("other"))))), {"image"}),
    ("ports", lambda i: replace(i, image=make_image(ports=((3000, "tcp"), (8080, "tcp")))), {"image"}),
    ("autoscaling", lambda i: replace(i, autoscaling=make_autoscaling(max_workers=8)), {"autoscaling"}),
    ("tag", lambda i: replace(i, tag="v2"), {"tag"}),
]


@pytest.mark.parametrize("label,change,parts", CHANGES, ids=[c[0] for c in CHANGES])
def test_each_change_moves_only_its_fingerprint_part(label, change, parts):
    base = demo_inputs()
    before, after = base.manifest().fingerprint(), change(base).manifest().fingerprint()
    changed = {part for part in ("code", "image", "autoscaling", "tag") if getattr(before, part) != getattr(after, part)}
    assert changed == parts


def test_copies_digest_file_bytes_in_order(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.txt").write_text("two")
    copies = ((str(tmp_path / "a.txt"), "a.txt"), (str(tmp_path / "dir"), "data"))
    inputs = replace(demo_inputs(), image=make_image(copies=copies))
    first = inputs.manifest()
    assert [dst for dst, _ in first.copies] == ["a.txt", "data"]
    (tmp_path / "dir" / "b.txt").write_text("TWO")
    second = inputs.manifest()
    assert decide_tier(first, second).reasons == ("copy: data changed",)


def test_missing_copy_source_is_a_config_error(tmp_path):
    inputs = replace(demo_inputs(), image=make_image(copies=((str(tmp_path / "nope"), "nope"),)))
    with pytest.raises(ConfigError, match="does not exist"):
        inputs.manifest()


def test_remote_capture_did_not_place_is_an_internal_bundle_error():
    # capture refuses code it cannot ship (test_capture_errors); the manifest only reads what capture placed
    inputs = replace(demo_inputs(), remotes=(RemoteSpec("missing", True, at="vast_magic_app:missing"),))
    with pytest.raises(BundleError, match="'missing' is registered at 'vast_magic_app:missing'.*placed no source"):
        inputs.manifest()


def test_secret_key_is_created_once_with_mode_0600(tmp_path):
    home = tmp_path / "home"
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(secret_key(home))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
    assert secret_key(home) == keys[0] and list(home.iterdir()) == [home / "secret.key"]


def test_corrupt_secret_key_says_what_to_do(tmp_path):
    (tmp_path / "secret.key").write_bytes(b"short")
    with pytest.raises(ConfigError, match="delete it"):
        secret_key(tmp_path)


def test_from_json_rejects_garbage():
    with pytest.raises(BundleError, match="redeploy"):
        Manifest.from_json("[1, 2]")
