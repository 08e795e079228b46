"""Posterior tiling: every probe point's q(z|x) as a 1σ ellipse (or a cloud of samples), replayed over training.

A small training split (at most `tiling.SMALL_SPLIT` examples, e.g. Micro-MNIST's 7 images) is shown whole by
default, each example's decoded image g(μ) drawn at its μ; otherwise the held-out probe points of the snapshots.
"""

import numpy as np
import streamlit as st

from vaeviz import app_state, plots
from vaeviz.analysis import tiling
from vaeviz.analysis.projection import PCAProjection, project
from vaeviz.checkpoint import checkpoint_steps
from views import common

COUNTS = (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2000)  # the points slider's stops (and the split's size)
STRIP = 16  # at most this many training examples get an input / g(μ) strip below the tiling


def pick_split(rec) -> str:
    """"training" (offered, and the default, when the training split is small) or "held-out"."""
    n_train = len(common.dataset(rec).x_train)
    if n_train > tiling.SMALL_SPLIT:
        st.caption(f"Held-out split: the snapshots' probe points ({n_train:,} training examples are too many "
                   "to draw whole).")
        return "held-out"
    split = st.radio("split", ["training", "held-out"], horizontal=True, key="tile_split",
                     help=f"A training split of at most {tiling.SMALL_SPLIT} examples is drawn whole, each with "
                          "its decoded image; held-out: the probe points of the posterior snapshots.")
    if split == "training":
        st.caption(f"Training split: all {n_train} training examples, encoded with the saved weights of each "
                   "checkpoint; each one's decoded image g(μ) sits at its μ.")
    else:
        st.caption("Held-out split: the probe points of the posterior snapshots.")
    return split


def training_arrays(rec) -> tuple[dict, int]:
    """The training split's posteriors at the scrubbed checkpoint; stops the page while there is none."""
    steps = checkpoint_steps(common.store().artifact_dir(rec.id))
    if not steps:
        st.info("No checkpoint yet: the training split is encoded with the weights saved every "
                "`train.checkpoint_every` steps.")
        st.stop()
    arrays, step = common.train_split(rec.id, common.step_scrubber(steps, "tiling_train", "Checkpoint step"))
    return arrays, step


def points_slider(column, total: int, key: str) -> int:
    options = sorted({k for k in COUNTS if k < total} | {total})
    if len(options) == 1:
        return total
    return column.select_slider("points", options, min(500, total), key=key)


def view_picker(column, mu: np.ndarray):
    """(view, dims, basis) for L > 2 latent dimensions: two of them, PCA of μ, or UMAP."""
    L = mu.shape[1]
    view, dims, basis = "dims", (0, min(1, L - 1)), None
    if L > 2:
        view = column.radio("view", ["two dimensions", "PCA", "UMAP"], horizontal=True, key="tile_view")
        if view == "two dimensions":
            a, b = st.columns(2)
            dims = (a.selectbox("x axis", range(L), 0, key="tx", format_func=lambda d: f"z{d + 1}"),
                    b.selectbox("y axis", range(L), 1, key="ty", format_func=lambda d: f"z{d + 1}"))
        elif view == "PCA":
            basis = PCAProjection(2).fit(mu).basis_
    return view, dims, basis


def figure(rec, arrays: dict, style: str, view: str, dims, basis, title: str):
    """The tiling and the 2-D positions of the points' centres."""
    mu, logvar, tril, labels = arrays["mu"], arrays.get("logvar"), arrays.get("scale_tril"), arrays.get("labels")
    names = common.class_names(rec)
    axes = ("PC 1", "PC 2") if basis is not None else (f"z{dims[0] + 1}", f"z{dims[1] + 1}")
    if view == "UMAP":
        centres = project(mu, "umap", key=f"{rec.id}-{title}-{len(mu)}")
        st.caption("UMAP keeps neighbourhoods, not Gaussians: only the centres are drawn.")
        fig = plots.tiling(labels=labels, class_names=names, samples=centres[:, None],
                           axis_titles=("UMAP 1", "UMAP 2"), title=title)
        return fig, centres
    to_2d = basis if basis is not None else tiling.dims_basis(mu.shape[1], dims)
    if style == "samples":
        pts = tiling.posterior_samples(mu, logvar, tril, n=64) @ to_2d  # (P, 64, 2)
        fig = plots.tiling(labels=labels, class_names=names, samples=pts, axis_titles=axes, title=title)
    else:
        fig = plots.tiling(tiling.ellipses(mu, logvar, tril, dims=dims, basis=basis), labels, names,
                           axis_titles=axes, title=title)
    return fig, mu @ to_2d


def with_images(rec, fig, arrays: dict, centres: np.ndarray):
    """(tiling, strip): the training examples' decoded images at their centres, and a strip of the inputs and
    their g(μ) (None for vector data or more than STRIP examples)."""
    shape = common.data_shape(rec)
    decoded = app_state.as_images(arrays["decoded"], shape)
    if decoded is None:
        return fig, None
    fig, n = plots.image_markers(fig, centres, decoded), len(centres)
    if n > STRIP:
        return fig, None
    inputs = common.dataset(rec).x_train[:n].reshape(n, -1)
    strip = plots.image_grid(np.stack([inputs, arrays["decoded"]]), shape, ["input x", "g(μ)"],
                             [str(i + 1) for i in range(n)], title="Training examples (numbered as on the tiling) "
                             "and their decoded mean codes g(μ)")
    return fig, strip


st.title("Posterior tiling")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "Each image x is encoded to a Gaussian q(z|x); its 1σ ellipse is the region the decoder must map "
    "back to x. A well-balanced VAE tiles the prior's disc with ellipses that touch without piling up. "
    "Turn up β and the ellipses swell and overlap (the code forgets x); turn it down, or drop the KL as an "
    "autoencoder does, and they shrink to dots with gaps in between. Scrub the step to watch the tiling form; "
    "for more than two latent dimensions, pick two of them or a PCA projection of μ. A small training split "
    "(Micro-MNIST's 7 images, as in Taming VAEs, Fig. 8) is drawn whole: watch each image claim its own patch.",
    r"q(z|x)=\mathcal N\big(\mu(x),\,\operatorname{diag}\sigma^2(x)\big),\qquad "
    r"\{z : (z-\mu)^\top\Sigma^{-1}(z-\mu)=1\}=\{\mu + L u : \|u\|=1\},\; LL^\top=\Sigma",
)

split = pick_split(rec)
if split == "training":
    arrays, step = training_arrays(rec)
else:
    step = common.snapshot_step(rec.id, "tiling")
    arrays = common.snapshot(rec.id, step)

c1, c2, c3 = st.columns(3)
n = points_slider(c1, len(arrays["mu"]), "tile_n_train" if split == "training" else "tile_n")
style = c2.radio("draw", ["ellipses", "samples"], horizontal=True, key="tile_style",
                 help="samples: 64 draws from each posterior (best for a handful of points)")
view, dims, basis = view_picker(c3, arrays["mu"])
shown = {k: v[:n] for k, v in arrays.items() if k in ("mu", "logvar", "scale_tril", "labels", "decoded")}
fig, centres = figure(rec, shown, style, view, dims, basis, f"Posterior tiling ({split} split) at step {step}")
fig, strip = with_images(rec, fig, shown, centres) if split == "training" else (fig, None)
st.plotly_chart(fig, key="tiling_chart")
if strip is not None:
    st.plotly_chart(strip, key="tiling_strip")
logvar = shown.get("logvar")
if logvar is None and shown.get("scale_tril") is None:
    st.caption("This encoder is deterministic: every posterior is a point.")
elif logvar is not None:
    st.caption(f"Mean posterior σ at step {step}: {np.exp(0.5 * logvar).mean():.3f} (the prior's is 1).")
