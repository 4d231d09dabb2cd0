"""HTML pictures of a deploy, a deployment's status and a deploy report (pure string building).

The widgets put these strings in ``ipywidgets.HTML``; ``DeployReport`` and
``DeploymentStatus`` use them as their ``_repr_html_``. Colours are
JupyterLab's CSS variables (``--jp-...``, with the light theme's values as
fallbacks for other frontends), so the pictures follow the light and the
dark theme. Styles are inline: JupyterLab keeps them where it would drop a
``<style>`` block. Every element a test or a reader looks for carries a
``vm-`` class and ``data-`` attributes (step, state, worker, score, load).
All text is escaped: reasons, errors and worker ids come from user code.
"""
from __future__ import annotations

import html
from typing import Iterable, Mapping

from ..events import DeployState, WorkerRow, deployment_lines, format_worker, last_line, status_lines
from ..reports import CallStats, DeploymentStatus, DeployReport, WorkerInfo
from .figures import format_number, format_rate, format_seconds, format_share
from .steps import Step

__all__ = ["COLORS", "PHASE_COLORS", "STEP_COLORS", "STEP_ICONS", "WORKER_COLORS", "WORKER_LABELS", "TIER_MEANINGS",
           "deploy_card", "status_card", "status_color", "report_card", "logs_block", "worker_rows", "tier_table"]

COLORS = {
    "text": "var(--jp-ui-font-color1, rgba(0, 0, 0, 0.87))",
    "muted": "var(--jp-ui-font-color2, rgba(0, 0, 0, 0.54))",
    "faint": "var(--jp-ui-font-color3, rgba(0, 0, 0, 0.38))",
    "border": "var(--jp-border-color2, #e0e0e0)",
    "track": "var(--jp-layout-color3, #bdbdbd)",
    "brand": "var(--jp-brand-color1, #1976d2)",
    "success": "var(--jp-success-color1, #388e3c)",
    "error": "var(--jp-error-color1, #d32f2f)",
    "warn": "var(--jp-warn-color1, #f57c00)",
}
#: one per value of ``DeployState.phase`` (``events.PHASES``)
PHASE_COLORS = {"packaging": COLORS["brand"], "deploying": COLORS["brand"], "ready": COLORS["success"],
                "dry run": COLORS["muted"], "failed": COLORS["error"]}
#: one per step state (``steps.STEP_STATES``)
STEP_COLORS = {"pending": COLORS["faint"], "running": COLORS["brand"], "done": COLORS["success"],
               "failed": COLORS["error"], "skipped": COLORS["muted"]}
STEP_ICONS = {"pending": "○", "running": "◐", "done": "✓", "failed": "✗", "skipped": "–"}
WORKER_COLORS = {"starting": COLORS["brand"], "installing": COLORS["brand"], "contexts": COLORS["brand"],
                 "benchmarking": COLORS["brand"], "ready": COLORS["success"], "failed": COLORS["error"],
                 "stopped": COLORS["faint"]}
WORKER_LABELS = {"contexts": "entering contexts"}
TIER_MEANINGS = {0: "nothing to do", 1: "autoscaling only", 2: "rolling code update", 3: "replace every worker",
                 4: "new endpoint"}

_FONT = ("font-family:var(--jp-ui-font-family, system-ui, sans-serif);font-size:var(--jp-ui-font-size1, 13px);"
         f"color:{COLORS['text']};line-height:1.45")
_MONO = "font-family:var(--jp-code-font-family, monospace);font-size:var(--jp-code-font-size, 12px)"
_NUMBERS = "font-variant-numeric:tabular-nums;white-space:nowrap"
_COLUMNS = "minmax(8em, 17em) 8em 8em 9.5em"           # worker, state, score bar, figure (then the load text)
_STATUS_COLUMNS = _COLUMNS + " 6em"                     # ... and a load bar


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _attrs(**data: object) -> str:
    return "".join(f' data-{key.replace("_", "-")}="{_e(value)}"' for key, value in data.items() if value is not None)


def _card(kind: str, color: str, body: str, **data: object) -> str:
    return (f'<div class="vm-card vm-{kind}"{_attrs(**data)} style="{_FONT};border-left:3px solid {color};'
            f'padding:4px 10px;margin:2px 0">{body}</div>')


def _line(text: str, cls: str, color: str | None = None, extra: str = "") -> str:
    style = (f"color:{color};" if color else "") + (f"{extra};" if extra else "")
    return f'<div class="{cls}" style="{style}white-space:pre-wrap">{_e(text)}</div>'


def _badge(state: str, color: str, label: str | None = None) -> str:
    return (f'<span class="vm-badge"{_attrs(state=state)} style="justify-self:start;color:{color};'
            f'border:1px solid {color};border-radius:9px;padding:0 7px;font-size:var(--jp-ui-font-size0, 11px);'
            f'line-height:1.5;white-space:nowrap">{_e(label or state)}</span>')


def _bar(kind: str, fraction: float | None, color: str, title: str) -> str:
    """A track with a fill of ``fraction`` (clipped to 0-1); an empty track when unknown."""
    width = 0.0 if fraction is None else max(0.0, min(1.0, fraction))
    return (f'<span class="vm-bar vm-{kind}"{_attrs(**{kind: None if fraction is None else f"{fraction:.4f}"})} '
            f'title="{_e(title)}" style="display:inline-block;width:100%;height:0.65em;background:{COLORS["track"]};'
            f'border-radius:3px;overflow:hidden;vertical-align:middle"><span style="display:block;height:100%;'
            f'width:{width * 100:.1f}%;background:{color}"></span></span>')


def _error_block(text: str) -> str:
    return (f'<pre class="vm-error" style="color:{COLORS["error"]};{_MONO};white-space:pre-wrap;margin:2px 0;'
            f'max-height:16em;overflow:auto">{_e(text)}</pre>')


# -- pieces shared by the pictures ---------------------------------------------------------------
def tier_table(reasons: tuple[str, ...], tiers: tuple[int | None, ...], tier: int) -> str:
    """What changed -> the tier it implies; the changes that set the tier in bold."""
    if not reasons:
        return ""          # the step's own line already says "no changes"
    head = (f'<tr><th style="text-align:left;font-weight:600;padding:0 12px 0 0;color:{COLORS["muted"]}">what changed'
            f'</th><th style="text-align:left;font-weight:600;color:{COLORS["muted"]}">tier it implies</th></tr>')
    rows = []
    for index, reason in enumerate(reasons):
        implied = tiers[index] if index < len(tiers) else None
        weight = "font-weight:600;" if implied == tier else ""
        meaning = f"{implied} · {TIER_MEANINGS.get(implied, '')}" if implied is not None else "–"
        rows.append(f'<tr class="vm-tier-row"{_attrs(tier=implied)} style="{weight}"><td style="padding:0 12px 0 0">'
                    f'{_e(reason)}</td><td style="{_NUMBERS}">{_e(meaning)}</td></tr>')
    return (f'<table class="vm-tiers" style="border-collapse:collapse;margin:1px 0 3px 0;font-size:inherit;'
            f'color:inherit;background:transparent">{head}{"".join(rows)}</table>')


def _as_row(worker: WorkerRow | WorkerInfo) -> WorkerRow:
    if isinstance(worker, WorkerRow):
        return worker
    return WorkerRow(worker.id, worker.state, perf=worker.perf, error=worker.error, detail=worker.detail,
                     load=worker.load, reliability=worker.reliability)


def _load_text(row: WorkerRow, busy: float | None) -> str:
    """What else is known: the load, the host's reliability, the backend's own status word (Vast's)."""
    parts = [] if row.load is None else ["idle" if not row.load else
                                         f"load {format_share(busy)}" if busy is not None else f"load {row.load:g}"]
    if row.reliability is not None:
        parts.append(f"reliability {format_share(row.reliability)}")
    if row.detail and row.detail.lower() != row.state:
        parts.append(f"vast: {row.detail}")
    return " · ".join(parts)


def _worker_row(row: WorkerRow, best: float | None, workload_per_call: float | None, load_bar: bool) -> str:
    color = WORKER_COLORS.get(row.state, COLORS["muted"])
    score = row.perf / best if row.perf is not None and best else None
    figure = format_rate(row.perf, workload_per_call) if row.perf is not None else ""
    busy = row.load / row.perf if row.load is not None and row.perf else None
    load_text = _load_text(row, busy)
    cells = [f'<span class="vm-worker-id" title="{_e(row.worker)}" style="{_MONO};overflow:hidden;'
             f'text-overflow:ellipsis;white-space:nowrap">{_e(row.worker)}</span>',
             _badge(row.state, color, WORKER_LABELS.get(row.state)),
             _bar("score", score, COLORS["brand"], f"benchmark score next to the best worker's: {figure or 'none'}"),
             f'<span class="vm-figure" style="{_NUMBERS}">{_e(figure)}</span>']
    if load_bar:
        cells.append(_bar("load", busy, COLORS["warn"], f"load: {load_text or 'unknown'}"))
    cells.append(f'<span class="vm-load" style="color:{COLORS["muted"]};{_NUMBERS}">{_e(load_text)}</span>')
    html_row = (f'<div class="vm-worker"{_attrs(worker=row.worker, state=row.state)} title="{_e(format_worker(row))}" '
                f'style="display:grid;grid-template-columns:{_STATUS_COLUMNS if load_bar else _COLUMNS} auto;'
                f'column-gap:8px;align-items:center">{"".join(cells)}</div>')
    if row.state == "failed" and row.error and row.error.strip():
        html_row += _line(f"error: {last_line(row.error)}", "vm-worker-error", COLORS["error"])
    return html_row


def _worker_header() -> str:
    labels = ["worker", "state", "score", "", "load", ""]
    cells = "".join(f"<span>{label}</span>" for label in labels)
    return (f'<div class="vm-worker-header" style="display:grid;grid-template-columns:{_STATUS_COLUMNS} auto;'
            f'column-gap:8px;color:{COLORS["faint"]};font-size:var(--jp-ui-font-size0, 11px)">{cells}</div>')


def worker_rows(rows: Iterable[WorkerRow | WorkerInfo], workload_per_call: float | None = None,
                load_bar: bool = False) -> str:
    """One row per worker: id, state badge, score bar (relative to the best worker), calls/s, load."""
    rows = list(rows)
    perfs = [row.perf for row in rows if row.perf is not None]
    best = max(perfs) if perfs else None
    out = [_worker_header()] if load_bar and rows else []
    out += [_worker_row(_as_row(row), best, workload_per_call, load_bar) for row in rows]
    return f'<div class="vm-workers" style="margin:1px 0 3px 0">{"".join(out)}</div>' if out else ""


def logs_block(lines: tuple[str, ...]) -> str:
    return (f'<pre class="vm-logs" style="{_MONO};color:{COLORS["muted"]};max-height:14em;overflow:auto;margin:2px 0">'
            f'{_e(chr(10).join(lines))}</pre>') if lines else ""


# -- the deploy ------------------------------------------------------------------------------------------
def _step_details(step: Step, state: DeployState) -> str:
    parts = []
    if step.key == "tier" and state.tier is not None:
        parts.append(tier_table(state.reasons, state.tiers, state.tier))
    if step.key == "workers":
        parts.append(worker_rows(state.workers, state.workload_per_call))
    for line in step.lines:
        if line.part == "error":
            parts.append(_error_block(line.text))
        else:
            parts.append(_line(line.text, f"vm-{line.part}", COLORS["warn"]))
    if step.state == "failed" and state.error_traceback:
        parts.append(_error_block(state.error_traceback.rstrip()))
    return "".join(parts)


def _step(step: Step, state: DeployState, elapsed: float | None) -> str:
    color = STEP_COLORS[step.state]
    faded = step.state in ("pending", "skipped")
    timing = ""
    if elapsed is not None and step.state != "skipped" and (step.state == "running" or elapsed >= 0.01):
        timing = f"running {format_seconds(elapsed)}" if step.state == "running" else format_seconds(elapsed)
    head = (f'<span class="vm-step-icon" style="color:{color};font-weight:700">{STEP_ICONS[step.state]}</span>'
            f'<span class="vm-step-title" style="font-weight:600;color:{COLORS["faint"] if faded else COLORS["text"]}">'
            f'{_e(step.title)}</span>'
            f'<span class="vm-step-result" style="color:{color if step.state == "failed" else COLORS["muted"]};'
            f'overflow:hidden;text-overflow:ellipsis;white-space:nowrap" title="{_e(step.result)}">'
            f'{_e(step.result)}</span><span class="vm-step-time" style="color:{COLORS["muted"]};{_NUMBERS};'
            f'text-align:right">{_e(timing)}</span>')
    details = _step_details(step, state)
    details = f'<div class="vm-step-details" style="grid-column:2 / -1">{details}</div>' if details else ""
    return (f'<div class="vm-step"{_attrs(step=step.key, state=step.state)} style="display:grid;'
            f'grid-template-columns:1.3em 6.5em minmax(0, 1fr) auto;column-gap:8px;align-items:baseline">'
            f'{head}{details}</div>')


def deploy_card(state: DeployState, steps: tuple[Step, ...], elapsed: Mapping[str, float | None],
                total: float | None = None) -> str:
    """The deploy as a stepper: the header line, then each step with its result, time and details."""
    header = next(line.text for line in status_lines(state) if line.part == "header")
    took = f" · {format_seconds(total)}" if total is not None else ""
    title = (f'<div class="vm-title" style="font-weight:600">{_e(header)}'
             f'<span class="vm-total" style="font-weight:400;color:{COLORS["muted"]};{_NUMBERS}">{_e(took)}</span>'
             '</div>')
    body = "".join(_step(step, state, elapsed.get(step.key)) for step in steps)
    return _card("deploy", PHASE_COLORS[state.phase], title + f'<div class="vm-steps">{body}</div>', phase=state.phase)


# -- a deployment's status ------------------------------------------------------------------------------
def status_color(status: DeploymentStatus) -> str:
    if status.state == "failed" or any(worker.state == "failed" for worker in status.workers):
        return COLORS["error"]
    return {"ready": COLORS["success"], "stopped": COLORS["faint"]}.get(status.state, COLORS["brand"])


def _calls_line(calls: CallStats | None) -> str:
    if calls is None:
        return ""
    if not calls.calls:
        text = "no calls from this notebook in the last minute" if calls.total else "no calls from this notebook yet"
        return _line(text, "vm-calls", COLORS["muted"])
    failed = f", {calls.failed} failed" if calls.failed else ""
    latency = f" · p50 {format_seconds(calls.p50)} · p99 {format_seconds(calls.p99)}" if calls.p50 is not None else ""
    text = (f"{format_number(calls.rate)} calls/s{latency} · {calls.calls} calls in the last "
            f"{format_seconds(calls.window)}{failed} (counted in this notebook)")
    return (f'<div class="vm-calls"{_attrs(rate=f"{calls.rate:.6g}", p50=calls.p50, p99=calls.p99)} '
            f'style="{_NUMBERS};white-space:pre-wrap">{_e(text)}</div>')


def status_card(status: DeploymentStatus, note: str = "") -> str:
    """``%vast_status``: the status lines, the call rate and latency, each worker's score and load as bars."""
    lines = deployment_lines(status)
    header = next(line.text for line in lines if line.part == "header")
    body = [_line(header, "vm-title", extra="font-weight:600")]
    body += [_line(line.text, "vm-body", COLORS["muted"]) for line in lines if line.part == "body"]
    body.append(_calls_line(status.calls))
    body.append(worker_rows(status.workers, status.workload_per_call, load_bar=True))
    if note:
        body.append(_line(note, "vm-note", COLORS["faint"]))
    return _card("status", status_color(status), "".join(body), state=status.state)


# -- a deploy report -----------------------------------------------------------------------------------
def report_card(report: DeployReport) -> str:
    """A ``DeployReport``: tier and reasons, bundle, endpoint, benchmark and workers; a dry run says so."""
    action = f" (backend: {report.backend_action})" if report.backend_action else ""
    state = "dry run" if report.dry_run else "ready"
    body = [_line(f"DeployReport: tier {report.tier}{action}", "vm-title", extra="font-weight:600")]
    if report.dry_run:
        body.append(_line("dry run: nothing was applied, no worker was started", "vm-dry-run", COLORS["muted"]))
    reasons = report.reasons or ("no changes",)
    body += [_line(f"• {reason}", "vm-reason") for reason in reasons]
    facts = [f"bundle: {report.files} files, {report.bundle_size:,} bytes"]
    if report.endpoint:
        facts.append(f"endpoint: {report.endpoint}")
    if report.benchmark is not None:
        facts.append(f"benchmark: best {format_rate(report.benchmark, report.workload_per_call)} "
                     f"(perf {report.benchmark:,.1f}/s)")
    body += [_line(fact, "vm-body", COLORS["muted"]) for fact in facts]
    body.append(worker_rows(report.workers, report.workload_per_call))
    return _card("report", PHASE_COLORS[state], "".join(body), state=state)
