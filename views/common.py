"""What every page shares: the cached store and loaders, the run picker, the step scrubber, error guards.

The selected run and step live in `st.session_state` ("run", "step") and in the URL query parameters
(`?run=<id>&step=<n>`), so a refreshed or shared link opens the same run at the same step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os

import numpy as np
import pandas as pd
import streamlit as st

from vaeviz import app_state, plots, worker
from vaeviz.analysis import bounds, reconstruct, tiling
from vaeviz.app_state import plain, short
from vaeviz.build import load_run
from vaeviz.config import DataConfig
from vaeviz.data import data_dir, load_dataset
from vaeviz.runs import RunStore

log = logging.getLogger("vaeviz.app")

STATUS_COLORS = {"queued": "gray", "running": "blue", "done": "green", "failed": "red", "diverged": "orange",
                 "cancelled": "gray", "interrupted": "violet"}
POLL_SECONDS = 1.0


# -- store and cached loaders ------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _store(home: str) -> RunStore:
    return RunStore(home or None)


def store() -> RunStore:
    """The run store of $VAEVIZ_HOME (one per home, shared by all sessions)."""
    return _store(os.environ.get("VAEVIZ_HOME", ""))


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def _model(home: str, run_id: str, step: int):
    s = _store(home)
    return load_run(s.get(run_id).config, s.artifact_dir(run_id), step, device="cpu")[0]


def model(run_id: str, step: int | None):
    """(Setup, step) of the run's weights at or before `step`; (None, None) while it has no checkpoint yet."""
    chosen = app_state.checkpoint_for(store(), run_id, step)
    if chosen is None:
        return None, None
    return _model(os.environ.get("VAEVIZ_HOME", ""), run_id, chosen), chosen


@st.cache_data(show_spinner=False, max_entries=64)
def _snapshot(home: str, run_id: str, step: int) -> dict:
    return _store(home).load_snapshot(run_id, step)


def snapshot(run_id: str, step: int) -> dict:
    return _snapshot(os.environ.get("VAEVIZ_HOME", ""), run_id, step)


@st.cache_data(show_spinner="Encoding the training split…", max_entries=32)
def _train_split(home: str, run_id: str, step: int) -> dict:
    setup = _model(home, run_id, step)
    out = tiling.split_posteriors(setup.model, setup.data.x_train)
    if setup.data.y_train is not None:
        out["labels"] = np.asarray(setup.data.y_train)
    return out


def train_split(run_id: str, step: int | None):
    """(arrays, step): every training example's q(z|x) and decoded g(μ) (`vaeviz.analysis.tiling.split_posteriors`)
    with the weights at or before `step`, for a small training split; (None, None) while there is no checkpoint."""
    chosen = app_state.checkpoint_for(store(), run_id, step)
    if chosen is None:
        return None, None
    return _train_split(os.environ.get("VAEVIZ_HOME", ""), run_id, chosen), chosen


@st.cache_resource(show_spinner="Loading the data…", max_entries=4)
def _dataset(data_json: str):
    return load_dataset(DataConfig(**json.loads(data_json)))


def dataset(rec):
    """The run's dataset (train/eval split, labels, class names), loaded once per data config."""
    return _dataset(json.dumps(dataclasses.asdict(rec.config.data), sort_keys=True))


def class_names(rec) -> list[str] | None:
    return dataset(rec).class_names


def data_shape(rec) -> tuple[int, ...]:
    return dataset(rec).shape


def metrics(run_id: str, split: str | None = None, names=None):
    """Rows (step, split, name, value), read fresh: the worker may be writing."""
    return store().metrics(run_id, split=split, names=names)


def live_metrics(run_id: str, split: str = "train", max_steps: int = 2000):
    """The run's metric rows for a live chart: only rows newer than the last poll are read (the rest are kept in
    the session), and at most `max_steps` evenly spaced steps are returned."""
    key = f"_live_{run_id}_{split}"
    cached = st.session_state.get(key)
    last = int(cached.step.max()) if cached is not None and len(cached) else None
    if last is not None and (store().last_step(run_id) or 0) < last:  # resumed from an earlier checkpoint
        cached, last = None, None
    new = store().metrics(run_id, split=split, since_step=last)
    df = new if cached is None else pd.concat([cached, new], ignore_index=True)
    st.session_state[key] = df
    stride = -(-df.step.nunique() // max_steps)  # ceil
    return df if stride <= 1 else df[(df.step % stride == 0) | (df.step == df.step.max())]


# -- errors ------------------------------------------------------------------------------------


def hide_paths(text: str, names: dict[str, str] | None = None) -> str:
    """`text` without this server's folders: each path of `names` becomes its name (an upload's file name), then
    the run store and the data folder become $VAEVIZ_HOME and $VAEVIZ_DATA_DIR."""
    pairs = {str(store().home): "$VAEVIZ_HOME", str(data_dir()): "$VAEVIZ_DATA_DIR", **(names or {})}
    for path in sorted(pairs, key=len, reverse=True):
        text = text.replace(path, pairs[path])
    return text


def show_error(exc: Exception, names: dict[str, str] | None = None) -> None:
    """The message as text without server paths (`hide_paths`), never the traceback (which goes to the server log)."""
    log.warning("page error", exc_info=exc)
    st.error(plain(hide_paths(str(exc) or type(exc).__name__, names)), icon=":material/error:")


def guarded(func):
    """For fragments, which rerun without the page around them: turn exceptions into `st.error`."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a page shows every error as a message
            show_error(exc)

    return wrapper


# -- run picker and status ---------------------------------------------------------------------


def select_run(run_id: str) -> None:
    """Make `run_id` the selected run from anywhere in a page (applied at the next rerun)."""
    st.session_state["_pending_run"] = run_id
    st.session_state["step"] = None
    st.rerun()


def _label(rec) -> str:
    return f"{rec.name} · {rec.id}"


def sidebar():
    """The shared sidebar: a slot for the queue badge (`queue_badge`, drawn after the page) and the run picker.
    Called by app.py before the page runs; returns the badge's slot."""
    s = store()
    s.mark_dead_interrupted()
    if s.count("queued") or s.reclaimable():  # a crashed run is taken back by a new worker
        worker.ensure_worker(s)
    runs = s.list_runs()
    by_id = {r.id: r for r in runs}
    state = st.session_state
    if "_pending_run" in state:
        state["run"] = state.pop("_pending_run")
    _from_url(list(by_id))
    with st.sidebar:
        slot = st.empty()
        if not runs:
            st.caption("No runs yet.")
            return slot
        st.selectbox("Run", list(by_id), key="run", format_func=lambda i: _label(by_id[i]), on_change=_run_changed)
        rec = by_id[state["run"]]
        st.badge(rec.status, color=STATUS_COLORS.get(rec.status, "gray"))
        st.caption(plain(f"{rec.objective} · {rec.dataset} · latent {rec.config.model.latent_dim}"))
    _sync_query_params()
    return slot


BADGE_SECONDS = 2.0


@guarded
def queue_badge(slot) -> None:
    """The sidebar's queue badge, drawn after the page so that it counts the runs the page just launched, and
    redrawn every BADGE_SECONDS while runs are queued or running (never polled while the queue is idle)."""
    s = store()
    at_render = (s.count("running"), s.count("queued"))

    @st.fragment(run_every=BADGE_SECONDS if any(at_render) else None)
    @guarded
    def badge():
        counts = (s.count("running"), s.count("queued"))
        if any(at_render) and not any(counts):
            st.rerun()  # the queue went idle: redraw the page (and stop polling)
        if any(counts):
            st.badge(f"{counts[0]} running · {counts[1]} queued", icon=":material/hourglass_top:", color="blue")
        else:
            st.badge("idle", icon=":material/bedtime:", color="gray")

    with slot.container():
        badge()


def _from_url(ids: list[str]) -> None:
    """The run and step of the link (`?run=<id>&step=<n>`) when the session has none; a run id that names no run
    falls back to the newest run, a step that is no step number to the latest step, each with a notice."""
    state = st.session_state
    if state.get("run") not in ids:
        wanted = st.query_params.get("run")
        if wanted and wanted not in ids and wanted != state.get("run"):  # (not a run just deleted here)
            then = ": showing the newest run." if ids else "."
            st.toast(f"No run {plain(short(wanted))} here{then}", icon=":material/info:")
        state["run"] = wanted if wanted in ids else (ids[0] if ids else None)
    if "step" not in state:
        raw = st.query_params.get("step", "")
        state["step"] = app_state.parse_step(raw)
        if raw and state["step"] is None:
            st.toast(f"Step {plain(short(raw))} is not a step number: showing the latest step.",
                     icon=":material/info:")


def _run_changed() -> None:
    st.session_state["step"] = None


def _sync_query_params() -> None:
    want = {"run": st.session_state.get("run"), "step": st.session_state.get("step")}
    for key, value in want.items():
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != str(value):
            st.query_params[key] = str(value)


def current_run():
    """The selected run's record, or stop the page with a hint when there are no runs."""
    run_id = st.session_state.get("run")
    if run_id is None:
        st.info("No runs yet: launch one on the **Train** page (or `vaeviz train --preset vae-digits`).")
        st.page_link("views/train.py", label="Go to Train", icon=":material/rocket_launch:")
        st.stop()
    return store().get(run_id)


def is_active(rec) -> bool:
    return rec.status in app_state.ACTIVE


def run_error(rec) -> None:
    """A failed, diverged or interrupted run's message."""
    if rec.status in ("failed", "diverged") and rec.error:
        st.error(f"Run {rec.status}: {plain(hide_paths(rec.error))}", icon=":material/report:")
    elif rec.status == "interrupted":
        why = plain(hide_paths(rec.error)) if rec.error else "its worker stopped"
        st.warning(f"Run interrupted: {why}. Resume it on the **Runs** page.")


# -- step scrubber -----------------------------------------------------------------------------


def step_scrubber(steps: list[int], key: str, label: str = "Step") -> int | None:
    """A slider over `steps` that follows the shared step (and the latest step until one is picked)."""
    if not steps:
        return None
    value = app_state.nearest(steps, st.session_state.get("step"))
    if len(steps) == 1:
        st.caption(f"{label}: {steps[0]} (the only one so far)")
        return steps[0]
    wkey = f"scrub_{key}"
    if st.session_state.get(wkey) != value:
        st.session_state[wkey] = value
    return st.select_slider(label, options=steps, key=wkey, on_change=_step_changed, args=(wkey, steps[-1]))


def snapshot_step(run_id: str, key: str) -> int:
    """The scrubbed step among a run's posterior snapshots; stops the page with a note while there are none."""
    steps = store().snapshot_steps(run_id)
    if not steps:
        st.info("No snapshot yet: the probe set is encoded at step 0 and every `train.eval_every` steps.")
        st.stop()
    return step_scrubber(steps, key)


def _step_changed(wkey: str, last: int) -> None:
    picked = st.session_state[wkey]
    st.session_state["step"] = None if picked == last else picked  # the last step: keep following new ones
    _sync_query_params()


def teach(text: str, equation: str) -> None:
    """The page's equation, and its teaching note in an expander."""
    st.latex(equation)
    with st.expander("What am I looking at?"):
        st.markdown(text)


# -- reconstructions ---------------------------------------------------------------------------

RECON_IMAGES, RECON_POINTS, PRIOR_POINTS, CLOUD_POINTS = 16, 40, 300, 2000  # what the reconstruction panel draws


@st.cache_data(show_spinner="Reconstructing held-out examples…", max_entries=32)
def _reconstructions(home: str, run_id: str, step: int) -> dict:
    """Held-out reconstructions of the run at checkpoint `step` (`vaeviz.analysis.reconstruct`): for images, a
    grid's worth with one posterior sample each; for vectors, more points, the eval cloud and decoded prior samples."""
    setup = _model(home, run_id, step)
    data = setup.data
    if data.is_image:
        rec = reconstruct.eval_reconstructions(setup.model, data, RECON_IMAGES, sample=True)
        return {"inputs": rec.inputs, "means": rec.means, "samples": rec.samples, "shape": rec.shape}
    rec = reconstruct.eval_reconstructions(setup.model, data, RECON_POINTS, sample=False)
    cloud = np.asarray(data.x_eval[:CLOUD_POINTS]).reshape(-1, data.dim)
    return {"inputs": rec.inputs, "means": rec.means, "cloud": cloud, "shape": rec.shape,
            "prior": reconstruct.decoded_prior(setup.model, PRIOR_POINTS)}


def reconstruction_panel(rec, step: int | None, key: str) -> None:
    """Held-out inputs beside their reconstructions with the run's weights at or before `step` (the latest with
    None): a grid of images (input, g(μ(x)), one posterior sample's g(z)) or, for vector data, the data space."""
    chosen = app_state.checkpoint_for(store(), rec.id, step)
    if chosen is None:
        st.info("No checkpoint yet: reconstructions appear once the run has saved its first weights.")
        return
    out = _reconstructions(os.environ.get("VAEVIZ_HOME", ""), rec.id, chosen)
    nearest = "" if step in (None, chosen) else f", the checkpoint nearest step {step}"
    where = f"the weights of step {chosen}{nearest}"
    if len(out["shape"]) == 3:
        rows = {"g(μ(x))": out["means"]} | ({} if out["samples"] is None else {"g(z), z ~ q(z|x)": out["samples"]})
        st.plotly_chart(plots.reconstruction_grid(out["inputs"], rows, out["shape"]), key=key)
        sample = "" if out["samples"] is None else " and the decoded mean g(z) of one posterior sample z ~ q(z|x)"
        st.caption(plain(f"{len(out['inputs'])} held-out examples (eval split), each above its reconstruction "
                         f"g(μ(x)), the decoder's mean at the posterior mean{sample}; {where}."))
        return
    st.plotly_chart(plots.data_space(out["cloud"], out["means"], out["prior"], out["inputs"],
                                     title="Reconstructions in data space"), key=key)
    st.caption(plain(f"{len(out['cloud'])} held-out points (eval split); {len(out['inputs'])} of them joined to "
                     f"their reconstruction g(μ(x)), and {len(out['prior'])} decoded prior samples g(z), z ~ N(0, I); "
                     f"{where}."))


def bound_notice(rec, terms: tuple[str, ...], what: str) -> None:
    """A warning, when the run reached a bound of its objective on one of the logged `terms` (`Objective.bounds`,
    `vaeviz.analysis.bounds`): `what` happened ("λ reached its clamp"), each bound with its first step, and what
    sitting there does to the run."""
    df = metrics(rec.id, split="train", names=list(terms))
    hits = [h for h in bounds.touched_bounds(rec.config, df) if h.bound.term in terms]
    if hits:
        where = "; ".join(f"{h.bound.label} = {h.value:g} at step {h.step}" for h in hits)
        notes = " ".join(dict.fromkeys(h.bound.note for h in hits))
        st.warning(plain(f"{what} during the run ({where}). {notes}"))
