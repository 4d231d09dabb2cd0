"""Wire values: shipped classes by reference, out-of-band buffers, error envelopes that never fail."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from vast_magic.runtime import wire


def _cell_class():
    """A class like one defined in a notebook cell: not importable, so cloudpickle would ship it by value."""
    namespace = {"__name__": "__main__"}
    exec("class Point:\n"
         "    def __init__(self, x, y): self.x, self.y = x, y\n"
         "    def norm2(self): return self.x ** 2 + self.y ** 2\n", namespace)
    return namespace["Point"]


def test_cell_class_instances_travel_by_reference():
    client_point, worker_point = _cell_class(), _cell_class()
    assert client_point is not worker_point
    main, buffers = wire.dumps({"p": client_point(3, 4), "many": [client_point(1, 1)]}, {client_point: "Point"})
    assert b"_make_skeleton_class" not in main       # the class itself was not pickled by value
    value = wire.loads(main, buffers, {"Point": worker_point})
    assert isinstance(value["p"], worker_point) and value["p"].norm2() == 25
    assert isinstance(value["many"][0], worker_point)
    back = wire.loads(*wire.dumps(value["p"], {worker_point: "Point"}), {"Point": client_point})
    assert isinstance(back, client_point) and (back.x, back.y) == (3, 4)


def test_the_class_object_itself_travels_by_reference():
    client_point, worker_point = _cell_class(), _cell_class()
    assert wire.loads(*wire.dumps(client_point, {client_point: "Point"}), {"Point": worker_point}) is worker_point


@pytest.mark.parametrize("pid", [("vast_magic_class", "Nope"), ("other", "Point"), "Point"])
def test_unknown_references_are_refused(pid):
    class RefPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return pid if obj == "marker" else None

    import io
    out = io.BytesIO()
    RefPickler(out, protocol=5).dump(["marker"])
    with pytest.raises(pickle.UnpicklingError):
        wire.loads(out.getvalue(), [], {"Point": object})


def test_numpy_buffers_are_out_of_band_and_unpickling_without_them_fails():
    array = np.ones((256, 256))
    main, buffers = wire.dumps(array)
    assert len(buffers) == 1 and buffers[0].nbytes == array.nbytes and len(main) < 512
    assert np.array_equal(wire.loads(main, buffers), array)
    with pytest.raises(pickle.UnpicklingError):
        wire.loads(main, [])


def test_values_the_json_wire_lost_survive():
    import datetime
    import decimal
    value = {"flag": True, "set": {1, 2}, "when": datetime.datetime(2024, 1, 2), "d": decimal.Decimal("1.5"),
             "c": 1 + 2j, "nan": float("inf"), "lam": (lambda x: x + 1)}
    back = wire.loads(*wire.dumps(value))
    assert back["lam"](1) == 2
    assert {k: v for k, v in back.items() if k != "lam"} == {k: v for k, v in value.items() if k != "lam"}


class BrokenStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class BrokenBoth(Exception):
    def __str__(self):
        raise RuntimeError("no str")

    def __repr__(self):
        raise RuntimeError("no repr")


def _raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize("exc, type_, message", [
    (ValueError("bad x"), "builtins.ValueError", "bad x"),
    (KeyError("k"), "builtins.KeyError", "'k'"),
    (ValueError(), "builtins.ValueError", ""),
    (BrokenStr("m"), f"{__name__}.BrokenStr", "BrokenStr('m')"),
    (BrokenBoth(), f"{__name__}.BrokenBoth", "<unprintable BrokenBoth object>"),
    (np.linalg.LinAlgError("singular"), "numpy.linalg.LinAlgError", "singular"),
])
def test_error_envelope_keeps_type_message_and_traceback(exc, type_, message):
    envelope = wire.error_envelope(_raised(exc))
    assert envelope["type"] == type_ and envelope["message"] == message
    assert "_raised" in envelope["traceback"] and "raise exc" in envelope["traceback"]


def test_error_envelope_of_a_nested_class_uses_the_qualname():
    class Outer:
        class Inner(Exception):
            pass
    envelope = wire.error_envelope(Outer.Inner("x"))
    assert envelope["type"].endswith("Outer.Inner") and envelope["traceback"]
