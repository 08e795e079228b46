"""Compare: 2–4 runs side by side (information plane, tilings, samples, metrics); launch a fair comparison."""

import numpy as np
import streamlit as st

from vaeviz import app_state, plots, worker
from vaeviz.analysis import tiling
from vaeviz.analysis.batching import decode_batched
from vaeviz.analysis.evaluate import EvalSettings, evaluate_run
from vaeviz.objectives import REGISTRY
from vaeviz.preflight import preflight
from vaeviz.presets import COMPARISON
from views import common

EVAL = EvalSettings(k=50, n_iwae=500, n_samples=5000, n_fd=1000)  # interactive: smaller than `vaeviz eval`
FRECHET = {"fd_prior": "prior N(0, I) · fd_prior", "fd_gaussian": "single Gaussian · fd_gaussian",
           "fd_gmm": "GMM (k = 10) · fd_gmm"}  # samplers whose decoded samples are compared, side by side
state = st.session_state

st.title("Compare")
s = common.store()
runs = {r.id: r for r in s.list_runs()}
rec = common.current_run()

with st.expander("Launch a comparison: same data, network and seed under several objectives",
                 expanded=len(runs) < 2):
    net = rec.config.model
    st.caption(f"Based on **{common.plain(rec.name)}**: {rec.dataset}, {net.arch} {net.hidden}, latent "
               f"{net.latent_dim}, seed {rec.config.train.seed}, {rec.config.train.steps} steps. "
               "Each objective starts from its default knobs; they train together as one batched model.")
    objectives = st.multiselect("Objectives", list(REGISTRY), default=COMPARISON, key="cmp_objectives")
    if st.button("Launch comparison", icon=":material/rocket_launch:", key="cmp_launch"):
        try:
            cfgs = app_state.comparison_configs(rec.config, objectives)
            for cfg in cfgs:
                preflight(cfg)  # what would fail once training started fails here, before anything is queued
            ids = s.create_batch(cfgs, [cfg.name for cfg in cfgs])  # one worker trains them as one batched model
        except Exception as exc:  # noqa: BLE001 - ConfigError and DataError shown as their message
            common.show_error(exc)
        else:
            worker.ensure_worker(s)
            state["cmp_runs"] = ids[:4]
            st.toast(f"Queued {len(ids)} runs")

default = [i for i in state.get("cmp_runs", []) if i in runs] or [i for i in runs if i == rec.id] + [
    i for i in runs if i != rec.id and runs[i].dataset == rec.dataset][:1]
picked = st.multiselect("Runs to compare (2–4)", list(runs), default=default, max_selections=4, key="cmp_pick",
                        format_func=lambda i: f"{runs[i].name} · {runs[i].status}")
if len(picked) < 2:
    st.info("Pick at least two runs, or launch a comparison above.")
    st.stop()
chosen = [runs[i] for i in picked]

st.subheader("Information plane")
paths = {r.name: common.metrics(r.id, names=["rate", "distortion"]) for r in chosen}
same_scale = len({app_state.distortion_kind(r.config) for r in chosen}) == 1
st.plotly_chart(plots.information_plane(paths, frontier=same_scale), key="cmp_plane")
if not same_scale:
    st.caption("D is each run's own decoder NLL: across different decoders (Bernoulli, Gaussian with a fixed, learned "
               "or calibrated σ) compare the σ-independent NLL in the metrics table below.")

st.subheader("Tilings and prior samples at the last step")
for col, r in zip(st.columns(len(chosen)), chosen):
    with col:
        st.markdown(f"**{common.plain(r.name)}** · {r.status}")
        steps = s.snapshot_steps(r.id)
        if not steps:
            st.caption("no snapshot yet")
            continue
        snap = common.snapshot(r.id, steps[-1])
        n = min(300, len(snap["mu"]))
        outlines = tiling.ellipses(snap["mu"][:n], None if "logvar" not in snap else snap["logvar"][:n],
                                   None if "scale_tril" not in snap else snap["scale_tril"][:n])
        labels = snap["labels"][:n] if "labels" in snap else None
        fig = plots.tiling(outlines, labels, common.class_names(r), title=f"step {steps[-1]}")
        st.plotly_chart(fig, key=f"cmp_tiling_{r.id}")
        setup, ckpt = common.model(r.id, None)
        if setup is not None and setup.data.is_image:
            z = np.random.default_rng(0).standard_normal((16, setup.model.latent_dim)).astype(np.float32)
            fig = plots.sample_gallery({"prior": decode_batched(setup.model, z)}, setup.data.shape, per_row=4)
            fig.update_layout(title=f"z ~ N(0, I), step {ckpt}", height=380)
            st.plotly_chart(fig, key=f"cmp_samples_{r.id}")


@st.cache_data(show_spinner="Evaluating (IWAE, holes, Fréchet distance)…", max_entries=32)
def evaluation(home: str, run_id: str, step: int) -> dict:
    return evaluate_run(s, run_id, step, EVAL)


st.subheader("Metrics")
st.caption("From `vaeviz eval` at each run's last checkpoint (IWAE with k = 50 on 500 held-out examples here). "
           "Holes and marginal KL are those of q(z) over `n_components` training posteriors: a finite mixture "
           "overestimates both, less so as it grows.")
if st.button("Compute metrics", key="cmp_eval") or state.get("cmp_evaluated"):
    state["cmp_evaluated"] = True
    rows = {}
    for r in chosen:
        ckpt = app_state.checkpoint_for(s, r.id, None)
        if ckpt is None:
            st.caption(f"{common.plain(r.name)}: no checkpoint yet")
            continue
        try:
            result = evaluation(str(s.home), r.id, ckpt)
            count = result["n_components"]
            rows[r.name] = {"objective": r.objective, "step": ckpt, **result,
                            "n_components": None if count is None else int(count)}
        except Exception as exc:  # noqa: BLE001 - one run's failure must not hide the others
            st.warning(f"{common.plain(r.name)}: {common.plain(common.hide_paths(str(exc)))}")
    if rows:
        title = "Fréchet distance of decoded samples, by sampler"
        st.plotly_chart(plots.runs_table(rows, FRECHET, title), key="cmp_fd_table")
        st.caption("Fréchet distance in the features of a classifier of the dataset between held-out images and "
                   "decoded samples (lower is better; labelled data only) of the prior N(0, I) and of the run's two "
                   "ex-post samplers fitted to its training codes, z ~ q(z|x) or the codes themselves as its "
                   "objective's paper does (Ghosh et al. 2020, sec. 4).")
        keys = [k for k in next(iter(rows.values())) if k not in FRECHET]
        st.plotly_chart(plots.metrics_table(rows, keys), key="cmp_table")
