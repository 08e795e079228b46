"""β sweep: launch the selected run under several β as one batch, and plot rate, distortion and −ELBO against β.

A sweep is a batch of runs that differ only in β (`app_state.beta_sweeps`): those launched here and
`vaeviz sweep --vary objective.beta=...`. Each run is one point per curve, at its latest held-out metrics
(`app_state.sweep_points`); the chart polls only while a run of the sweep is queued or running.
"""

import streamlit as st

from vaeviz import app_state, plots, worker
from vaeviz.preflight import preflight
from views import common

POLL_SECONDS = 2.0
state = st.session_state

st.title("β sweep")
s = common.store()
rec = common.current_run()
common.run_error(rec)
common.teach(
    "β weighs the rate R against the distortion D: a β-VAE minimises D + βR. Train one network under several β "
    "and read the trade-off off one chart. As β grows the code gets dearer, so the rate falls and the distortion "
    "rises: reconstructions blur towards the average image. At β = 1 the objective is the negative ELBO itself, "
    "and the −ELBO curve is usually lowest near it. At large β the rate reaches 0: every q(z|x) equals the prior "
    "p(z), the code says nothing about x (posterior collapse; the active units fall to 0) and D becomes the cost of "
    "describing x without any code. Below 1 the rate grows beyond what the ELBO would pay for. The x axis is "
    "logarithmic because what matters is the ratio between successive β.",
    r"\min_{\theta,\phi}\; D + \beta R,\qquad -\mathrm{ELBO} = D + R,\qquad "
    r"R=\mathbb{E}_x\,\mathrm{KL}\big(q(z|x)\,\|\,p(z)\big)",
)


def launch(betas_text: str) -> str | None:
    """Plan, check (`preflight`) and queue the sweep as one batch; its batch id, or None after an error shown."""
    try:
        plan = app_state.plan_beta_sweep(rec.config, rec.name, app_state.parse_betas(betas_text),
                                         [r.name for r in s.list_runs()])
        for cfg in plan.configs:
            preflight(cfg)  # what would fail once training started fails here, before anything is queued
        ids = s.create_batch(plan.configs, plan.names)  # one worker trains them as one batched model
    except Exception as exc:  # noqa: BLE001 - ConfigError and DataError shown as their message
        common.show_error(exc)
        return None
    worker.ensure_worker(s)
    st.toast(f"Queued {len(ids)} runs")
    return s.get(ids[0]).batch


in_sweep = any(rec.id in {r.id for r in sw.runs} for sw in app_state.beta_sweeps(s.list_runs()))
with st.expander("Launch a β sweep of this run", expanded=not in_sweep):
    net = rec.config.model
    st.caption(f"Based on **{common.plain(rec.name)}** ({common.plain(rec.objective)}): {common.plain(rec.dataset)}, "
               f"{net.arch} {net.hidden}, latent {net.latent_dim}, seed {rec.config.train.seed}, "
               f"{rec.config.train.steps} steps; every other knob is kept, only β changes.")
    if not app_state.has_rate_beta(rec.objective):
        notes = app_state.plan_beta_sweep(rec.config, rec.name, [1.0, 2.0], []).notes  # the same for every β
        st.info(common.plain(
            f"{rec.objective} has no β weighing the rate: the sweep trains {app_state.BETA_OBJECTIVE} with this run's "
            "data, network, training and the objective knobs that mean the same thing in both. "
            + " ".join(f"Note: {n}." for n in notes)))
    text = st.text_input("β values", value=", ".join(map(app_state.beta_text, app_state.log_betas())),
                         key="beta_values", help=f"2 to {app_state.MAX_SWEEP_BETAS} positive numbers, separated by "
                         "commas; the default is 8 log-spaced values from 0.1 to 10.")
    if st.button("Launch β sweep", icon=":material/rocket_launch:", key="beta_launch"):
        batch = launch(text)
        if batch is not None:
            state[f"beta_pick_{rec.id}"] = batch  # show the new sweep (the picker below is not drawn yet)

sweeps = {sw.batch: sw for sw in app_state.beta_sweeps(s.list_runs())}
if not sweeps:
    st.info("No β sweep yet: launch one above (or `vaeviz sweep --set objective.name=beta_vae "
            "--vary objective.beta=0.1,1,10`).")
    st.stop()
own = [b for b, sw in sweeps.items() if rec.id in {r.id for r in sw.runs}]
key = f"beta_pick_{rec.id}"
if state.get(key) not in sweeps:
    state[key] = (own or list(sweeps))[0]  # the sweep of the selected run, else the newest
picked = st.selectbox("Sweep", list(sweeps), key=key, format_func=lambda b: sweeps[b].label,
                      help="Batches of runs that differ only in β, newest first.")
units = common.plain(app_state.distortion_kind(sweeps[picked].runs[0].config))


@st.fragment(run_every=POLL_SECONDS if sweeps[picked].active else None)
@common.guarded
def sweep_view(batch: str, was_active: bool) -> None:
    """The sweep's chart and table, redrawn while any of its runs is queued or running."""
    sweep = next((sw for sw in app_state.beta_sweeps(s.list_runs()) if sw.batch == batch), None)
    if sweep is None or (was_active and not sweep.active):
        st.rerun()  # a run was deleted, or the sweep finished: redraw the page (and stop polling)
    points = app_state.sweep_points(s, sweep.runs)
    done = sum(r.status == "done" for r in sweep.runs)
    st.caption(f"{done} of {len(sweep.runs)} runs done · {len(points)} with metrics")
    if points.empty:
        st.info("No metrics yet: each run's point appears once it has logged a step.")
        return
    st.plotly_chart(plots.beta_curves(points), key="beta_chart")
    st.caption("R, D and −ELBO = D + R in nats per example of the held-out split at each run's latest evaluation "
               "(a run not yet evaluated: its last training batch), in the runs' own units: D is −log p(x|z) under "
               f"their decoder ({units}).")
    table = points.rename(columns={"beta": "β", "rate": "rate R", "distortion": "distortion D",
                                   "neg_elbo": "−ELBO", "active_units": "active units"})
    st.dataframe(table.drop(columns=["id"]), hide_index=True)


sweep_view(picked, sweeps[picked].active)
