"""Holes: where the aggregate posterior q(z) leaves prior mass uncovered, and what the decoder draws there."""

import numpy as np
import streamlit as st

from vaeviz import plots
from vaeviz.analysis.aggregate import AggregatePosterior
from vaeviz.analysis.batching import decode_batched
from views import common

st.title("Holes in the aggregate posterior")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "Averaging every example's posterior gives the aggregate posterior q(z), the density of codes the decoder "
    "was actually trained on. Sampling the prior p(z) assumes q matches p; where q/p falls below τ there is a "
    "hole: the prior sends samples there but the decoder never learned what to draw. The hole fraction is the "
    "prior mass inside holes and the marginal KL measures the whole mismatch. Compare the decodings from holes "
    "with those from dense regions, and try a small β or an RAE to see holes open up.",
    r"q(z)=\frac1N\sum_{n=1}^N q(z|x_n),\qquad \text{hole fraction}=\Pr_{z\sim p}\!\Big[\frac{q(z)}{p(z)}<\tau\Big],"
    r"\qquad \mathrm{KL}\big(q(z)\,\|\,p(z)\big)",
)

step = common.snapshot_step(rec.id, "holes")
L = rec.config.model.latent_dim
c1, c2, c3 = st.columns(3)
tau = c1.select_slider("τ", [0.01, 0.03, 0.1, 0.3, 1.0], 0.1, key="tau", help="q/p below τ counts as a hole")
dims = (0, min(1, L - 1))
if L > 2:
    dims = (c2.selectbox("x axis", range(L), 0, key="hx", format_func=lambda d: f"z{d + 1}"),
            c3.selectbox("y axis", range(L), 1, key="hy", format_func=lambda d: f"z{d + 1}"))


@st.cache_resource(show_spinner="Fitting q(z)…", max_entries=8)
def aggregate(run_id: str, step: int) -> AggregatePosterior:
    snap = common.snapshot(run_id, step)
    deterministic = "logvar" not in snap and "scale_tril" not in snap
    return AggregatePosterior(bandwidth="scott" if deterministic else None).fit(
        snap["mu"], snap.get("logvar"), snap.get("scale_tril"))


@st.cache_data(show_spinner="Measuring holes…", max_entries=32)
def measures(run_id: str, step: int, tau: float) -> tuple[float, float]:
    agg = aggregate(run_id, step)
    return agg.hole_fraction(tau, 5000), agg.marginal_kl(5000)


agg = aggregate(rec.id, step)
grid = agg.grid(3.0, 96, dims)
holes, kl = measures(rec.id, step, tau)
m1, m2, m3 = st.columns(3)
m1.metric("hole fraction", f"{holes:.1%}", help="prior mass where q/p < τ (Monte Carlo over 5,000 prior samples)")
m2.metric("marginal KL(q‖p)", f"{kl:.3f} nats")
m3.metric("step", step)
axes = (f"z{dims[0] + 1}", f"z{dims[1] + 1}")
st.plotly_chart(plots.holes(grid, tau, holes, kl, axis_titles=axes), key="holes_chart")
if agg.bandwidth is not None:
    st.caption("Deterministic encoder: q(z) is a kernel density of its codes (Scott's rule bandwidth).")

setup, ckpt = common.model(rec.id, step)
if setup is not None and setup.data.is_image:
    z = np.random.default_rng(0).standard_normal((2000, L))
    order = np.argsort(agg.log_ratio(z))
    st.subheader(f"What the decoder draws (weights of step {ckpt})")
    st.caption("Of 2,000 prior samples, the 10 with the smallest q/p (deepest in holes) and the 10 with the largest.")
    galleries = {"in holes": decode_batched(setup.model, z[order[:10]].astype(np.float32)),
                 "dense": decode_batched(setup.model, z[order[-10:]].astype(np.float32))}
    fig = plots.sample_gallery(galleries, setup.data.shape).update_layout(height=300, title="")
    st.plotly_chart(fig, key="holes_gallery")
