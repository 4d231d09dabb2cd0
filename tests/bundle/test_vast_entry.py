"""The generated ``deployment.py`` on a stand-in ``vastai``: plain-JSON errors and calls before the contexts.

tests/bundle/test_build.py covers the shim's signatures, envelopes and benchmarks;
here, issue 15 items 8 and 10 (weaknesses 10 and 14), each in a fresh interpreter
that imports the extracted bundle next to a minimal ``vastai.Deployment``
(``test_build.FAKE_VASTAI``). tests/backends/vast/test_compat.py shows both with
the official worker and the official client's decoder.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tests.bundle.sample_inputs import REMOTES, demo_inputs, make_code, source
from tests.bundle.test_build import _fake_vastai, build, extract, run_python
from vast_magic.bundle.registry_spec import RemoteSpec
from vast_magic.bundle.vast_entry import CONTEXT_WAIT

BOOM = ("def boom(message):\n    error = ValueError(message, 7)\n    error.detail = {'not', 'sendable'}\n"
        "    error.code = [1, ('a', b'b')]\n    raise error\n")

SLOW = ("async def slow(seconds):\n    import asyncio\n    await asyncio.sleep(seconds)\n"
        "    raise TimeoutError('mine')\n")


def _bundle(tmp_path: Path) -> Path:
    inputs = demo_inputs()
    inputs = replace(inputs, code=make_code(extra=(source("boom", BOOM), source("slow", SLOW))),
                     remotes=REMOTES + (RemoteSpec("boom", False, at="vast_magic_app:boom"),
                                        RemoteSpec("slow", True, timeout=0.5, at="vast_magic_app:slow")))
    return extract(Path(build(tmp_path / "a.tar.gz", inputs).path), tmp_path / "x")


def _run(tmp_path: Path, body: str) -> dict:
    root = _bundle(tmp_path)
    code = ("import asyncio, json, vastai, deployment\napp = vastai.Deployment.instances[0]\nout = {}\n"
            "async def main():\n" + "".join(f"    {line}\n" for line in body.strip().splitlines())
            + "asyncio.run(main())\nprint(json.dumps(out))\n")
    proc = run_python(code, root, (_fake_vastai(tmp_path), Path(__file__).resolve().parents[2]))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_a_plain_call_error_keeps_its_args_where_the_stock_encoder_looks(tmp_path):
    out = _run(tmp_path, """
await app.__aenter__()
boom = app.remotes["boom"][0]
try:
    await boom(message="boom-7")
except ValueError as exc:
    out["state"] = {k: repr(v) for k, v in vars(exc).items()}
    out["str"] = str(exc)
try:
    await app.remotes["square"][0]()
except TypeError as exc:
    out["missing"] = list(vars(exc))
""")
    detail = out["state"].pop("detail")     # a set: the stock encoder cannot send it, so its repr travels
    assert detail in (repr("{'not', 'sendable'}"), repr("{'sendable', 'not'}"))
    assert out["state"] == {"args": "('boom-7', 7)", "code": "[1, ('a', b'b')]"}
    assert out["str"] == "('boom-7', 7)" and out["missing"] == ["args"]


def test_a_plain_call_that_runs_out_of_time_says_so(tmp_path):
    out = _run(tmp_path, """
await app.__aenter__()
for seconds in (5, 0):
    try:
        await app.remotes["slow"][0](seconds=seconds)
    except TimeoutError as exc:
        out[str(seconds)] = [str(exc), list(vars(exc)["args"])]
""")
    message = "slow did not finish within its timeout of 0.5 s"
    assert out == {"5": [message, [message]], "0": ["mine", ["mine"]]}


def test_a_call_before_the_contexts_are_entered_waits_for_them(tmp_path):
    out = _run(tmp_path, """
square = app.remotes["square"][0]
early = asyncio.ensure_future(square(x=3))
await asyncio.sleep(0.3)
out["waiting"] = not early.done()
await app.__aenter__()
out["value"] = await asyncio.wait_for(early, 60)
""")
    assert out == {"waiting": True, "value": 122}


def test_the_wait_is_bounded_and_says_the_worker_is_still_starting(tmp_path):
    out = _run(tmp_path, """
deployment._VM_CONTEXT_WAIT = 0.2
try:
    await app.remotes["square"][0](x=3)
except RuntimeError as exc:
    out["error"] = str(exc)
    out["args"] = list(vars(exc)["args"])
""")
    assert out["error"] == ("square waited 0.2 s for the worker to enter its contexts; it is still starting: "
                            "call again later")
    assert out["args"] == [out["error"]]
    assert CONTEXT_WAIT == 300.0


def test_a_failed_start_up_fails_waiting_and_later_calls_at_once(tmp_path):
    out = _run(tmp_path, """
class Broken:
    async def __aenter__(self):
        raise OSError("no GPU")
    async def __aexit__(self, *exc):
        return False
app.managers[Broken] = Broken()
square = app.remotes["square"][0]
early = asyncio.ensure_future(square(x=3))
await asyncio.sleep(0.1)
try:
    await app.__aenter__()
except OSError:
    pass
for call in (early, square(x=3)):
    try:
        await asyncio.wait_for(call, 60)
    except RuntimeError as exc:
        out.setdefault("errors", []).append(str(exc))
""")
    message = "square cannot run: the worker's start-up failed (OSError: no GPU); fix it and deploy again"
    assert out["errors"] == [message] * 2
