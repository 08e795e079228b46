"""Holes: where the aggregate posterior q(z) of the training posteriors (Hoffman & Johnson 2016, eq. 2) leaves
prior mass uncovered, and what the decoder draws there."""

import numpy as np
import streamlit as st

from vaeviz import plots
from vaeviz.analysis.aggregate import AggregatePosterior, fit_aggregate
from vaeviz.analysis.batching import decode_batched
from vaeviz.checkpoint import checkpoint_steps
from views import common

N_MC = 5000  # Monte Carlo samples behind each hole fraction and marginal KL of the page

st.title("Holes in the aggregate posterior")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "Averaging the posteriors of the training examples gives the aggregate posterior q(z), the density of codes "
    "the decoder was actually trained on. Sampling the prior p(z) assumes q matches p; where q/p falls below τ "
    "there is a hole: the prior sends samples there but the decoder never learned what to draw. The hole "
    "fraction is the prior mass inside holes and the marginal KL measures the whole mismatch. Compare the "
    "decodings from holes with those from dense regions, and try a small β or an RAE to see holes open up.",
    r"q(z)=\frac1N\sum_{n=1}^N q(z|x_n),\qquad \text{hole fraction}=\Pr_{z\sim p}\!\Big[\frac{q(z)}{p(z)}<\tau\Big],"
    r"\qquad \mathrm{KL}\big(q(z)\,\|\,p(z)\big)",
)

steps = checkpoint_steps(common.store().artifact_dir(rec.id))
if not steps:
    st.info(f"No weights saved yet: q(z) is built from the training posteriors of a checkpoint, written every "
            f"{rec.config.train.checkpoint_every} steps and at the end of training.")
    st.stop()
setup, ckpt = common.model(rec.id, common.step_scrubber(steps, "holes", "Checkpoint step"))
home, L = str(common.store().home), setup.model.latent_dim
c1, c2, c3 = st.columns(3)
tau = c1.select_slider("τ", [0.01, 0.03, 0.1, 0.3, 1.0], 0.1, key="tau", help="q/p below τ counts as a hole")
dims = (0, min(1, L - 1))
if L > 2:
    dims = (c2.selectbox("x axis", range(L), 0, key="hx", format_func=lambda d: f"z{d + 1}"),
            c3.selectbox("y axis", range(L), 1, key="hy", format_func=lambda d: f"z{d + 1}"))


@st.cache_resource(show_spinner="Fitting q(z) to the training posteriors…", max_entries=8)
def aggregate(home: str, run_id: str, ckpt: int) -> AggregatePosterior:
    """q(z) over the posteriors of the training split (up to 10,000) at checkpoint `ckpt`."""
    fitted, _ = common.model(run_id, ckpt)
    return fit_aggregate(fitted.model, fitted.data.x_train)


@st.cache_data(show_spinner="Measuring holes…", max_entries=64)
def measures(home: str, run_id: str, ckpt: int, tau: float, dims: tuple[int, int] | None) -> tuple[float, float]:
    """(hole fraction, marginal KL) of q over all L dimensions, or of its 2-D marginal on `dims`."""
    agg = aggregate(home, run_id, ckpt)
    agg = agg if dims is None else agg.marginal(dims)
    return agg.hole_fraction(tau, N_MC), agg.marginal_kl(N_MC)


@st.cache_data(show_spinner="Decoding…", max_entries=16)
def gallery(home: str, run_id: str, ckpt: int) -> dict[str, np.ndarray]:
    """Decoded prior samples deepest in holes and in the densest places of q (all L dimensions)."""
    model = common.model(run_id, ckpt)[0].model
    z = np.random.default_rng(0).standard_normal((2000, model.latent_dim)).astype(np.float32)
    order = np.argsort(aggregate(home, run_id, ckpt).log_ratio(z))
    return {"in holes": decode_batched(model, z[order[:10]]), "dense": decode_batched(model, z[order[-10:]])}


agg = aggregate(home, rec.id, ckpt)
n = agg.n_components_
holes, kl = measures(home, rec.id, ckpt, tau, None)
m1, m2, m3, m4 = st.columns(4)
m1.metric("hole fraction", f"{holes:.1%}", help=f"prior mass where q/p < τ, over all {L} latent dimensions "
          f"(Monte Carlo over {N_MC:,} prior samples)")
m2.metric("marginal KL(q‖p)", f"{kl:.3f} nats")
m3.metric("components N", f"{n:,}", help="training posteriors in the mixture q(z)")
m4.metric("checkpoint step", ckpt)
which = "all the" if n == len(setup.data.x_train) else "the first"
st.caption(f"q(z) is the mixture of the posteriors of {which} {n:,} training examples, a sample estimate of the "
           "aggregate posterior: with few components a finite mixture leaves gaps between them, so holes and the "
           "marginal KL are overestimated, less so as N grows.")
if agg.bandwidth is not None:
    st.caption("Deterministic encoder: q(z) is a kernel density of its training codes (Scott's rule bandwidth).")

if L == 1:
    st.caption("One latent dimension: there is no 2-D map to draw.")
elif dims[0] == dims[1]:
    st.info("Pick two different axes to map q(z).")
else:
    map_holes, map_kl = (holes, kl) if L == 2 else measures(home, rec.id, ckpt, tau, dims)
    axes = (f"z{dims[0] + 1}", f"z{dims[1] + 1}")
    if L > 2:
        st.markdown(f"The hole fraction above is over all {L} latent dimensions. The map shows the 2-D marginal of "
                    f"q on {axes[0]} and {axes[1]} against the 2-D prior N(0, I₂); the figure that matches it is the "
                    f"hole fraction of that marginal, **{map_holes:.1%}** (marginal KL {map_kl:.3f} nats).")
    grid = agg.grid(3.0, 96, dims)
    st.plotly_chart(plots.holes(grid, tau, map_holes, map_kl, axis_titles=axes), key="holes_chart")

if setup.data.is_image:
    st.subheader(f"What the decoder draws (weights of step {ckpt})")
    st.caption("Of 2,000 prior samples, the 10 with the smallest q/p (deepest in holes) and the 10 with the largest.")
    fig = plots.sample_gallery(gallery(home, rec.id, ckpt), setup.data.shape).update_layout(height=300, title="")
    st.plotly_chart(fig, key="holes_gallery")
