"""One page renders any lesson (`vaeviz.lessons`): its paper and what to look for, one button that queues its
runs (reusing finished ones), their progress, its figures and its checks' sentences filling in while they train,
"try this" variations, and a self-contained HTML report to download."""

from __future__ import annotations

import os

import streamlit as st

from vaeviz import app_state, report, worker
from vaeviz.lessons import LESSONS
from vaeviz.lessons.runner import ACTIVE, launch, lesson_runs
from views import common

POLL_SECONDS = 2.0


def page(name: str):
    """The page callable of lesson `name` for `st.Page` (which takes a function without arguments)."""

    def show() -> None:
        render(name)

    show.__name__ = f"lesson_{name.replace('-', '_')}"
    return show


def _signature(runs) -> tuple:
    """What the figures and checks depend on: each run's id, status and step."""
    return tuple((role, None if r is None else (r.id, r.status, r.step)) for role, r in runs.records.items())


@st.cache_data(show_spinner="Drawing the lesson's figures…", max_entries=16)
def _view(home: str, name: str, full: bool, variation: str | None, signature: tuple):
    """(figures, verdicts) of a lesson for one state of its runs (`signature` keys the cache)."""
    lesson = LESSONS[name]
    runs = lesson_runs(common.store(), lesson, full, _variation(lesson, variation))
    figures = [(spec, spec.build(runs)) for spec in lesson.figures]
    verdicts = [(check, check.judge(runs)) for check in lesson.checks]
    return [(s.title, s.caption, f) for s, f in figures], [(c.claim, v) for c, v in verdicts]


def _variation(lesson, label: str | None):
    return next((v for v in lesson.variations if v.label == label), None)


def _progress(runs) -> None:
    """One line once every run has ended; a progress bar per run while any is on its way."""
    ended = [r for r in runs.records.values() if r is not None and r.status not in ACTIVE]
    if len(ended) == len(runs.records):
        st.caption(common.plain(" · ".join(f"{role}: {r.status}" for role, r in runs.records.items())))
        return
    for role, rec in runs.records.items():
        if rec is None:
            st.caption(common.plain(f"{role}: not run yet"))
            continue
        p = app_state.progress(rec)
        st.progress(min(1.0, p.fraction), text=common.plain(f"{role}: {rec.status}, {p.text}"))


def _verdicts(verdicts) -> None:
    for claim, verdict in verdicts:
        if verdict is None:
            st.markdown(f":gray[**waiting** — {common.plain(claim)}]")
        elif verdict.holds:
            st.success(common.plain(f"Agrees with the paper: {verdict.sentence}"), icon=":material/check_circle:")
        else:
            st.warning(common.plain(f"Differs from the paper: {verdict.sentence}"), icon=":material/error:")


def _live(name: str, full: bool, variation: str | None) -> None:
    """Progress, checks and figures; redrawn every POLL_SECONDS while any of the lesson's runs trains."""
    lesson = LESSONS[name]
    runs = lesson_runs(common.store(), lesson, full, _variation(lesson, variation))
    active = any(r is not None and r.status in ACTIVE for r in runs.records.values())

    @st.fragment(run_every=POLL_SECONDS if active else None)
    @common.guarded
    def body():
        now = lesson_runs(common.store(), lesson, full, _variation(lesson, variation))
        if active and not any(r is not None and r.status in ACTIVE for r in now.records.values()):
            st.rerun()  # every run ended: redraw once, without polling
        _progress(now)
        figures, verdicts = _view(os.environ.get("VAEVIZ_HOME", ""), name, full, variation, _signature(now))
        st.subheader("What the runs show")
        _verdicts(verdicts)
        for i, (title, caption, fig) in enumerate(figures):
            st.subheader(title)
            if fig is None:
                st.caption("Appears once the runs have logged enough.")
                continue
            st.plotly_chart(fig, key=f"lesson_fig_{i}")
            if caption:
                st.caption(caption)

    body()


def render(name: str) -> None:
    lesson = LESSONS[name]
    st.title(lesson.title)
    st.markdown(f"**{common.plain(lesson.paper)}**, {common.plain(lesson.figure)}.")
    st.info(common.plain(lesson.look_for), icon=":material/visibility:")
    key = f"lesson_{name}"
    full = st.toggle("Full size (the paper's settings: slower)", key=f"{key}_full")
    labels = [None] + [v.label for v in lesson.variations]
    variation = st.session_state.get(f"{key}_variation")
    c1, *cols = st.columns(1 + len(lesson.variations))
    if c1.button("Run this lesson", icon=":material/play_arrow:", type="primary", key=f"{key}_run"):
        _launch(lesson, full, None, key)
        variation = None
    for col, label in zip(cols, labels[1:]):
        if col.button(f"Try: {label}", key=f"{key}_try_{label}"):
            _launch(lesson, full, _variation(lesson, label), key)
            variation = label
    if variation:
        st.caption(common.plain(f"Showing the variation: {variation}."))
    _live(name, full, variation)
    st.download_button("Download this lesson as one HTML file", key=f"{key}_report", mime="text/html",
                       file_name=f"{name}.html", icon=":material/download:",
                       data=lambda: report.lesson_html(lesson, lesson_runs(common.store(), lesson, full,
                                                                            _variation(lesson, variation))))


def _launch(lesson, full: bool, variation, key: str) -> None:
    s = common.store()
    try:
        ids = launch(s, lesson, full, variation)
    except Exception as exc:  # noqa: BLE001 - ConfigError and DataError shown as their message
        common.show_error(exc)
        return
    st.session_state[f"{key}_variation"] = None if variation is None else variation.label
    if ids:
        worker.ensure_worker(s)
    total = len(lesson.runs_for(full, variation))
    st.toast(f"Queued {len(ids)} runs, reusing {total - len(ids)} finished or running ones")
