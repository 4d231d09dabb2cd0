"""``status()`` end to end on the local engine: this process's call figures and each worker's live load.

A user script (a real process, real workers) deploys, calls, fails once, and
asks for the status while calls are in flight: the client-side counters count
every call (the failed one as failed), and the busy worker reports a load.
"""
from __future__ import annotations

import textwrap

from tests.scripts import result_of, run_script

SCRIPT = textwrap.dedent('''
    import json, threading, time
    from vast_magic import Deployment

    app = Deployment(name="calls")

    @app.remote(benchmark_dataset=[{"x": 1}], benchmark_runs=2)
    async def work(x):
        import asyncio
        if x < 0:
            raise ValueError("negative")
        await asyncio.sleep(2.0 if x >= 100 else 0)
        return x

    app.ensure_ready()
    out = {"before": app.status().calls.__dict__}
    for i in range(20):
        work.call(i)
    try:
        work.call(-1)
    except ValueError:
        pass
    after = app.status()
    out["after"] = after.calls.__dict__
    out["per_call"] = after.workload_per_call
    out["idle"] = [(w.state, w.load) for w in after.workers]
    busy = threading.Thread(target=work.map, args=([100, 101, 102],))
    busy.start()
    seen = 0.0
    while busy.is_alive():                   # the calls take 2 s; the worker reports its load about every second
        seen = max([seen] + [w.load or 0.0 for w in app.status().workers if w.state == "ready"])
        time.sleep(0.1)
    out["busy"] = seen
    busy.join()
    app.teardown()
    print("RESULT " + json.dumps(out))
''')


def test_status_counts_this_process_calls_and_shows_worker_load(tmp_path, engine_home):
    out = result_of(run_script(tmp_path, "calls.py", SCRIPT, timeout=120).stdout)
    assert (out["before"]["calls"], out["before"]["total"], out["before"]["p50"]) == (0, 0, None)
    after = out["after"]
    assert (after["calls"], after["failed"], after["total"]) == (21, 1, 21)
    assert 0 < after["p50"] <= after["p99"] and after["rate"] > 0
    assert out["per_call"] == 100.0                          # no workload calculator: the SDK's default weight
    assert out["idle"] and all(state != "ready" or load == 0.0 for state, load in out["idle"])
    assert out["busy"] == 300.0                              # three calls of workload 100 in flight
    engine_home.collect()
