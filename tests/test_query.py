"""vast_magic.query: the official column/constant tables, rendering, units, errors and parsing."""
from __future__ import annotations

import pickle
import re
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vast_magic.query as vq
from vast_magic.errors import ConfigError
from vast_magic.query import (
    H100_SXM, RTX_4090, Column, Query, cpu_cores, cpu_ram, default_requirements, duration, gpu_name, gpu_ram,
    gpu_total_ram, id_, num_gpus, parse_requirement, reliability, rentable, verified,
)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_MAGIC_HOME", str(tmp_path / "home"))


# The names as listed in shared/reference/vast_sdk.md section 5 (facts of vastai 1.9.1).
REFERENCE_COLUMNS = """
id ask_contract_id bundle_id bundled_results bw_nvlink compute_cap cpu_arch cpu_cores cpu_cores_effective
cpu_ghz cpu_name cpu_ram credit_discount_max cuda_max_good direct_port_count disk_bw disk_name disk_space dlperf
dlperf_per_dphtotal dph_base dph_total driver_version driver_vers duration end_date external flops_per_dphtotal
geolocation geolocode gpu_arch gpu_display_active gpu_frac gpu_ids gpu_lanes gpu_mem_bw gpu_name gpu_ram
gpu_total_ram gpu_max_power gpu_max_temp has_avx host_id hosting_type hostname inet_down inet_down_cost inet_up
inet_up_cost is_bid logo machine_id min_bid mobo_name num_gpus os_version pci_gen pcie_bw public_ipaddr reliability
reliability_mult rentable rented score start_date static_ip storage_cost storage_total_cost total_flops
verification vericode vram_costperhour webpage vms_enabled expected_reliability is_vm_deverified resource_type
cluster_id avail_vol_ask_id avail_vol_dph avail_vol_size nw_disk_min_bw nw_disk_max_bw nw_disk_avg_bw platform_fee
datacenter verified allocated_storage target_reliability reliability2 dphtotal gpu_totalram gpu_totalram_GB
cpu_ram_GB gpu_ram_GB ubuntu_version
""".split()


# -- the tables ----------------------------------------------------------------------------
def test_every_reference_column_is_a_module_attribute_with_its_name():
    assert len(REFERENCE_COLUMNS) == len(set(REFERENCE_COLUMNS)) == 96
    for name in REFERENCE_COLUMNS:
        column = getattr(vq, "id_" if name == "id" else name)
        assert isinstance(column, Column) and column.name == name
    assert set(vq.COLUMNS) == {"id_" if n == "id" else n for n in REFERENCE_COLUMNS}


def test_gpu_constants_count_and_values():
    constants = {name: getattr(vq, name) for name in vq.__all__ if isinstance(getattr(vq, name), str)}
    assert len(constants) == 144
    assert constants["RTX_4090"] == "RTX 4090" and constants["A100_PCIE"] == "A100 PCIE"
    assert constants["RTX_PRO_6000_Max_Q"] == "RTX PRO 6000 Max-Q"
    assert constants["P104_100"] == "P104-100" and constants["P106_100"] == "P106-100"
    assert constants["RTX_3060_laptop"] == "RTX 3060 laptop" and constants["InstinctMI250X"] == "InstinctMI250X"
    odd = {k: v for k, v in constants.items() if v != k.replace("_", " ")}
    assert set(odd) == {"RTX_PRO_6000_Max_Q", "P104_100", "P106_100"}


def test_star_import_exports_columns_and_constants():
    namespace: dict = {}
    exec("from vast_magic.query import *", namespace)
    assert namespace["gpu_ram"] is gpu_ram and namespace["H100_SXM"] == "H100 SXM" and "Query" in namespace


# -- rendering and units -------------------------------------------------------------------
@pytest.mark.parametrize("query, rendered", [
    (gpu_name == RTX_4090, "gpu_name=RTX_4090"),
    (gpu_name.in_([RTX_4090, H100_SXM]), "gpu_name in RTX_4090,H100_SXM"),
    (gpu_name.notin_([RTX_4090]), "gpu_name notin RTX_4090"),
    (cpu_ram > 16.5, "cpu_ram>16.5"),
    (duration >= 3, "duration>=3"),
    (gpu_ram >= 48, "gpu_ram>=48"),
    (gpu_ram >= 48.0, "gpu_ram>=48"),
    (gpu_ram.in_([24, 48]), "gpu_ram in 24,48"),
    (num_gpus != 1, "num_gpus!=1"),
    (num_gpus < 4, "num_gpus<4"),
    (num_gpus <= 4, "num_gpus<=4"),
    (reliability > 0.99, "reliability>0.99"),
    (verified == True, "verified=true"),  # noqa: E712
    (verified == False, "verified=false"),  # noqa: E712
    (vq.geolocation.in_(["TW", "SE"]), "geolocation in TW,SE"),
    ((gpu_ram >= 24) & (cpu_cores >= 16), "cpu_cores>=16 gpu_ram>=24"),
    ((num_gpus < 4) & (num_gpus > 1), "num_gpus>1 num_gpus<4"),
    (id_ == 7, "id=7"),
    (Query(), ""),
    (Query.search_defaults(), "rentable=true rented=false verified=true"),
    (Query.search_defaults(verified=None, rented=None), "rentable=true"),
])
def test_str_renders_the_official_search_syntax_in_documented_units(query, rendered):
    assert str(query) == rendered


@pytest.mark.parametrize("query, api", [
    (gpu_ram >= 24, {"gpu_ram": {"gte": 24000}}),
    (cpu_ram > 16.5, {"cpu_ram": {"gt": 16500}}),
    (gpu_total_ram <= 80, {"gpu_total_ram": {"lte": 80000}}),
    (duration >= 3, {"duration": {"gte": 259200}}),
    (duration > 0.5, {"duration": {"gt": 43200}}),
    (cpu_ram >= 1.1, {"cpu_ram": {"gte": 1100}}),
    (gpu_ram.in_([24, 48]), {"gpu_ram": {"in": [24000, 48000]}}),
    (duration.notin_([1]), {"duration": {"notin": [86400]}}),
    (vq.gpu_ram_GB >= 24, {"gpu_ram_GB": {"gte": 24}}),          # the server converts the _GB aliases
    (gpu_name.in_([RTX_4090, H100_SXM]), {"gpu_name": {"in": ["RTX 4090", "H100 SXM"]}}),
    ((num_gpus >= 2) & (rentable == True), {"num_gpus": {"gte": 2}, "rentable": {"eq": True}}),  # noqa: E712
])
def test_to_api_dict_uses_the_offer_search_units(query, api):
    assert query.to_api_dict() == api


def test_as_dict_keeps_user_units_and_terms_are_sorted():
    query = (gpu_ram >= 24) & gpu_name.in_([RTX_4090]) & (cpu_cores >= 16) & (gpu_ram < 80)
    assert query.as_dict() == {"cpu_cores": {"gte": 16}, "gpu_name": {"in": ["RTX 4090"]},
                               "gpu_ram": {"gte": 24, "lt": 80}}
    assert query.terms() == (("cpu_cores", "gte", 16), ("gpu_name", "in", ("RTX 4090",)),
                             ("gpu_ram", "gte", 24), ("gpu_ram", "lt", 80))


def test_in_list_drops_repeats_and_a_set_is_sorted():
    assert str(gpu_name.in_([RTX_4090, RTX_4090, H100_SXM])) == "gpu_name in RTX_4090,H100_SXM"
    assert str(gpu_name.in_({RTX_4090, H100_SXM})) == "gpu_name in H100_SXM,RTX_4090"


def test_default_requirements_are_the_search_defaults():
    assert default_requirements() == Query.search_defaults() == Query(
        {"verified": {"eq": True}, "rentable": {"eq": True}, "rented": {"eq": False}})


# -- Query as a value ----------------------------------------------------------------------
def test_query_is_frozen_hashable_comparable_and_picklable():
    a = (gpu_ram >= 24) & (num_gpus >= 2)
    b = (num_gpus >= 2) & (gpu_ram >= 24.0)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != (gpu_ram >= 24)
    with pytest.raises(AttributeError, match="frozen"):
        a._terms = ()
    assert pickle.loads(pickle.dumps(a)) == a
    assert repr(a) == "<Query (gpu_ram >= 24) & (num_gpus >= 2)>"
    assert repr(Query()) == "<Query (no filters)>"


def test_with_overrides_replaces_same_column_and_op_only():
    base = (gpu_ram >= 24) & (gpu_ram < 80)
    assert base.with_overrides(gpu_ram >= 48) == (gpu_ram >= 48) & (gpu_ram < 80)
    assert base.without_columns(["gpu_ram"]) == Query()


def test_column_equality_between_columns_is_identity_so_containers_work():
    assert gpu_ram in [num_gpus, gpu_ram]
    assert (gpu_ram == num_gpus) is False and hash(gpu_ram) == hash(Column("gpu_ram"))


# -- errors --------------------------------------------------------------------------------
PARENS = "parentheses"


@pytest.mark.parametrize("build, error, message", [
    (lambda: gpu_ram >= "big", ConfigError, "gpu_ram expects a number (in GB)"),
    (lambda: verified == 3, ConfigError, "verified expects True or False"),
    (lambda: gpu_name == 5, ConfigError, "gpu_name expects a string"),
    (lambda: num_gpus >= 2.5, ConfigError, "num_gpus expects a whole number"),
    (lambda: num_gpus >= True, ConfigError, "num_gpus expects a whole number"),
    (lambda: gpu_ram >= float("nan"), ConfigError, "gpu_ram needs a finite number"),
    (lambda: gpu_ram >= None, ConfigError, "gpu_ram expects a number"),
    (lambda: gpu_name == "", ConfigError, "non-empty text"),
    (lambda: gpu_name == "RTX,4090", ConfigError, "without tabs, newlines, commas"),
    (lambda: verified > True, ConfigError, "compare it with == or !="),
    (lambda: gpu_name.in_(RTX_4090), ConfigError, "in_ takes a non-empty list"),
    (lambda: gpu_name.in_([]), ConfigError, "in_ takes a non-empty list"),
    (lambda: gpu_name.notin_([RTX_4090, 3]), ConfigError, "gpu_name expects a string"),
    (lambda: gpu_ram.in_(["big"]), ConfigError, "gpu_ram expects a number"),
    (lambda: gpu_ram >= num_gpus, ConfigError, "not with a column"),
    (lambda: (gpu_ram >= 24) & (gpu_ram >= 48), ConfigError, "sets gpu_ram >= twice (24 and 48)"),
    (lambda: (gpu_ram >= 24) & 5, ConfigError, "'&' joins two queries"),
    (lambda: (gpu_ram >= 24) | (num_gpus > 1), ConfigError, "cannot be OR-ed"),
    (lambda: 1 < num_gpus < 4, ConfigError, PARENS),
    (lambda: gpu_ram >= 24 & cpu_cores >= 16, ConfigError, PARENS),
    (lambda: gpu_ram >= 24 & (cpu_cores >= 16), ConfigError, PARENS),
    (lambda: bool(gpu_ram >= 24), ConfigError, "no truth value"),
    (lambda: (gpu_ram >= 24) and (num_gpus > 1), ConfigError, "no truth value"),
    (lambda: Query({"gpu_rma": {"gte": 1}}), ConfigError, "did you mean gpu_ram?"),
    (lambda: Query({"gpu_ram": {"ge": 1}}), ConfigError, "unknown query op 'ge'"),
    (lambda: Query({"gpu_ram": 24}), ConfigError, "give each column a mapping op -> value"),
    (lambda: vq.gpu_rma, AttributeError, "did you mean gpu_ram?"),
    (lambda: vq.rtx_4090, AttributeError, "did you mean RTX_4090?"),
    (lambda: vq.zzzzzz, AttributeError, "see dir(vast_magic.query)"),
])
def test_bad_queries_fail_when_written(build, error, message):
    with pytest.raises(error) as info:
        build()
    assert message in str(info.value)


def test_dunder_lookups_stay_plain_attribute_errors():
    assert not hasattr(vq, "__wrapped__")
    assert "gpu_ram" in dir(vq)


# -- parse_requirement ---------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("gpu_ram >= 24", gpu_ram >= 24),
    ("gpu_name.in_([RTX_4090, H100_SXM])", gpu_name.in_([RTX_4090, H100_SXM])),
    ("(num_gpus >= 2) & (reliability > 0.99)", (num_gpus >= 2) & (reliability > 0.99)),
    ("24 <= gpu_ram", gpu_ram >= 24),
    ("verified == False", verified == False),  # noqa: E712
    ("gpu_name == 'RTX 4090'", gpu_name == RTX_4090),
    ("gpu_name.notin_((RTX_4090,))", gpu_name.notin_([RTX_4090])),
    ("id_ != -3", id_ != -3),
    ("  duration >= 3  ", duration >= 3),
])
def test_parse_requirement_reads_the_python_syntax(text, expected):
    assert parse_requirement(text) == expected


@pytest.mark.parametrize("text, error, message", [
    ("gpu_rma >= 24", AttributeError, "did you mean gpu_ram?"),
    ("gpu_name == RTX_4009", AttributeError, "did you mean RTX_4090?"),
    ("1 < num_gpus < 4", ConfigError, "chained comparison"),
    ("gpu_ram >= 24 & cpu_cores >= 16", ConfigError, "'&' binds tighter"),
    ("__import__('os').system('true')", ConfigError, "cannot read the requirement"),
    ("gpu_ram.__class__", ConfigError, "cannot read the requirement"),
    ("gpu_ram >= 24 | num_gpus", ConfigError, "cannot read the requirement"),
    ("gpu_ram>=24 num_gpus=2", ConfigError, "cannot read the requirement 'gpu_ram>=24 num_gpus=2'"),
    ("gpu_name in [RTX_4090]", ConfigError, "use .in_"),
    ("gpu_name.in_(values=[RTX_4090])", ConfigError, "column.in_"),
    ("1 == 1", ConfigError, "is not a query"),
    ("'a' < 3", ConfigError, "cannot read the requirement"),
    ("gpu_ram >= 'big'", ConfigError, "gpu_ram expects a number"),
    ("", ConfigError, "is not a query"),
    (None, ConfigError, "is not a query"),
])
def test_parse_requirement_rejects_everything_else(text, error, message):
    with pytest.raises(error) as info:
        parse_requirement(text)
    assert message in str(info.value)


# -- properties ----------------------------------------------------------------------------
_NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)))
_COLUMN_VALUES = {
    "gpu_ram": _NUMBERS, "cpu_ram": _NUMBERS, "duration": _NUMBERS, "reliability": _NUMBERS,
    "num_gpus": st.integers(0, 64), "gpu_name": st.sampled_from(sorted(vq.GPU_CONSTANTS.values())),
    "verified": st.booleans(),
}
_OPS = {"verified": ["eq", "neq"]}


@st.composite
def queries(draw):
    picks = draw(st.lists(st.tuples(st.sampled_from(sorted(_COLUMN_VALUES)), st.sampled_from(
        ["eq", "neq", "gt", "gte", "lt", "lte", "in", "notin"])), unique=True, max_size=6))
    parts = []
    for column, op in picks:
        op = op if op in _OPS.get(column, [op]) else "eq"
        values = _COLUMN_VALUES[column]
        value = draw(st.lists(values, min_size=1, max_size=3)) if op in ("in", "notin") else draw(values)
        parts.append(Query({column: {op: value}}))
    return parts


@settings(max_examples=60, deadline=None)
@given(queries(), st.randoms())
def test_rendering_is_independent_of_the_order_queries_are_joined(parts, rnd):
    try:
        joined = reduce(lambda a, b: a & b, parts, Query())
    except ConfigError:       # the same column+op drawn twice (after op normalization)
        return
    shuffled = list(parts)
    rnd.shuffle(shuffled)
    again = reduce(lambda a, b: a & b, shuffled, Query())
    assert again == joined and str(again) == str(joined) and hash(again) == hash(joined)


@settings(max_examples=60, deadline=None)
@given(queries())
def test_to_source_round_trips_through_parse_requirement(parts):
    query = reduce(lambda a, b: a.with_overrides(b), parts, Query())
    assert parse_requirement(query.to_source()) == query if query.terms() else query.to_source() == ""


_TERM = re.compile(r"([a-zA-Z0-9_]+)(!=|>=|<=|=|>|<| in | notin )([^ ]+)")
_OP_NAMES = {"=": "eq", "!=": "neq", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte", " in ": "in", " notin ": "notin"}


def _official_parse(text: str) -> dict:
    """The official CLI parse rules (api/query.py parse_query): '_' is a space, GB x1000, days x86400."""
    factors = {"cpu_ram": 1000, "gpu_ram": 1000, "gpu_total_ram": 1000, "duration": 86400}
    out: dict = {}
    for column, op, raw in _TERM.findall(text):
        op = _OP_NAMES[op]
        items = raw.split(",") if op in ("in", "notin") else [raw]
        values = []
        for item in items:
            if column in factors:
                values.append(float(item) * factors[column])
            else:
                values.append({"true": True, "false": False}.get(item, item.replace("_", " ")))
        out.setdefault(column, {})[op] = values if op in ("in", "notin") else values[0]
    return out


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and not isinstance(b, str):
        return float(a) == pytest.approx(b)
    return a == pytest.approx(b) if isinstance(a, float) else a == b


@settings(max_examples=60, deadline=None)
@given(queries())
def test_the_search_string_parses_to_the_api_dict(parts):
    query = reduce(lambda a, b: a.with_overrides(b), parts, Query())
    parsed, api = _official_parse(str(query)), query.to_api_dict()
    assert set(parsed) == set(api)
    for column, ops in api.items():
        assert set(parsed[column]) == set(ops)
        assert all(_same(parsed[column][op], value) for op, value in ops.items()), (str(query), api)
