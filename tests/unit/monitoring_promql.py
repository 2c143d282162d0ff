"""A small PromQL reader for test_monitoring_config.py: enough to find every metric, label and function.

It does not evaluate anything. It reads an expression into tokens, checks that brackets balance, that every
function or aggregation is a PromQL one, and lists each selector (metric name and label matchers) and each
grouping label (`by (...)`, `on (...)`), so the test can hold them to the daemon's real registry. Where
promtool is on PATH the test also asks it; this reader is the check that always runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "minute",
        "month",
        "predict_linear",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "year",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
    }
)
AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
GROUPING = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    }
)
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    }
)
DURATION = re.compile(r"^\d+(ms|[smhdwy])$")
RANGE = re.compile(r"^(\d+(ms|[smhdwy]))(:(\d+(ms|[smhdwy]))?)?$")
TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<range>\[[^\]]*\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?![\w:]))
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w:]))
    | (?P<ident>[A-Za-z_:][\w:]*)
    | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=,(){}])
    )""",
    re.VERBOSE,
)
# Grafana's template variables, as Grafana substitutes them before Prometheus sees the query.
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


class PromQLError(ValueError):
    """The expression does not read as PromQL."""


@dataclass(frozen=True, slots=True)
class Selector:
    """One vector selector: a metric name and its label matchers (label, operator, value)."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]


@dataclass(slots=True)
class Reading:
    """What an expression uses: its selectors, the labels it groups or matches on, and its functions."""

    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs; a character that starts no token is an error."""
    out: list[tuple[str, str]] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            rest = expr[pos:].lstrip()
            raise PromQLError(f"unexpected {rest.split()[0]!r} at {len(expr) - len(rest)}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def substitute_grafana(expr: str) -> str:
    """The expression with Grafana's range variables replaced (`$job`-style ones belong only in strings)."""
    for name, value in GRAFANA_RANGES.items():
        expr = expr.replace(name, value)
    return expr


def read(expr: str) -> Reading:
    """Read one expression; raises PromQLError when it is not PromQL this reader understands."""
    toks = tokens(expr)
    reading = Reading()
    depth: list[str] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text in "({":
            depth.append(text)
        elif kind == "op" and text in ")}":
            if not depth or depth.pop() != {")": "(", "}": "{"}[text]:
                raise PromQLError(f"unbalanced {text!r}")
        elif kind == "range":
            if not RANGE.match(text[1:-1].strip()):
                raise PromQLError(f"bad range {text!r}")
        elif kind == "ident" and text in GROUPING:
            i = _grouping(toks, i + 1, reading)
            continue
        elif kind == "ident" and text in KEYWORDS:
            if text == "offset" and not (i + 1 < len(toks) and DURATION.match(toks[i + 1][1])):
                raise PromQLError("offset without a duration")
            i += 2 if text == "offset" else 1
            continue
        elif kind == "ident" and (nxt == "(" or (text in AGGREGATIONS and nxt in GROUPING)):
            if text not in FUNCTIONS | AGGREGATIONS:
                raise PromQLError(f"unknown function {text!r}")
            reading.functions.add(text)
        elif kind == "ident":
            i = _selector(toks, i, reading)
            continue
        elif kind == "string":
            raise PromQLError(f"a string outside a label matcher: {text}")
        i += 1
    if depth:
        raise PromQLError(f"unclosed {''.join(depth)!r}")
    return reading


def _grouping(toks: list[tuple[str, str]], i: int, reading: Reading) -> int:
    """Read `(label, ...)` after by/without/on/ignoring/group_*; group_left may have none."""
    if i >= len(toks) or toks[i][1] != "(":
        if toks[i - 1][1] in ("group_left", "group_right"):
            return i
        raise PromQLError(f"{toks[i - 1][1]} without a label list")
    i += 1
    while i < len(toks) and toks[i][1] != ")":
        kind, text = toks[i]
        if kind == "ident":
            reading.grouping_labels.add(text)
        elif text != ",":
            raise PromQLError(f"unexpected {text!r} in a label list")
        i += 1
    if i >= len(toks):
        raise PromQLError("unclosed label list")
    return i + 1


def _selector(toks: list[tuple[str, str]], i: int, reading: Reading) -> int:
    """Read `metric` or `metric{label op "value", ...}`; returns the index after it."""
    metric = toks[i][1]
    matchers: list[tuple[str, str, str]] = []
    i += 1
    if i < len(toks) and toks[i][1] == "{":
        i += 1
        while i < len(toks) and toks[i][1] != "}":
            if toks[i][1] == ",":
                i += 1
                continue
            if i + 2 >= len(toks) or toks[i][0] != "ident" or toks[i + 1][1] not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"bad label matcher after {metric}")
            if toks[i + 2][0] != "string":
                raise PromQLError(f"label {toks[i][1]} of {metric} is not matched against a string")
            matchers.append((toks[i][1], toks[i + 1][1], toks[i + 2][1][1:-1]))
            i += 3
        if i >= len(toks):
            raise PromQLError(f"unclosed matchers of {metric}")
        i += 1
    reading.selectors.append(Selector(metric, tuple(matchers)))
    return i
