"""Compare: 2–4 runs side by side (information plane, tilings, samples, metrics); launch a fair comparison.

A comparison keeps the selected run's data, network, seed and training, and its objective knobs wherever they mean
the same thing; the objectives' other knobs take the values they suggest for the run's data, from the
reconstruction error it measured (`app_state.plan_comparison`, `Objective.suggested`: GECO's κ, λ₀ and ν). After a
launch the new runs are picked at once; the information plane and the tilings redraw every LIVE_SECONDS while a
picked run is queued or running, and stop polling once all have ended.
"""

import numpy as np
import streamlit as st

from vaeviz import app_state, plots, worker
from vaeviz.analysis import tiling
from vaeviz.analysis.batching import decode_batched
from vaeviz.analysis.evaluate import EvalSettings, evaluate_run
from vaeviz.analysis.projection import PCAProjection
from vaeviz.config import ConfigError
from vaeviz.objectives import REGISTRY
from vaeviz.preflight import preflight
from vaeviz.presets import COMPARISON
from views import common

EVAL = EvalSettings(k=50, n_iwae=500, n_samples=5000, n_fd=1000)  # interactive: smaller than `vaeviz eval`
FRECHET = {"fd_prior": "prior N(0, I) · fd_prior", "fd_gaussian": "single Gaussian · fd_gaussian",
           "fd_gmm": "GMM (k = 10) · fd_gmm"}  # samplers whose decoded samples are compared, side by side
METRICS = {  # the other `vaeviz eval` keys: name, unit (nats per example but KL(q(z) ‖ p(z))), which way is better
    "elbo": ("ELBO", "nats", "↑ better"),
    "iwae": ("IWAE", "nats", "↑ better"),
    "nll_sigma_free": ("σ-free NLL*", "nats", "↓ better"),
    "distortion": ("distortion", "nats", "↓ better"),
    "rate": ("rate R", "nats", "trade-off"),
    "marginal_kl": ("KL(q(z)‖p(z))", "nats", "↓ better"),
    "hole_fraction": ("holes", "prior mass", "↓ better"),
    "active_units": ("active units", "latent dims", "↑ more used"),
    "mig": ("MIG", "0 to 1", "↑ better"),
    "n_components": ("q(z) from", "posteriors", "count"),
}
OWN_DECODER = {"elbo", "iwae", "distortion"}  # each run's own decoder log-likelihood: compare within one decoder kind
LIVE_SECONDS = 3.0  # the plane and tilings redraw this often while a picked run is queued or running
TILE_POINTS = 300  # probe points per tiling
PCA_VIEW, DIMS_VIEW = "PCA of μ", "z₁, z₂"
state = st.session_state


# -- launching a comparison ----------------------------------------------------------------------


def launch_panel(s, rec, n_runs: int) -> None:
    """The objectives to compare on the selected run's data, what each keeps or is given, and the launch."""
    with st.expander("Launch a comparison: same data, network and seed under several objectives",
                     expanded=n_runs < 2):
        net = rec.config.model
        st.caption(f"Based on **{common.plain(rec.name)}**: {rec.dataset}, {net.arch} {net.hidden}, latent "
                   f"{net.latent_dim}, seed {rec.config.train.seed}, {rec.config.train.steps} steps. Knobs that mean "
                   "the same thing keep this run's values; the others are chosen for its data where the objective "
                   "has a rule, else its defaults. They train together as one batched model.")
        objectives = st.multiselect("Objectives", list(REGISTRY), default=COMPARISON, key="cmp_objectives")
        measured = app_state.measured_error(s, rec.id, int(np.prod(common.data_shape(rec))))
        try:
            describe(app_state.plan_comparison(rec.config, objectives, measured), rec.objective, measured)
        except ConfigError:
            pass  # no objective picked: the launch says so
        if st.button("Launch comparison", icon=":material/rocket_launch:", key="cmp_launch"):
            launch(s, rec, objectives, measured)


def describe(plan: list, own: str, measured: dict) -> None:
    """One line per objective: the knobs it keeps from the selected run (whose objective is `own`) and those chosen
    for its data."""
    lines = []
    for p in plan:
        parts = [f"keeps {knobs_text(p.kept)}"] if p.kept else []
        parts += [f"for this data: {knobs_text(p.suggested)}"] if p.suggested else []
        text = "this run's own knobs" if p.config.objective.name == own else "; ".join(parts) or "default knobs"
        lines.append(f"**{common.plain(p.config.objective.name)}**: {common.plain(text)}")
    if any(p.suggested for p in plan):
        split = {"eval": "held-out", "train": "training"}[measured["split"]]
        lines.append(common.plain(f"(chosen from this run's {split} MSE per dimension {measured['mse']:.4g} at step "
                                  f"{measured['step']})"))
    elif not measured:
        lines.append("(this run has logged no reconstruction error yet: nothing is chosen for its data)")
    st.caption("  \n".join(lines))


def knobs_text(knobs: dict) -> str:
    return ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in knobs.items())


def launch(s, rec, objectives: list[str], measured: dict) -> None:
    """Queue the comparison as one batch, start a worker, pick the new runs and redraw the page with them."""
    try:
        cfgs = app_state.comparison_configs(rec.config, objectives, measured, [r.name for r in s.list_runs()])
        for cfg in cfgs:
            preflight(cfg)  # what would fail once training started fails here, before anything is queued
        ids = s.create_batch(cfgs, [cfg.name for cfg in cfgs])
    except Exception as exc:  # noqa: BLE001 - ConfigError and DataError shown as their message
        common.show_error(exc)
        return
    worker.ensure_worker(s)
    state["cmp_pick"], state["cmp_runs"] = ids[:4], ids[:4]  # the picker (not drawn yet in this run) shows them
    st.toast(f"Queued {len(ids)} runs")
    st.rerun()


# -- picking runs ---------------------------------------------------------------------------------


def picker(runs: dict, rec) -> list[str]:
    """The 2–4 runs to compare: the last picked (or launched) ones, else the selected run and one of its data."""
    if "cmp_pick" in state:  # set by the widget or by a launch: keep only runs that still exist
        if any(i not in runs for i in state["cmp_pick"]):
            state["cmp_pick"] = [i for i in state["cmp_pick"] if i in runs]
        kwargs = {}
    else:  # back from another page (widget state is dropped there): the runs picked last time
        same = [i for i in runs if i != rec.id and runs[i].dataset == rec.dataset][:1]
        kwargs = {"default": [i for i in state.get("cmp_runs", []) if i in runs] or [rec.id, *same]}
    picked = st.multiselect("Runs to compare (2–4)", list(runs), max_selections=4, key="cmp_pick",
                            format_func=lambda i: f"{runs[i].name} · {i}", **kwargs)  # (a status would go stale)
    state["cmp_runs"] = list(picked)
    return picked


def labels(recs) -> dict[str, str]:
    """Each run's label in the figures: its name, with its id where another picked run has the same name."""
    names = [r.name for r in recs]
    return {r.id: r.name if names.count(r.name) == 1 else f"{r.name} · {r.id}" for r in recs}


# -- live: information plane and tilings ----------------------------------------------------------


def live(s, ids: list[str]) -> None:
    """The plane and the tilings, redrawn every LIVE_SECONDS while a picked run is queued or running; once all have
    ended the whole page is redrawn (picker, samples) and the polling stops."""
    at_render = any(common.is_active(s.get(i)) for i in ids)

    @st.fragment(run_every=LIVE_SECONDS if at_render else None)
    @common.guarded
    def draw():
        recs = [s.get(i) for i in ids]
        if at_render and not any(common.is_active(r) for r in recs):
            st.rerun()  # every picked run has ended
        if at_render:
            progress(recs)
        information_plane(recs)
        tilings(s, recs)

    draw()


def progress(recs) -> None:
    for col, r in zip(st.columns(len(recs)), recs):
        p = app_state.progress(r)
        col.progress(p.fraction, text=common.plain(f"{r.name} · {r.status} · {p.text}"))


def information_plane(recs) -> None:
    st.subheader("Information plane")
    names = labels(recs)
    paths = {names[r.id]: common.metrics(r.id, names=["rate", "distortion"]) for r in recs}
    same_scale = len({app_state.distortion_kind(r.config) for r in recs}) == 1
    st.plotly_chart(plots.information_plane(paths, frontier=same_scale), key="cmp_plane")
    if not same_scale:
        st.caption("D is each run's own decoder NLL: across different decoders (Bernoulli, Gaussian with a fixed, "
                   "learned or calibrated σ) compare the σ-independent NLL in the metrics table below.")


def tilings(s, recs) -> None:
    """Every picked run's tiling at its last snapshot, one figure with one legend."""
    st.subheader("Tilings at the last snapshot")
    view = PCA_VIEW
    if any(r.config.model.latent_dim > 2 for r in recs):
        view = st.radio("Latent plane", [PCA_VIEW, DIMS_VIEW], horizontal=True, key="cmp_view",
                        help="For a latent of more than 2 dimensions: the first two principal components of the "
                             "posterior means μ, or the first two dimensions.")
    names, panels, waiting = labels(recs), [], []
    for r in recs:
        steps = s.snapshot_steps(r.id)
        if steps:
            panels.append(tiling_panel(r, names[r.id], steps[-1], view))
        else:
            waiting.append(names[r.id])
    if panels:
        fig = plots.tiling_panels(panels, columns=2 if len(panels) == 4 else None)
        st.plotly_chart(fig, key="cmp_tilings")
        st.caption(tiling_caption(recs, view))
    if waiting:
        st.caption(common.plain(f"No snapshot yet: {', '.join(waiting)}."))


def tiling_panel(r, label: str, step: int, view: str) -> dict:
    """A run's panel of `plots.tiling_panels`: its first TILE_POINTS probe posteriors in the 2-D `view`."""
    snap = common.snapshot(r.id, step)
    n = min(TILE_POINTS, len(snap["mu"]))
    mu = np.asarray(snap["mu"][:n])
    logvar = snap["logvar"][:n] if "logvar" in snap else None
    tril = snap["scale_tril"][:n] if "scale_tril" in snap else None
    basis, axes, note = plane(mu, view)
    shapes = {"points": mu @ basis} if logvar is None and tril is None else {
        "outlines": tiling.ellipses(mu, logvar, tril, basis=basis)}  # a deterministic encoder: its codes
    return {"title": f"{label} · step {step}{note}", **shapes, "axes": axes,
            "labels": snap["labels"][:n] if "labels" in snap else None, "class_names": common.class_names(r)}


def plane(mu: np.ndarray, view: str) -> tuple[np.ndarray, tuple[str, str], str]:
    """(basis (L, 2), axis titles, title note) of the 2-D view of codes μ (N, L): the latent itself for L ≤ 2,
    else the first two principal components of μ (with the share of μ's variance they hold) or z₁, z₂."""
    L = mu.shape[1]
    if L <= 2:
        return np.eye(L, 2), ("z₁", "z₂" if L == 2 else "(1-D latent)"), ""
    if view == DIMS_VIEW:
        return tiling.dims_basis(L, (0, 1)), (f"z₁ ({L}-D latent)", f"z₂ ({L}-D latent)"), ""
    pca = PCAProjection(2).fit(mu)
    share = float(pca.explained_variance_.sum() / max(mu.var(0, ddof=1).sum(), 1e-12))
    return pca.basis_, (f"PC1 of μ ({L}-D latent)", f"PC2 of μ ({L}-D latent)"), f" · PC1+PC2 {share:.0%} of var μ"


def tiling_caption(recs, view: str) -> str:
    dims = sorted({r.config.model.latent_dim for r in recs if r.config.model.latent_dim > 2})
    text = ("Each ellipse is a held-out example's 1σ posterior q(z|x), coloured by class (one legend for all panels: "
            "click a class to hide it everywhere); the dashed circle is the prior's 1σ; both axes of a panel share "
            "one scale.")
    latent = " or ".join(f"{d}-D" for d in dims)
    if dims and view == PCA_VIEW:
        text += (f" PCA of μ: for the {latent} latent each panel shows its run's own first two principal components "
                 "of the posterior means μ (PC1, PC2; the title gives the share of μ's variance they hold) and each "
                 "posterior projected exactly onto them; the prior's circle stays the prior's.")
    elif dims:
        text += f" Only z₁ and z₂ of the {latent} latent are drawn (the posteriors' 2-D marginals)."
    return text


# -- per run: prior samples (and reconstructions) -------------------------------------------------


def per_run(recs) -> None:
    st.subheader("Prior samples and reconstructions at the last checkpoint")
    names = labels(recs)
    for col, r in zip(st.columns(len(recs)), recs):
        with col:
            st.markdown(f"**{common.plain(names[r.id])}** · {r.status}")
            prior_samples(r)
            common.reconstruction_panel(r, None, key=f"cmp_recon_{r.id}")


def prior_samples(r) -> None:
    setup, ckpt = common.model(r.id, None)
    if setup is None:
        st.caption("no checkpoint yet")
    elif setup.data.is_image:
        z = np.random.default_rng(0).standard_normal((16, setup.model.latent_dim)).astype(np.float32)
        fig = plots.sample_gallery({"prior": decode_batched(setup.model, z)}, setup.data.shape, per_row=4)
        fig.update_layout(title=f"z ~ N(0, I), step {ckpt}", height=300)
        st.plotly_chart(fig, key=f"cmp_samples_{r.id}")


# -- metrics --------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Evaluating (IWAE, holes, Fréchet distance)…", max_entries=32)
def evaluation(home: str, run_id: str, step: int) -> dict:
    return evaluate_run(common.store(), run_id, step, EVAL)


def metrics(recs) -> None:
    st.subheader("Metrics")
    st.caption("From `vaeviz eval` at each run's last checkpoint (IWAE with k = 50 on 500 held-out examples here). "
               "Holes and marginal KL are those of q(z) over `n_components` training posteriors: a finite mixture "
               "overestimates both, less so as it grows.")
    if not (st.button("Compute metrics", key="cmp_eval") or state.get("cmp_evaluated")):
        return
    state["cmp_evaluated"] = True
    rows = evaluated(recs)
    if not rows:
        return
    st.plotly_chart(plots.runs_table(rows, FRECHET, "Fréchet distance of decoded samples, by sampler"),
                    key="cmp_fd_table")
    st.caption("Fréchet distance in the features of a classifier of the dataset between held-out images and "
               "decoded samples (lower is better; labelled data only) of the prior N(0, I) and of the run's two "
               "ex-post samplers fitted to its training codes, z ~ q(z|x) or the codes themselves as its "
               "objective's paper does (Ghosh et al. 2020, sec. 4).")
    kinds = sorted({app_state.distortion_kind(r.config) for r in recs})
    columns = {"objective": "objective", "step": "step", **{
        k: (name + (" †" if k in OWN_DECODER and len(kinds) > 1 else ""), unit, better)
        for k, (name, unit, better) in METRICS.items() if any(row.get(k) is not None for row in rows.values())}}
    st.plotly_chart(plots.runs_table(rows, columns, "Held-out metrics", first_width=1.8), key="cmp_table")
    st.caption("Nats per example (summed over the data's dimensions), but KL(q(z) ‖ p(z)), between two distributions "
               f"of z; holes: the share of the prior's mass where q(z) < {EVAL.tau:g}·p(z); active units: latent "
               "dimensions whose μ varies across examples; step: the checkpoint scored. " + comparability(kinds))


def evaluated(recs) -> dict:
    """{run label: objective, checkpoint step and `vaeviz eval` keys} of the runs that have a checkpoint."""
    rows, s, names = {}, common.store(), labels(recs)
    for r in recs:
        ckpt = app_state.checkpoint_for(s, r.id, None)
        if ckpt is None:
            st.caption(f"{common.plain(names[r.id])}: no checkpoint yet")
            continue
        try:
            result = evaluation(str(s.home), r.id, ckpt)
            count = result["n_components"]
            rows[names[r.id]] = {"objective": r.objective, "step": ckpt, **result,
                                 "n_components": None if count is None else int(count)}
        except Exception as exc:  # noqa: BLE001 - one run's failure must not hide the others
            st.warning(f"{common.plain(names[r.id])}: {common.plain(common.hide_paths(str(exc)))}")
    return rows


def comparability(kinds: list[str]) -> str:
    """Which columns compare across the runs' decoders (`distortion_kind`), and why the others do not."""
    if len(kinds) == 1:
        return common.plain(f"Every run scores with one decoder likelihood ({kinds[0]}): every column compares. A "
                            "metric no run has (MIG without known factors) is left out.")
    return common.plain(
        f"† ELBO, IWAE and distortion D are each run's log-likelihood under its own decoder, and these decoders "
        f"differ ({'; '.join(kinds)}): compare those columns only between runs of one decoder. A Gaussian decoder's "
        "likelihood is a density, which grows by log(1/σ) per data dimension as σ shrinks (+2.3 nats per dimension "
        "at σ = 0.1), so its ELBO can pass 0; a Bernoulli decoder's is a probability mass, at most 1, so its ELBO "
        "stays below 0. Neither is the better model for it. The σ-free NLL* (every run's reconstructions scored by "
        "one Gaussian at the σ* of its training split), the rate, holes, KL(q(z) ‖ p(z)), MIG and the Fréchet "
        "distances compare across decoders. A metric no run has (MIG without known factors) is left out.")


# -- the page -------------------------------------------------------------------------------------

st.title("Compare")
store = common.store()
runs = {r.id: r for r in store.list_runs()}
rec = common.current_run()
launch_panel(store, rec, len(runs))
picked = picker(runs, rec)
if len(picked) < 2:
    st.info("Pick at least two runs, or launch a comparison above.")
    st.stop()
chosen = [runs[i] for i in picked]
live(store, picked)
per_run(chosen)
metrics(chosen)
