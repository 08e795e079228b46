"""Posterior tiling: every probe point's q(z|x) as a 1σ ellipse (or a cloud of samples), replayed over training."""

import numpy as np
import streamlit as st

from vaeviz import plots
from vaeviz.analysis import tiling
from vaeviz.analysis.projection import PCAProjection, project
from views import common

st.title("Posterior tiling")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "Each held-out image x is encoded to a Gaussian q(z|x); its 1σ ellipse is the region the decoder must map "
    "back to x. A well-balanced VAE tiles the prior's disc with ellipses that touch without piling up. "
    "Turn up β and the ellipses swell and overlap (the code forgets x); turn it down, or drop the KL as an "
    "autoencoder does, and they shrink to dots with gaps in between. Scrub the step to watch the tiling form; "
    "for more than two latent dimensions, pick two of them or a PCA projection of μ.",
    r"q(z|x)=\mathcal N\big(\mu(x),\,\operatorname{diag}\sigma^2(x)\big),\qquad "
    r"\{z : (z-\mu)^\top\Sigma^{-1}(z-\mu)=1\}=\{\mu + L u : \|u\|=1\},\; LL^\top=\Sigma",
)

step = common.snapshot_step(rec.id, "tiling")
snap = common.snapshot(rec.id, step)
mu, logvar, tril, labels = snap["mu"], snap.get("logvar"), snap.get("scale_tril"), snap.get("labels")
L = mu.shape[1]

c1, c2, c3 = st.columns(3)
sizes = sorted({min(k, len(mu)) for k in (100, 250, 500, 1000, 2000)})
n = c1.select_slider("points", sizes, min(500, len(mu)), key="tile_n") if len(sizes) > 1 else len(mu)
style = c2.radio("draw", ["ellipses", "samples"], horizontal=True, key="tile_style",
                 help="samples: 64 draws from each posterior (best for a handful of points)")
view, dims, basis = "dims", (0, min(1, L - 1)), None
if L > 2:
    view = c3.radio("view", ["two dimensions", "PCA", "UMAP"], horizontal=True, key="tile_view")
    if view == "two dimensions":
        a, b = st.columns(2)
        dims = (a.selectbox("x axis", range(L), 0, key="tx", format_func=lambda d: f"z{d + 1}"),
                b.selectbox("y axis", range(L), 1, key="ty", format_func=lambda d: f"z{d + 1}"))
    elif view == "PCA":
        basis = PCAProjection(2).fit(mu).basis_
mu, logvar, tril = mu[:n], None if logvar is None else logvar[:n], None if tril is None else tril[:n]
labels = None if labels is None else labels[:n]
names = common.class_names(rec)

axes = ("PC 1", "PC 2") if basis is not None else (f"z{dims[0] + 1}", f"z{dims[1] + 1}")
title = f"Posterior tiling at step {step}"
if L > 2 and view == "UMAP":
    centres = project(mu, "umap", key=f"{rec.id}-{step}-{n}")
    st.caption("UMAP keeps neighbourhoods, not Gaussians: only the centres are drawn.")
    fig = plots.tiling(labels=labels, class_names=names, samples=centres[:, None], axis_titles=("UMAP 1", "UMAP 2"),
                       title=title)
elif style == "samples":
    pts = tiling.posterior_samples(mu, logvar, tril, n=64)  # (P, 64, L)
    pts = pts @ (basis if basis is not None else tiling.dims_basis(L, dims))  # (P, 64, 2)
    fig = plots.tiling(labels=labels, class_names=names, samples=pts, axis_titles=axes, title=title)
else:
    outlines = tiling.ellipses(mu, logvar, tril, dims=dims, basis=basis)
    fig = plots.tiling(outlines, labels, names, axis_titles=axes, title=title)
st.plotly_chart(fig, key="tiling_chart")
if logvar is None and tril is None:
    st.caption("This encoder is deterministic: every posterior is a point.")
elif logvar is not None:
    st.caption(f"Mean posterior σ at step {step}: {np.exp(0.5 * logvar).mean():.3f} (the prior's is 1).")
