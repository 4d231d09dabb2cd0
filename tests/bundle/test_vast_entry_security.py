"""The generated ``deployment.py`` refuses every envelope it should, before unpickling anything.

Run against the shim directly (the stand-in ``vastai`` of test_build.py); the
official worker runs the same cases over HTTP in tests/backends/vast/test_compat.py.
Every refused envelope carries a canary pickle that would create a file when
unpickled; the file must not exist afterwards, and a properly signed canary
(the control) must create it.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.bundle.test_build import ROOT, _fake_vastai, build, extract, run_python

DRIVER = """
    import asyncio, base64, json, os, pickle, time
    KEY = bytes(range(32))
    CANARY = {canary!r}
    os.environ["VAST_MAGIC_ENVELOPE_KEY"] = KEY.hex()
    os.environ["VAST_MAGIC_MAX_REQUEST_BYTES"] = str(256 * 1024)
    import vastai, deployment
    from vast_magic.backends.vast import envelope
    from vast_magic.runtime import sealed
    app = vastai.Deployment.instances[0]
    fn, options = app.remotes["square"]
    VERSION = deployment._VM_VERSION

    class Canary:
        def __reduce__(self):
            return (open, (CANARY, "w"))

    canary = envelope.pack(pickle.dumps({{"args": (Canary(),), "kwargs": {{}}}}, protocol=5))
    benign = envelope.request_payload((3,), {{}})

    def seal(payload, key=KEY, **changes):
        fields = dict(function="square", version=VERSION) | changes
        return sealed.seal(key, payload, **fields)

    def swap_payload(text, payload):
        parts = text.split(".")
        return ".".join(parts[:3] + [base64.b64encode(payload).decode()])

    def swap_header(text, **changes):
        parts = text.split(".")
        header = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))) | changes
        raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return ".".join([parts[0], base64.urlsafe_b64encode(raw).decode().rstrip("="), *parts[2:]])

    async def outcome(text):
        try:
            answer = await fn(__vast_magic__=text)
        except PermissionError as exc:
            return "refused: " + exc.message
        if answer.startswith(sealed.STALE):
            return answer
        return envelope.decode(answer)["ok"]

    async def main():
        await app.__aenter__()
        out = {{}}
        replayed = seal(benign)
        cases = {{
            "unsigned": base64.b64encode(canary).decode(),
            "wrong key": seal(canary, key=bytes(32)),
            "tampered payload": swap_payload(seal(benign), canary),
            "tampered header": swap_header(seal(canary, function="other"), fn="square"),
            "other function": seal(canary, function="other"),
            "old timestamp": seal(canary, now=time.time() - 3600),
            "future timestamp": seal(canary, now=time.time() + 3600),
            "oversized": seal(canary + b"\\0" * (300 * 1024)),
            "not text": 12345,
            "first use": replayed,
            "replayed": replayed,
            "stale version": seal(canary, version="0123456789abcdef"),
        }}
        for name, text in cases.items():
            out[name] = await outcome(text)
        out["plain"] = await fn(x=3)
        out["version"] = VERSION
        out["canary_after_refusals"] = os.path.exists(CANARY)
        out["control"] = await outcome(seal(canary))
        out["canary_after_control"] = os.path.exists(CANARY)
        print(json.dumps(out))
    asyncio.run(main())
"""

EXPECTED = {
    "unsigned": "refused: vast_magic envelope refused: not a signed vast_magic envelope",
    "wrong key": "refused: vast_magic envelope refused: bad signature",
    "tampered payload": "refused: vast_magic envelope refused: payload does not match its signed digest",
    "tampered header": "refused: vast_magic envelope refused: bad signature",
    "other function": "refused: vast_magic envelope refused: signed for function 'other', sent to 'square'",
    "old timestamp": "refused: vast_magic envelope refused: timestamp is +3600s",
    "future timestamp": "refused: vast_magic envelope refused: timestamp is -3600s",
    "oversized": "refused: vast_magic envelope refused: ",
    "not text": "refused: vast_magic envelope refused: expected text, got int",
    "first use": True,
    "replayed": "refused: vast_magic envelope refused: replayed",
    "stale version": "vast_magic:stale-version:",
}


def test_shim_refuses_before_unpickling(tmp_path):
    canary = tmp_path / "canary-was-unpickled"
    root = extract(Path(build(tmp_path / "a.tar.gz").path), tmp_path / "x")
    proc = run_python(DRIVER.format(canary=str(canary)), root, (_fake_vastai(tmp_path), ROOT))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    for case, want in EXPECTED.items():
        got = out[case]
        assert got == want if isinstance(want, bool) else str(got).startswith(want), (case, got)
    assert "over this worker's limit of 262144" in out["oversized"]
    assert len(out["version"]) == 64 and out["stale version"] == "vast_magic:stale-version:" + out["version"]
    assert out["plain"] == 122                       # plain JSON calls need no key and keep working
    assert out["canary_after_refusals"] is False     # nothing above was unpickled
    assert out["control"] is False and out["canary_after_control"] is True   # the canary does work when opened


CALCULATOR_DRIVER = """
    import asyncio, json, os, pickle
    KEY = bytes(range(32))
    CANARY = {canary!r}
    os.environ["VAST_MAGIC_ENVELOPE_KEY"] = KEY.hex()
    import vastai, deployment
    from vast_magic.backends.vast import envelope
    from vast_magic.runtime import sealed
    app = vastai.Deployment.instances[0]
    fn, options = app.remotes["square"]
    calculate = options["workload_calculator"]      # the stock worker scores a request before running it

    class Canary:
        def __reduce__(self):
            return (open, (CANARY, "w"))

    canary = envelope.pack(pickle.dumps({{"args": (Canary(),), "kwargs": {{}}}}, protocol=5))

    def seal(payload, key=KEY, version=deployment._VM_VERSION):
        return sealed.seal(key, payload, function="square", version=version)

    async def request(text):
        score = calculate(__vast_magic__=text)
        try:
            answer = await fn(__vast_magic__=text)
        except PermissionError as exc:
            return [score, exc.message[:37]]
        return [score, answer if answer.startswith(sealed.STALE) else envelope.decode(answer)["value"]]

    async def main():
        await app.__aenter__()
        good = seal(envelope.request_payload((3,), {{}}))
        out = {{"good": await request(good), "replayed": await request(good),
               "wrong key": await request(seal(canary, key=bytes(32))),
               "stale": (await request(seal(canary, version="other")))[0]}}
        out["canary"] = os.path.exists(CANARY)
        print(json.dumps(out))
    asyncio.run(main())
"""


def test_workload_calculator_opens_each_envelope_once_and_refuses_the_same(tmp_path):
    from dataclasses import replace

    from tests.bundle.sample_inputs import demo_inputs, make_code, source
    from vast_magic.bundle.registry_spec import RemoteSpec

    inputs = demo_inputs()
    inputs = replace(inputs, code=make_code(extra=(source("cost", "def cost(x, y=1):\n    return 7.0 * x\n"),)),
                     remotes=(replace(inputs.remotes[0], workload_calculator="vast_magic_app:cost",
                                      workload_mode="params"),))
    assert isinstance(inputs.remotes[0], RemoteSpec)
    canary = tmp_path / "canary-was-unpickled"
    root = extract(Path(build(tmp_path / "a.tar.gz", inputs).path), tmp_path / "x")
    proc = run_python(CALCULATOR_DRIVER.format(canary=str(canary)), root, (_fake_vastai(tmp_path), ROOT))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["good"] == [21.0, 122]          # scored from the arguments, then run (one nonce, claimed once)
    assert out["replayed"] == [100.0, "vast_magic envelope refused: replayed"]
    assert out["wrong key"] == [100.0, "vast_magic envelope refused: bad sign"]
    assert out["stale"] == 100.0 and out["canary"] is False
