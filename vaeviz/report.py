"""One self-contained HTML file for a run or a lesson (`vaeviz report RUN|LESSON --html FILE`).

The file holds plotly.js inline once and each figure as interactive plotly, the lesson's text, its checks'
verdicts and sentences, and the last metrics of every run, so a student opens it from a `file://` URL
with no Python and no network. Every user string (run names, errors) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import plotly.graph_objects as go

from vaeviz import plots
from vaeviz.lessons.lesson import Lesson, LessonRuns
from vaeviz.runs import RunRecord, RunStore

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em}.ok{color:#137333}.no{color:#b3261e}.wait{color:#666}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.caption{color:#555;font-size:.9em}"""
SHOWN = ("rate", "distortion", "elbo", "nll_sigma_free", "mse", "active_units")  # last eval metrics in the table


def _esc(text) -> str:
    return html.escape(str(text))


def _figure(fig: go.Figure, first: bool) -> str:
    """The figure as a <div>; plotly.js inline with the first figure only."""
    return fig.to_html(full_html=False, include_plotlyjs="inline" if first else False,
                       config={"displaylogo": False})


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else _esc(value)


def metrics_table(store: RunStore, records: dict[str, RunRecord | None]) -> str:
    """An HTML table of each run's status, step and last eval metrics (`SHOWN`)."""
    head = "".join(f"<th>{_esc(k)}</th>" for k in ("run", "status", "step", *SHOWN))
    rows = []
    for label, rec in records.items():
        if rec is None:
            rows.append(f"<tr><td>{_esc(label)}</td><td>not run</td>" + "<td>–</td>" * (1 + len(SHOWN)) + "</tr>")
            continue
        df = store.metrics(rec.id, split="eval", names=list(SHOWN))
        last = {n: float(g.value.iloc[-1]) for n, g in df.groupby("name")}
        cells = [_cell(last.get(k)) for k in SHOWN]
        rows.append(f"<tr><td>{_esc(label)}</td><td>{_esc(rec.status)}</td><td>{rec.step}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def lesson_html(lesson: Lesson, runs: LessonRuns) -> str:
    """The lesson's text, verdicts, figures (those that can be drawn) and metrics as one HTML page."""
    body = [f"<h1>{_esc(lesson.title)}</h1>", f"<p><b>{_esc(lesson.paper)}</b>, {_esc(lesson.figure)}.</p>",
            f"<p>{_esc(lesson.look_for)}</p>", "<h2>What the runs show</h2><ul>"]
    for check in lesson.checks:
        verdict = check.judge(runs)
        if verdict is None:
            body.append(f'<li class="wait">{_esc(check.claim)}: the runs are not finished.</li>')
        else:
            mark, cls = ("agrees with the paper", "ok") if verdict.holds else ("differs from the paper", "no")
            body.append(f'<li><span class="{cls}">{mark}</span>: {_esc(verdict.sentence)}'
                        f'<br><span class="caption">The paper: {_esc(check.claim)}</span></li>')
    body.append("</ul>")
    first = True
    for spec in lesson.figures:
        fig = spec.build(runs)
        if fig is None:
            continue
        body += [f"<h2>{_esc(spec.title)}</h2>", _figure(fig, first)]
        body += [f'<p class="caption">{_esc(spec.caption)}</p>'] if spec.caption else []
        first = False
    body += ["<h2>Runs</h2>", metrics_table(runs.store, runs.records)]
    return _page(lesson.title, body)


def _shareable(cfg) -> dict:
    """The config as a dict with a user file's folder left out (a shared report never names this machine's
    paths): `data.path` keeps its file name only."""
    d = cfg.to_dict()
    if d["data"].get("path"):
        d["data"]["path"] = Path(d["data"]["path"]).name
    return d


def run_html(store: RunStore, rec: RunRecord) -> str:
    """A run's config, information-plane path, training curves and last metrics as one HTML page."""
    body = [f"<h1>{_esc(rec.name)}</h1>",
            f"<p>{_esc(rec.objective)} on {_esc(rec.dataset)}, latent {rec.config.model.latent_dim}, "
            f"{_esc(rec.status)} at step {rec.step} of {rec.total_steps}.</p>"]
    path = store.metrics(rec.id, names=["rate", "distortion"])
    first = True
    if not path.empty:
        body += ["<h2>Information plane</h2>", _figure(plots.information_plane({rec.name: path}), first)]
        first = False
    train = store.metrics(rec.id, split="train", names=["loss", "rate", "distortion"])
    if not train.empty:
        body += ["<h2>Training curves</h2>",
                 _figure(plots.metric_lines(train, ["loss", "rate", "distortion"]), first)]
    body += ["<h2>Last metrics</h2>", metrics_table(store, {rec.name: rec}),
             "<h2>Config</h2>", f"<pre>{_esc(json.dumps(_shareable(rec.config), indent=2, sort_keys=True))}</pre>"]
    return _page(rec.name, body)
