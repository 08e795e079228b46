"""Runs: every run with its status; filter, open, cancel, resume, export its metrics, delete it."""

from datetime import datetime

import pandas as pd
import streamlit as st

from vaeviz import app_state, report, worker
from vaeviz.runs import RESUMABLE, STATUSES
from views import common

st.title("Runs")
s = common.store()
runs = s.list_runs()
if not runs:
    st.info("No runs yet: launch one on the **Train** page.")
    st.stop()

c1, c2, c3 = st.columns(3)
statuses = c1.multiselect("Status", STATUSES, key="f_status")
objectives = c2.multiselect("Objective", sorted({r.objective for r in runs}), key="f_objective")
datasets = c3.multiselect("Dataset", sorted({r.dataset for r in runs}), key="f_dataset")
shown = [r for r in runs if (not statuses or r.status in statuses) and (not objectives or r.objective in objectives)
         and (not datasets or r.dataset in datasets)]

table = pd.DataFrame([{
    "id": r.id, "name": r.name, "status": r.status, "objective": r.objective, "dataset": r.dataset,
    "latent": r.config.model.latent_dim, "progress": app_state.progress(r).text,
    "created": datetime.fromtimestamp(r.created), "device": r.device or "", "error": common.hide_paths(r.error or ""),
} for r in shown], columns=["id", "name", "status", "objective", "dataset", "latent", "progress", "created",
                            "device", "error"])
event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key="runs_table")
st.caption(f"{len(shown)} of {len(runs)} runs. Click a row to select that run.")
rows = event.selection.rows if hasattr(event, "selection") else []
clicked = table.id.iloc[rows[0]] if rows else None
if clicked != st.session_state.get("runs_clicked"):  # react to a new click only, not to a kept selection
    st.session_state["runs_clicked"] = clicked
    if clicked:
        common.select_run(clicked)

rec = common.current_run()
st.subheader(f"{common.plain(rec.name)} ({rec.id})")
st.badge(rec.status, color=common.STATUS_COLORS.get(rec.status, "gray"))
common.run_error(rec)

bar = st.container(horizontal=True)
if common.is_active(rec) and bar.button("Cancel", icon=":material/stop_circle:", key="runs_cancel"):
    st.toast(f"{rec.id}: {s.request_cancel(rec.id)}")
    st.rerun()
if rec.status in RESUMABLE and bar.button("Resume", icon=":material/play_arrow:", key="resume",
                                          help="Continue from the last checkpoint"):
    s.requeue(rec.id, resume=True)
    worker.ensure_worker(s)
    st.rerun()
bar.download_button("Export CSV", s.metrics(rec.id).to_csv(index=False), file_name=f"{rec.id}-metrics.csv",
                    mime="text/csv", icon=":material/download:", key="export")
bar.download_button("Report (HTML)", lambda: report.run_html(s, rec), file_name=f"{rec.id}-report.html",
                    mime="text/html", icon=":material/share:", key="report",
                    help="One self-contained HTML file (figures, metrics, config) that opens offline")
if bar.button("Delete", icon=":material/delete:", key="delete", disabled=rec.status == "running",
              help="Cancel a running run first" if rec.status == "running" else None):
    st.session_state["confirm_delete"] = rec.id

if st.session_state.get("confirm_delete") == rec.id:
    st.warning(f"Delete run **{common.plain(rec.name)}** ({rec.id}), its metrics, checkpoints and snapshots? "
               "This cannot be undone.")
    yes, no, _ = st.columns([1, 1, 4])
    if yes.button("Yes, delete", type="primary", key="confirm_yes"):
        s.delete(rec.id)
        st.session_state.pop("confirm_delete")
        st.toast(f"Deleted {rec.id}")
        st.rerun()
    if no.button("Keep it", key="confirm_no"):
        st.session_state.pop("confirm_delete")
        st.rerun()

with st.expander("Config"):
    config = rec.config.to_dict()
    if config["data"].get("path"):
        config["data"]["path"] = common.hide_paths(config["data"]["path"])
    st.json(config)
