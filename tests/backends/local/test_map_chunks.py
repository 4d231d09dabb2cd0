"""f.map on the local backend goes in chunks: order kept, each item answered on its own, progress counted."""
from __future__ import annotations

from tests.backends.local.engine_harness import make_bundle, plan
from vast_magic.backends.base import CallSpec
from vast_magic.errors import RemoteError

SPEC = CallSpec(name="demo", tag="default", function="square", timeout=30.0, max_queue_time=30.0)


def test_a_chunked_map_keeps_order_and_one_failure_loses_nothing(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    items = list(range(300))
    items[123] = "x"                                          # "x" * "x": a TypeError on the worker
    counted = []
    results = harness.run(harness.backend.call_many(SPEC, [((x,), {}, 100.0) for x in items], {},
                                                    lambda finished, failed: counted.append((finished, failed))))
    assert len(results) == 300 and len(counted) > 1          # several chunks, each counted when it ended
    assert sum(f for f, _ in counted) == 300 and sum(f for _, f in counted) == 1
    assert isinstance(results[123].error, RemoteError) and "TypeError" in str(results[123].error)
    assert [r.value for i, r in enumerate(results) if i != 123] == [x * x for i, x in enumerate(items) if i != 123]


def test_a_map_with_no_deployment_fails_every_item_the_same_way(harness):
    harness.apply(plan(make_bundle(harness.folder)))
    spec = CallSpec(name="missing", tag="default", function="square", timeout=1.0, max_queue_time=30.0)
    counted = []
    results = harness.run(harness.backend.call_many(spec, [((1,), {}, 100.0), ((2,), {}, 100.0)], {},
                                                    lambda finished, failed: counted.append((finished, failed))))
    assert counted == [(2, 2)] and len(results) == 2 and results[0] is results[1]
    assert isinstance(results[0], Exception)
