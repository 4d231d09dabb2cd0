"""vast_magic._env_string: env values as Vast's CLI-style parser reads them back (reference 8.4).

``cli_parse`` below re-implements that parser from the reference's description
(split on spaces outside quotes, each quote kind toggling its own state, no
escapes; the value is everything after the first ``=`` with outer quote
characters stripped; only ``-e/-p/-h/-v/-n`` flags kept). A property test runs
whole env strings, as ``compile_env`` writes them, through it: every accepted
value comes back exactly, with the flags around it intact, and exactly the values
the documented rule refuses are refused, naming the variable. Bad values are a
table (type and message), through the renderer and through ``Image.env``.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from vast_magic import ConfigError, Image, Secret
from vast_magic._env_string import check_value, render_flag, value_problem
from vast_magic.backends.vast import deploy


# -- the parser, re-implemented from the reference ---------------------------------------------------------
def cli_split(text: str) -> list[str]:
    """Split on ' ' outside quotes; ' and " each toggle their own state and stay in the token."""
    parts, current, single, double = [], [], False, False
    for char in text:
        if char == " " and not (single or double):
            parts.append("".join(current))
            current = []
            continue
        if char == "'":
            single = not single
        elif char == '"':
            double = not double
        current.append(char)
    parts.append("".join(current))
    return parts


def cli_parse(text: str) -> dict[str, str]:
    """``-e K=V`` -> {K: V with outer quote characters stripped}; ``-p`` kept as ``"-p 80:80/tcp"`` keys."""
    result, flag = {}, None
    for token in cli_split(text):
        if flag is None:
            flag = token if token in {"-e", "-p", "-h", "-v", "-n"} else None
            continue
        if flag == "-e" and "=" in token:
            key, _, value = token.partition("=")
            result[key] = value.strip("'\"")
        elif flag == "-p" and set(token) <= set("0123456789:tcp/udp"):
            result[f"-p {token}"] = "1"
        flag = None
    return result


def documented_refusal(value: str) -> bool:
    """The rule the module documents: NUL or line break, both quote kinds, a quote first or last."""
    return (any(c in value for c in "\x00\n\r") or ("'" in value and '"' in value)
            or value[:1] in ("'", '"') or value[-1:] in ("'", '"'))


# -- the property --------------------------------------------------------------------------------------------
_TRICKY = st.sampled_from([" ", "'", '"', "=", "-e", "-p", "\n", "\r", "\x00", "\t", "é", "$", "\\", "a", "Z"])
VALUES = st.lists(st.one_of(_TRICKY, st.characters()), max_size=12).map("".join)
NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)


@hsettings(max_examples=600, database=None, deadline=None)
@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=5))
def test_every_accepted_value_reads_back_exactly_and_the_rest_is_refused(variables):
    flags = []
    for name, value in variables.items():
        if documented_refusal(value):
            with pytest.raises(ConfigError, match=f"env {name}: the value "):
                render_flag(name, value)
        else:
            flags.append(render_flag(name, value))
    accepted = {k: v for k, v in variables.items() if not documented_refusal(v)}
    text = " ".join(["-p 3000:3000/tcp", *flags, "-e REPORT_ADDR=https://run.vast.ai", "-p 8080:8080/tcp"])
    assert cli_parse(text) == {"-p 3000:3000/tcp": "1", **accepted, "REPORT_ADDR": "https://run.vast.ai",
                               "-p 8080:8080/tcp": "1"}


@hsettings(max_examples=300, database=None, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES), max_size=4, unique_by=lambda p: p[0]))
def test_compile_env_reads_back_through_the_parser(secrets):
    secrets = [(k, v) for k, v in secrets if value_problem(v) is None]
    image = Image("img").venv("/opt/my venv").spec()
    text = deploy.compile_env(image, secrets, autoscaler_url="https://run.vast.ai")
    parsed = cli_parse(text)
    assert parsed["ENV_PATH"] == "/opt/my venv" and parsed["REPORT_ADDR"] == "https://run.vast.ai"
    assert {k: parsed[k] for k, _ in secrets} == dict(secrets)


# -- examples and bad values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, rendered", [
    ("plain", "-e K=plain"), ("", "-e K="), ("a=b=c", "-e K=a=b=c"), ("two words", '-e K="two words"'),
    ("it's", "-e K=\"it's\"'"), ("it's Bob's", "-e K=\"it's Bob's\""), ('say "hi" now', "-e K='say \"hi\" now'"),
    ('a"b', "-e K='a\"b'\""), ("tab\there", "-e K=tab\there"),
])
def test_rendering_examples(value, rendered):
    assert render_flag("K", value) == rendered
    assert cli_parse(f"{rendered} -e NEXT=1") == {"K": value, "NEXT": "1"}


BAD = [
    ("line\nbreak", "env K: the value contains a newline", "on one line"),
    ("cr\rhere", "env K: the value contains a carriage return", "on one line"),
    ("nul\x00here", "env K: the value contains a NUL character", "on one line"),
    ("both ' and \"", "env K: the value contains both kinds of quote", "one kind of quote"),
    ("'quoted'", "env K: the value starts or ends with a quote character", "leave out the outer quotes"),
    ('ends"', "env K: the value starts or ends with a quote character", "leave out the outer quotes"),
]


@pytest.mark.parametrize("value, message, fix", BAD)
def test_bad_values_are_config_errors_naming_the_variable(value, message, fix):
    with pytest.raises(ConfigError) as info:
        render_flag("K", value)
    assert message in str(info.value) and fix in str(info.value)


@pytest.mark.parametrize("value, message, fix", BAD)
@pytest.mark.parametrize("wrap", [str, Secret], ids=["plain", "secret"])
def test_image_env_refuses_the_same_values_without_showing_them(value, message, fix, wrap):
    image = Image("img").env(A="1")
    with pytest.raises(ConfigError) as info:
        image.env(K=wrap(value))
    assert message in str(info.value) and value not in str(info.value)
    assert image.spec().env == (("A", "1"),)


@pytest.mark.parametrize("name, value, message", [
    ("1BAD", "x", "env name '1BAD' is invalid"),
    ("K", 3, "env K: values must be str, got int"),
])
def test_check_value_refuses_bad_names_and_types(name, value, message):
    with pytest.raises(ConfigError, match=message):
        check_value(name, value)
