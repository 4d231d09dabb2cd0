"""GPU search filters: ``gpu_ram >= 24``, ``gpu_name.in_([RTX_4090, H100_SXM])``.

Every column and GPU-name constant of the official ``vastai.data.query`` is an
attribute here, with the same name and value (``id`` is ``id_``). Comparing a
``Column`` builds a frozen ``Query``; queries combine with ``&``. Where the
official builder is weak we are stricter on purpose (reference section 7,
item 22):

- values are in the units the Vast docs promise: ``gpu_ram >= 48`` means
  48 GB and renders ``gpu_ram>=48``; ``to_api_dict()`` converts to the
  offer-search units (RAM x1000, ``duration`` days x86400), also inside
  ``in_``/``notin_`` lists;
- a chained comparison (``1 < num_gpus < 4``) or a missing pair of
  parentheses (``gpu_ram >= 24 & cpu_cores >= 16``) is a ``ConfigError``
  instead of a silently dropped bound;
- a value of the wrong type fails when written, naming the column;
- terms render in a fixed order (column, then op) so fingerprints are stable.

``parse_requirement(text)`` reads the same Python syntax from a string (for
``%vast_image --require``) without ``eval``: only columns, constants,
comparisons, ``&``, ``in_``/``notin_`` calls, literals and lists are allowed.
"""
from __future__ import annotations

import ast
import difflib
import math
import numbers
import operator
from typing import Any, Iterable, Mapping

from ._query_columns import COLUMN_KINDS, GPU_CONSTANTS, UNIT_FACTORS, UNIT_NAMES, VARIABLE_OF
from .errors import ConfigError

#: op name -> text in the official search string
OP_TEXT = {"eq": "=", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "in": " in ", "notin": " notin "}
#: op name -> the Python spelling (for messages and ``to_source``)
_PY_OP = {"eq": "==", "neq": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIST_OPS = ("in", "notin")
_PARENS_HINT = ("wrap each comparison in parentheses and join them with '&', "
                "e.g. (num_gpus > 1) & (num_gpus < 4) or (gpu_ram >= 24) & (cpu_cores >= 16)")
_KIND_TEXT = {"int": "a whole number", "number": "a number", "bool": "True or False", "str": "a string"}
_KIND_EXAMPLE = {"int": "2", "number": "24", "bool": "True", "str": "'amd64'"}
_FORBIDDEN_TEXT = set('\t\n\r\x0b\x0c,[]"')


# -- values --------------------------------------------------------------------------------
def _expected(column: str) -> str:
    kind = COLUMN_KINDS[column]
    unit = f" (in {UNIT_NAMES[column]})" if column in UNIT_NAMES else ""
    example = "RTX_4090" if column == "gpu_name" else _KIND_EXAMPLE[kind]
    return f"{_KIND_TEXT[kind]}{unit}, e.g. {VARIABLE_OF[column]} == {example}"


def _bad_value(column: str, op: str, value: Any, why: str = "") -> ConfigError:
    shown = f"{VARIABLE_OF[column]}.{op}_({value!r})" if op in _LIST_OPS else f"{VARIABLE_OF[column]} {_PY_OP[op]} {value!r}"
    reason = why or f"{column} expects {_expected(column)}; got {type(value).__name__}"
    return ConfigError(f"query {shown} is invalid: {reason}.")


def _scalar(column: str, op: str, value: Any) -> Any:
    """The normalized value of one comparison, or ConfigError naming the column and expected type."""
    kind = COLUMN_KINDS[column]
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "str":
        if isinstance(value, str):
            if not value.strip() or set(value) & _FORBIDDEN_TEXT:
                raise _bad_value(column, op, value, f"{column} needs non-empty text without tabs, newlines, "
                                                    "commas, brackets or double quotes")
            return value
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _bad_value(column, op, value, f"{column} needs a finite number")
        if isinstance(value, numbers.Integral):
            return int(value)
        if kind == "int" and not float(value).is_integer():
            raise _bad_value(column, op, value)
        return int(value) if kind == "int" else float(value)
    raise _bad_value(column, op, value)


def _value(column: str, op: str, value: Any) -> Any:
    """A checked scalar, or for in/notin a de-duplicated tuple of checked scalars."""
    if op not in OP_TEXT:
        raise ConfigError(f"unknown query op {op!r} for {column}; use one of {', '.join(OP_TEXT)}.")
    if op not in _LIST_OPS:
        if COLUMN_KINDS[column] == "bool" and op not in ("eq", "neq"):
            raise _bad_value(column, op, value, f"{column} is True or False: compare it with == or !=")
        return _scalar(column, op, value)
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)   # a set has no order: sort it so the query is stable
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise _bad_value(column, op, value, f"{op}_ takes a non-empty list, e.g. "
                                            f"{VARIABLE_OF[column]}.{op}_([{_KIND_EXAMPLE[COLUMN_KINDS[column]]}])")
    return tuple(dict.fromkeys(_scalar(column, op, item) for item in value))


def _render_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.replace(" ", "_")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _api_number(value: Any, factor: int) -> Any:
    scaled = round(value * factor, 6)    # 1.1 GB -> 1100, not 1100.0000000000002
    return int(scaled) if float(scaled).is_integer() else scaled


# -- Query ---------------------------------------------------------------------------------
class Query:
    """A frozen set of filters ``{column: {op: value}}`` in the units the Vast docs use.

    Build it from columns (``gpu_ram >= 24``) and ``&``; ``str(q)`` is the official
    search string, ``to_api_dict()`` the offer-search body.
    """

    __slots__ = ("_terms",)

    def __init__(self, query: Mapping[str, Mapping[str, Any]] | None = None):
        terms = []
        for column, ops in (query or {}).items():
            if column not in COLUMN_KINDS:
                raise ConfigError(f"unknown query column {column!r}{_did_you_mean(column)}")
            if not isinstance(ops, Mapping):
                raise ConfigError(f"Query({{{column!r}: {ops!r}}}): give each column a mapping op -> value, "
                                  f"e.g. Query({{{column!r}: {{'gte': 24}}}}).")
            terms += [(column, op, _value(column, op, value)) for op, value in ops.items()]
        object.__setattr__(self, "_terms", tuple(sorted(terms, key=lambda t: (t[0], t[1]))))

    @classmethod
    def _of(cls, terms: Iterable[tuple[str, str, Any]]) -> "Query":
        """A Query from already-checked terms."""
        query = cls.__new__(cls)
        object.__setattr__(query, "_terms", tuple(sorted(terms, key=lambda t: (t[0], t[1]))))
        return query

    @classmethod
    def search_defaults(cls, verified: bool | None = True, rentable: bool | None = True,
                        rented: bool | None = False) -> "Query":
        """The official defaults every Image starts from; a None argument leaves that filter out."""
        wanted = {"verified": verified, "rentable": rentable, "rented": rented}
        return cls({name: {"eq": value} for name, value in wanted.items() if value is not None})

    def terms(self) -> tuple[tuple[str, str, Any], ...]:
        """Sorted ``(column, op, value)``; list values are tuples."""
        return self._terms

    def columns(self) -> frozenset[str]:
        return frozenset(column for column, _, _ in self._terms)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{column: {op: value}}`` in user units (GB, days), lists as lists."""
        out: dict[str, dict[str, Any]] = {}
        for column, op, value in self._terms:
            out.setdefault(column, {})[op] = list(value) if isinstance(value, tuple) else value
        return out

    def to_api_dict(self) -> dict[str, dict[str, Any]]:
        """The offer-search body filters: RAM columns in MB, ``duration`` in seconds."""
        out = self.as_dict()
        for column, ops in out.items():
            factor = UNIT_FACTORS.get(column)
            if factor:
                out[column] = {op: ([_api_number(v, factor) for v in value] if isinstance(value, list)
                                    else _api_number(value, factor)) for op, value in ops.items()}
        return out

    def to_source(self) -> str:
        """The Python expression that builds this query (``parse_requirement`` reads it back)."""
        parts = []
        for column, op, value in self._terms:
            variable = VARIABLE_OF[column]
            if op in _LIST_OPS:
                parts.append(f"{variable}.{op}_({list(value)!r})")
            else:
                parts.append(f"({variable} {_PY_OP[op]} {value!r})")
        return " & ".join(parts)

    def with_overrides(self, other: "Query") -> "Query":
        """This query with ``other``'s bounds replacing ours on the same column and op."""
        replaced = {(column, op) for column, op, _ in other._terms}
        return Query._of([t for t in self._terms if (t[0], t[1]) not in replaced] + list(other._terms))

    def without_columns(self, columns: Iterable[str]) -> "Query":
        drop = set(columns)
        return Query._of(t for t in self._terms if t[0] not in drop)

    def __and__(self, other: Any) -> "Query":
        if not isinstance(other, Query):
            raise ConfigError(f"'&' joins two queries, got {type(other).__name__} {other!r}; {_PARENS_HINT}.")
        mine = {(column, op): value for column, op, value in self._terms}
        for column, op, value in other._terms:
            if (column, op) in mine:
                raise ConfigError(
                    f"query sets {VARIABLE_OF[column]} {_PY_OP.get(op, op + '_')} twice "
                    f"({mine[(column, op)]!r} and {value!r}) in one '&'; keep one bound.")
        return Query._of(self._terms + other._terms)

    def __rand__(self, other: Any) -> "Query":
        raise ConfigError(f"'{other!r} & <query>' mixes a value into '&': {_PARENS_HINT}.")

    def __or__(self, other: Any) -> "Query":
        raise ConfigError("Vast search filters cannot be OR-ed; for alternatives of one column "
                          "use .in_([...]), e.g. gpu_name.in_([RTX_4090, H100_SXM]).")

    __ror__ = __or__

    def __bool__(self) -> bool:
        raise ConfigError(f"a query has no truth value (a chained comparison like 1 < num_gpus < 4, or "
                          f"'and'/'or', would silently drop a bound): {_PARENS_HINT}.")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Query) and self._terms == other._terms

    def __hash__(self) -> int:
        return hash(("Query", self._terms))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Query is frozen; build a new one with '&' or with_overrides()")

    def __reduce__(self):
        return (Query._of, (self._terms,))

    def __str__(self) -> str:
        return " ".join(f"{column}{OP_TEXT[op]}"
                        f"{','.join(map(_render_scalar, value)) if isinstance(value, tuple) else _render_scalar(value)}"
                        for column, op, value in self._terms)

    def __repr__(self) -> str:
        return f"<Query {self.to_source() or '(no filters)'}>"


def default_requirements() -> Query:
    """What every Image requires before ``require``: verified, rentable, not rented."""
    return Query.search_defaults()


# -- Column --------------------------------------------------------------------------------
def _column_operator(op: str):
    """A Column comparison building a one-term Query (``==``/``!=`` between columns stay identity tests)."""
    def compare(self: "Column", value: Any) -> Any:
        if op in ("eq", "neq") and isinstance(value, Column):   # so `column in [columns]` keeps working
            return NotImplemented
        return self._compare(op, value)
    compare.__name__ = f"compare_{op}"
    return compare


class Column:
    """One offer column; compare it to build a Query (``gpu_ram >= 24``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        if name not in COLUMN_KINDS:
            raise ConfigError(f"unknown query column {name!r}{_did_you_mean(name)}")
        object.__setattr__(self, "name", name)

    def _compare(self, op: str, value: Any) -> Query:
        if isinstance(value, (Column, Query)):
            raise _bad_value(self.name, op, value, f"compare {self.name} with a value, not with "
                                                   f"{'a column' if isinstance(value, Column) else 'a query'}")
        return Query._of([(self.name, op, _value(self.name, op, value))])

    __eq__ = _column_operator("eq")    # type: ignore[assignment]
    __ne__ = _column_operator("neq")   # type: ignore[assignment]
    __lt__ = _column_operator("lt")
    __le__ = _column_operator("lte")
    __gt__ = _column_operator("gt")
    __ge__ = _column_operator("gte")

    def in_(self, values: Iterable[Any]) -> Query:
        return self._compare("in", values)

    def notin_(self, values: Iterable[Any]) -> Query:
        return self._compare("notin", values)

    def __and__(self, other: Any) -> Query:
        raise ConfigError(f"'&' was applied to the column {self.name} itself ('&' binds tighter than "
                          f"comparisons): {_PARENS_HINT}.")

    __rand__ = __and__

    def __or__(self, other: Any) -> Query:
        raise ConfigError(f"'|' was applied to the column {self.name}: Vast filters cannot be OR-ed; "
                          f"use {VARIABLE_OF[self.name]}.in_([...]).")

    __ror__ = __or__

    def __hash__(self) -> int:
        return hash(("Column", self.name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Column is frozen")

    def __reduce__(self):
        return (Column, (self.name,))

    def __repr__(self) -> str:
        return f"Column({self.name!r})"


# -- module attributes: every column and GPU constant -------------------------------------
COLUMNS: dict[str, Column] = {VARIABLE_OF[name]: Column(name) for name in COLUMN_KINDS}
globals().update(COLUMNS)
globals().update(GPU_CONSTANTS)

__all__ = ["Query", "Column", "parse_requirement", "default_requirements", "OP_TEXT",
           *COLUMNS, *GPU_CONSTANTS]


def _did_you_mean(name: str) -> str:
    """'; did you mean X?' for the closest column or constant, compared without case."""
    known = {key.lower(): key for key in (*COLUMNS, *GPU_CONSTANTS)}
    close = difflib.get_close_matches(name.lower(), list(known), n=1, cutoff=0.6)
    return f"; did you mean {known[close[0]]}?" if close else "; see dir(vast_magic.query) for the column names."


def _unknown_name(name: str) -> AttributeError:
    return AttributeError(f"vast_magic.query has no column or GPU constant {name!r}{_did_you_mean(name)}")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise _unknown_name(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# -- parse_requirement ----------------------------------------------------------------------
_COMPARE_OPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
                ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_MAX_TEXT = 10_000


class _Unsupported(Exception):
    """Raised inside the evaluator; parse_requirement turns it into a ConfigError naming the text."""


def parse_requirement(text: str) -> Query:
    """Read ``"gpu_ram >= 24"`` or ``"(num_gpus >= 2) & (reliability > 0.99)"`` into a Query, safely."""
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT:
        raise ConfigError(f"requirement {text!r} is not a query; write one like 'gpu_ram >= 24'.")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        result = _evaluate(tree.body)
    except (SyntaxError, ValueError, TypeError, RecursionError, _Unsupported) as exc:
        detail = f" ({exc})" if isinstance(exc, _Unsupported) else ""
        raise ConfigError(f"cannot read the requirement {text!r}{detail}: write comparisons of a column "
                          "with a value joined by '&', e.g. '(num_gpus >= 2) & (reliability > 0.99)' "
                          "or 'gpu_name.in_([RTX_4090, H100_SXM])'.") from None
    except ConfigError as exc:
        raise ConfigError(f"requirement {text!r}: {exc}") from None
    if not isinstance(result, Query):
        raise ConfigError(f"requirement {text!r} is not a query (it gives {type(result).__name__}); "
                          "compare a column with a value, e.g. 'gpu_ram >= 24'.")
    return result


def _evaluate(node: ast.AST) -> Any:
    """Evaluate the tiny allowed subset of Python; anything else is _Unsupported."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float, str)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _evaluate(node.operand)
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise _Unsupported("a sign applies only to numbers")
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.Name):
        return _lookup(node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_evaluate(item) for item in node.elts]
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1:
            tight = any(isinstance(c, ast.BinOp) and isinstance(c.op, ast.BitAnd) for c in node.comparators)
            what = "'&' binds tighter than comparisons" if tight else "a chained comparison keeps only one bound"
            raise ConfigError(f"{what}: {_PARENS_HINT}")
        compare = _COMPARE_OPS.get(type(node.ops[0]))
        if compare is None:
            raise _Unsupported("only ==, !=, <, <=, >, >= compare; for lists use .in_([...])")
        return compare(_evaluate(node.left), _evaluate(node.comparators[0]))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
        return operator.and_(_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.Call):
        return _evaluate_call(node)
    raise _Unsupported(f"{type(node).__name__} is not allowed")


def _evaluate_call(node: ast.Call) -> Query:
    func = node.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("in_", "notin_")) or node.keywords or len(node.args) != 1:
        raise _Unsupported("the only calls allowed are column.in_([...]) and column.notin_([...])")
    column = _evaluate(func.value)
    if not isinstance(column, Column):
        raise _Unsupported(f"{func.attr} applies to a column")
    return getattr(column, func.attr)(_evaluate(node.args[0]))


def _lookup(name: str) -> Any:
    if name in COLUMNS:
        return COLUMNS[name]
    if name in GPU_CONSTANTS:
        return GPU_CONSTANTS[name]
    raise _unknown_name(name)
