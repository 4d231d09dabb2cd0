"""Properties (hypothesis): the query builder, settings precedence and magic argument parsing.

- any valid query reads back from its own source, renders the same whatever the
  order of '&', survives pickling, and scales only the unit columns for the API;
  any text given to ``parse_requirement`` is a query, a ConfigError, or (an unknown
  name) an AttributeError with a suggestion; never anything else;
- ``settings.resolve`` takes the highest source that is set: argument > %config >
  env > pyproject.toml > default, whatever subset of sources is set;
- magic lines built from any valid options parse back to those options, and any
  line is parsed or refused with a UsageError.
"""
from __future__ import annotations

import math
import os
import pickle
import shlex
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st
from IPython.core.error import UsageError

from vast_magic import settings
from vast_magic._query_columns import COLUMN_KINDS, UNIT_FACTORS
from vast_magic.errors import ConfigError
from vast_magic.notebook.magics import VastMagics, _app_and_call_args, parse
from vast_magic.notebook.actions import parse_env
from vast_magic.query import Column, Query, parse_requirement

SCALAR_OPS = ("eq", "neq", "gt", "gte", "lt", "lte")
_SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters='\t\n\r\x0b\x0c,[]"\\\x00',
                                   exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
VALUES = {
    "int": st.integers(-10**6, 10**6),
    "number": st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    "bool": st.booleans(),
    "str": _SAFE_TEXT.filter(lambda s: s.strip() != ""),
}


@st.composite
def terms(draw):
    column = draw(st.sampled_from(sorted(COLUMN_KINDS)))
    kind = COLUMN_KINDS[column]
    ops = ("eq", "neq") if kind == "bool" else SCALAR_OPS + ("in", "notin")
    op = draw(st.sampled_from(ops))
    if op in ("in", "notin"):
        return column, op, draw(st.lists(VALUES[kind], min_size=1, max_size=4))
    return column, op, draw(VALUES[kind])


def build(term) -> Query:
    column, op, value = term
    col = Column(column)
    if op in ("in", "notin"):
        return getattr(col, f"{op}_")(value)
    return {"eq": col.__eq__, "neq": col.__ne__, "gt": col.__gt__, "gte": col.__ge__, "lt": col.__lt__,
            "lte": col.__le__}[op](value)


distinct_terms = st.lists(terms(), min_size=1, max_size=6, unique_by=lambda t: (t[0], t[1]))


def joined(queries) -> Query:
    result = queries[0]
    for query in queries[1:]:
        result = result & query
    return result


@given(distinct_terms, st.randoms(use_true_random=False))
def test_query_round_trips_and_ignores_order(items, rnd):
    query = joined([build(t) for t in items])
    assert parse_requirement(query.to_source()) == query
    shuffled = list(items)
    rnd.shuffle(shuffled)
    other = joined([build(t) for t in shuffled])
    assert other == query and str(other) == str(query) and hash(other) == hash(query)
    assert pickle.loads(pickle.dumps(query)) == query
    assert {(c, o) for c, o, _ in query.terms()} == {(c, o) for c, o, _ in items}


@given(distinct_terms)
def test_api_units_scale_only_unit_columns(items):
    query = joined([build(t) for t in items])
    plain, api = query.as_dict(), query.to_api_dict()
    assert plain.keys() == api.keys()
    for column, ops in plain.items():
        factor = UNIT_FACTORS.get(column)
        for op, value in ops.items():
            values, scaled = (value, api[column][op]) if isinstance(value, list) else ([value], [api[column][op]])
            for v, s in zip(values, scaled):
                assert s == v if factor is None else math.isclose(s, v * factor, rel_tol=1e-9, abs_tol=1e-5)


@given(terms(), distinct_terms)
def test_same_bound_twice_is_refused(term, others):
    rest = [build(t) for t in others if t[:2] != term[:2]]
    query = joined(rest) & build(term) if rest else build(term)
    with pytest.raises(ConfigError, match="twice"):
        query & build(term)


@given(st.sampled_from(sorted(c for c, k in COLUMN_KINDS.items() if k in ("int", "number"))),
       st.sampled_from(SCALAR_OPS), st.one_of(st.text(max_size=5), st.none(), st.booleans(),
                                               st.just(float("nan")), st.just(float("inf"))))
def test_wrong_value_types_name_the_column(column, op, value):
    with pytest.raises(ConfigError, match=column):
        build((column, op, value))


@hsettings(max_examples=300)
@given(st.text(max_size=60))
def test_any_requirement_text_is_a_query_or_a_config_error(text):
    try:
        assert isinstance(parse_requirement(text), Query)
    except (ConfigError, AttributeError) as exc:      # AttributeError: an unknown name, as tests/test_query.py fixes
        assert isinstance(exc, ConfigError) or "did you mean" in str(exc) or "see dir" in str(exc), str(exc)
        assert any(hint in str(exc) for hint in ("e.g.", "write", "use", "did you mean", "see dir")), str(exc)


# -- settings precedence ----------------------------------------------------------------------
SETTING_VALUES = {
    "backend": st.sampled_from(["local", "vast"]),
    "display": st.sampled_from(["auto", "widget", "text"]),
    "deploy_timeout": st.floats(0.5, 1e4, allow_nan=False).map(lambda x: round(x, 3)),
    "vast_url": st.sampled_from(["https://console.vast.ai", "http://127.0.0.1:8080", "https://vast.example.com/api/"]),
    "autoscaler_url": st.sampled_from(["https://run.vast.ai", "http://[::1]:9", "http://localhost:7000"]),
}
SOURCES = ("argument", "config", "env", "pyproject")


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.sampled_from(sorted(SETTING_VALUES)), st.data())
def test_settings_take_the_highest_source_that_is_set(name, data):
    present = {src: data.draw(SETTING_VALUES[name], label=src) for src in SOURCES
               if data.draw(st.booleans(), label=f"set {src}")}
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.delenv(f"VAST_MAGIC_{name.upper()}", raising=False)
        if "pyproject" in present:
            value = present["pyproject"]
            Path(folder, "pyproject.toml").write_text(
                f"[tool.vast_magic]\n{name} = {value!r}\n".replace("'", '"'))
        if "env" in present:
            mp.setenv(f"VAST_MAGIC_{name.upper()}", str(present["env"]))
        settings.set_config_source(lambda key: present.get("config") if key == name else None)
        try:
            got = settings.resolve(name, present.get("argument"))
        finally:
            settings.set_config_source(None)
    winner = next((present[src] for src in SOURCES if src in present), settings.SETTINGS[name].default)
    assert got == settings.SETTINGS[name].parse(winner)


# -- magic argument parsing ---------------------------------------------------------------------
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True)
SECONDS = st.floats(0.1, 1e5, allow_nan=False).map(lambda x: round(x, 2))


@given(st.fixed_dictionaries({}, optional={"name": NAMES, "tag": NAMES, "ttl": SECONDS, "timeout": SECONDS,
                                           "backend": st.sampled_from(["local", "vast"]), "app": NAMES}),
       st.booleans(), st.booleans(), st.randoms(use_true_random=False))
def test_deploy_line_parses_back(options, dry_run, no_wait, rnd):
    words = [f"--{key} {shlex.quote(str(value))}" for key, value in options.items()]
    words += ["--dry-run"] * dry_run + ["--no-wait"] * no_wait
    rnd.shuffle(words)
    args = parse(VastMagics.vast_deploy, " ".join(words))
    for key, value in options.items():
        assert getattr(args, key) == value
    assert (args.dry_run, args.no_wait) == (dry_run, no_wait)


ENV_VALUES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@given(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), ENV_VALUES, max_size=4))
def test_image_env_pairs_survive_quoting(env):
    line = "vastai/base-image:@vastai-automatic-tag" + "".join(
        f" --env {shlex.quote(f'{k}={v}')}" for k, v in env.items())
    args = parse(VastMagics.vast_image, line)
    assert args.image == "vastai/base-image:@vastai-automatic-tag" and parse_env(args.env) == env


@given(NAMES, st.text(max_size=30).filter(lambda s: not s.strip().startswith("-")))
def test_context_line_splits_app_from_call(var, call):
    options, rest = _app_and_call_args(f"--app {var} {call}")
    assert options == f"--app {var}" and rest == call.lstrip()


@hsettings(max_examples=200)
@given(st.sampled_from(["vast_deploy", "vast_image", "vast_remote", "vast_logs", "vast_status", "vast_teardown"]),
       st.text(max_size=40))
def test_any_magic_line_parses_or_is_a_usage_error(magic, line):
    try:
        parse(getattr(VastMagics, magic), line)
    except UsageError as exc:
        assert "%" + magic in str(exc)                  # the usage line comes with every refusal
