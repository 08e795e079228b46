"""Latent traversals: drive the decoder by hand, click codes, interpolate, compare samplers."""

import numpy as np
import streamlit as st

from vaeviz import app_state, plots
from vaeviz.analysis.batching import decode_batched, encode_batched
from vaeviz.analysis.disentangle import MIN_KL, MIN_NMI, LatentFactors, dimension_kl, is_categorical
from vaeviz.analysis.traversal import decode_manifold, interpolate, traversal_grid
from vaeviz.checkpoint import checkpoint_steps
from vaeviz.objectives import latent_groups
from views import common

SHOWN_DIMS = 10
SCALE = 3.0  # slider range ±SCALE: the prior puts 99.7% of each coordinate inside it
FACTOR_N = 10_000  # held-out examples for the factor labels (at most)
CLOUD_N = 2_000  # training points drawn as the data cloud of vector data
state = st.session_state

st.title("Latent traversals")
rec = common.current_run()
common.run_error(rec)
common.teach(
    "The decoder g maps every latent code z to an image. Drag one coordinate at a time and watch which factor "
    "of the image it controls: a β-VAE with a large β tends to give each slider one meaning, a plain VAE mixes "
    "them, and dimensions the encoder switched off change nothing. Click a point in the scatter to load its "
    "code, interpolate between two codes, and compare samples from the prior with samples from a Gaussian or a "
    "10-component GMM fitted to the training codes (ex-post density, Ghosh et al. 2020). Spherical "
    "interpolation stays on the shell where Gaussian codes live. Where the objective groups the dimensions "
    "(HFVAE, Esmaeili et al. 2019), the sliders and the grid come group by group: dimensions of one group may "
    "share a factor, groups should not. Where the data have known factors (`shapes`), each latent is labelled by "
    "the factor it predicts best (the mutual information behind MIG, Chen et al. 2018), and the scatter can be "
    "coloured by any factor. For 2-D data, g(z) is drawn where it lands among the data.",
    r"\hat x = g(z),\qquad \operatorname{slerp}(a,b;t)=\frac{\sin((1-t)\omega)}{\sin\omega}\,a"
    r"+\frac{\sin(t\omega)}{\sin\omega}\,b,\quad \cos\omega=\hat a^\top\hat b",
)

steps = checkpoint_steps(common.store().artifact_dir(rec.id))
if not steps:
    st.info(f"No weights saved yet: checkpoints are written every {rec.config.train.checkpoint_every} steps and "
            "at the end of training.")
    st.stop()
setup, step = common.model(rec.id, common.step_scrubber(steps, "traversals", "Checkpoint step"))
model, data = setup.model, setup.data
L = model.latent_dim
GROUPS = latent_groups(rec.config.objective, L) or [range(L)]  # the objective's groups of dimensions, else one
GROUPED = len(GROUPS) > 1 and any(len(g) > 1 for g in GROUPS)  # worth showing: neither one group nor singletons


@st.cache_data(show_spinner="Measuring what each latent encodes…", max_entries=8)
def factor_report(run_id: str, ckpt: int) -> LatentFactors | None:
    """Per latent, the known factor it predicts best on the first FACTOR_N held-out examples under the weights at
    `ckpt`; None for data without known factors."""
    if data.factors_eval is None or not data.factor_names:
        return None
    q = encode_batched(model, data.x_eval[:FACTOR_N])
    mu = q.mu.numpy()
    kl = None if q.deterministic else dimension_kl(mu, q.variance.numpy())
    return LatentFactors().fit(mu, data.factors_eval[:FACTOR_N], data.factor_names, kl)


FACTORS = factor_report(rec.id, step)


def short_label(d: int) -> str:
    """'z3 · x' (the factor z3 predicts best) where the data have known factors, else 'z3'."""
    return FACTORS.latents_[d].short if FACTORS else f"z{d + 1}"


def factor_caption() -> None:
    """How the factor labels were measured, with the sample size, the thresholds and MIG on the same codes."""
    if not FACTORS:
        return
    mig = f" MIG on these codes: {FACTORS.mig_:.2f}." if L > 1 else ""
    st.caption(f"Factor labels: mutual information I(z_j; v_k) between each code μ_j(x) (in 20 equal-width bins) "
               f"and each known factor, on the first {FACTORS.n_:,} held-out examples at step {step:,} (plug-in "
               f"estimates in nats, as for MIG). Each latent gets the factor of largest I/H(v); gap = that minus its "
               f"second best. A latent whose largest I/H(v) is below {MIN_NMI:g} predicts no factor; one whose "
               f"dimension-wise KL is below {MIN_KL:g} nats is inactive.{mig}")


def group_label(k: int) -> str:
    """'group 2: z3, z4', the heading of the k-th group of dimensions."""
    return f"group {k + 1}: " + ", ".join(f"z{d + 1}" for d in GROUPS[k])


def dim_label(d: int) -> str:
    """'z3' (or 'z3 · x' with known factors), with its group where the dimensions are grouped: 'z3 (group 2)'."""
    group = next(k for k, g in enumerate(GROUPS) if d in g)
    return f"{short_label(d)} (group {group + 1})" if GROUPED else short_label(d)


def zkey(d: int) -> str:
    return f"z_{rec.id}_{d}"


def code() -> np.ndarray:
    """The current code (L,), kept outside the slider widgets so it survives views that hide them."""
    return state.setdefault(f"code_{rec.id}", np.zeros(L, np.float32))


def set_code(z) -> None:
    state[f"code_{rec.id}"] = np.clip(np.asarray(z, np.float32), -SCALE, SCALE)
    for d in range(L):
        state[zkey(d)] = float(state[f"code_{rec.id}"][d])


def slider_moved(d: int) -> None:
    code()[d] = state[zkey(d)]
    state[f"moved_{rec.id}"] = d


def figure(image_fig, rows: int, groups: dict, lines: bool = True, title: str = "Decoded points") -> None:
    """Image data: the figure `image_fig()` from plots, sized to its `rows` of images. Vector data: the decoded
    points `groups` ({name: (n, D) path or (P, n, D) paths}) in data space, over the data cloud."""
    if data.is_image:
        st.plotly_chart(image_fig().update_layout(height=min(900, 110 + 95 * rows)))
    else:
        st.plotly_chart(plots.points_figure(groups, title, lines, background=data.x_train[:CLOUD_N]))


@st.cache_data(show_spinner="Encoding held-out points…", max_entries=8)
def probe_codes(run_id: str, ckpt: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """μ, labels and known factors of the first 1,000 held-out points under the weights at `ckpt`."""
    mu = encode_batched(model, data.x_eval[:1000]).mu.numpy().astype(np.float32)
    factors = None if data.factors_eval is None else data.factors_eval[:1000]
    return mu, None if data.y_eval is None else data.y_eval[:1000], factors


def colour_options(labels, factors) -> list[str]:
    """What the scatter can be coloured by: each known factor, and the class label unless a factor is the label."""
    names = list(data.factor_names or []) if factors is not None else []
    label_is_factor = labels is not None and any(np.array_equal(labels, factors[:, k]) for k in range(len(names)))
    return names + (["class"] if labels is not None and not label_is_factor else [])


def colouring(choice: str | None, labels, factors) -> dict:
    """`latent_scatter`'s colour arguments for `choice`: the class label, a categorical factor (one colour per
    level, class names where the factor is the label) or a continuous one (a colour scale)."""
    if choice is None or choice == "class":
        return dict(labels=labels, class_names=data.class_names)
    v = factors[:, data.factor_names.index(choice)]
    if not is_categorical(v):
        return dict(labels=None, values=v, colour_title=choice)
    is_label = labels is not None and np.array_equal(v, labels)
    return dict(labels=v.astype(int), class_names=data.class_names if is_label else None, colour_title=choice)


@common.guarded
def load_clicked() -> None:
    """plotly on_select callback: copy the clicked point's code into the sliders."""
    points = state["latent_click"].selection.points
    if points:
        mu = probe_codes(rec.id, step)[0]
        i = int(np.atleast_1d(points[0]["customdata"])[0])
        set_code(mu[i])
        state["clicked"] = [i, *state.get("clicked", [])][:2]


@st.fragment
@common.guarded
def explore() -> None:
    """Scatter, sliders and decoded image; the whole panel reruns alone when a slider moves or a point is clicked."""
    mu, labels, factors = probe_codes(rec.id, step)
    z = code()
    left, mid, right = st.columns([5, 3, 2] if data.is_image else [4, 3, 3])
    with left:
        dims = (0, min(1, L - 1))
        if L > 2:
            a, b = st.columns(2)
            dims = (a.selectbox("x axis", range(L), 0, key="sx", format_func=dim_label),
                    b.selectbox("y axis", range(L), 1, key="sy", format_func=dim_label))
        options = colour_options(labels, factors)
        choice = st.selectbox("colour by", options, key="scatter_colour") if len(options) > 1 else None
        fig = plots.latent_scatter(mu, dims=dims, marker=z, axis_titles=[short_label(d) for d in dims],
                                   **colouring(choice, labels, factors))
        st.plotly_chart(fig, key="latent_click", on_select=load_clicked, selection_mode="points")
        st.caption("Click a point: its code μ(x) goes into the sliders (★ marks the sliders' code).")
    with mid:
        extra = []
        if L > SHOWN_DIMS:
            extra = st.multiselect("More dimensions", list(range(SHOWN_DIMS, L)), key=f"extra_{rec.id}",
                                   format_func=dim_label)
        firsts = {g[0]: k for k, g in enumerate(GROUPS)} if GROUPED else {}
        for d in [*range(min(L, SHOWN_DIMS)), *extra]:
            if d in firsts:
                st.caption(group_label(firsts[d]))
            if zkey(d) not in state:
                state[zkey(d)] = float(z[d])
            st.slider(short_label(d), -SCALE, SCALE, step=0.05, key=zkey(d), on_change=slider_moved, args=(d,))
        st.button("Reset to 0", key="reset_z", on_click=set_code, args=(np.zeros(L),))
    with right:
        x = decode_batched(model, z[None])  # (1, D)
        if data.is_image:
            img = app_state.as_images(x, data.shape)[0]
            st.image(app_state.upscale(img, max(1, 200 // data.shape[-1])), caption="g(z)", output_format="PNG")
        else:
            decoded_point(z, x)
    factor_caption()


def decoded_point(z: np.ndarray, x: np.ndarray) -> None:
    """Vector data: g(z) (1, D) as a star over the data cloud, on the path g traces while the last moved slider
    sweeps [−SCALE, SCALE] (the other coordinates at the sliders' code)."""
    d = state.get(f"moved_{rec.id}", 0)
    _, path = traversal_grid(model, z, np.linspace(-SCALE, SCALE, 31), [d])  # (1, 31, D)
    groups = {f"g(z) as {short_label(d)} sweeps ±{SCALE:g}": path[0], "g(z)": x}
    fig = plots.points_figure(groups, "g(z) in data space", background=data.x_train[:CLOUD_N], highlight="g(z)")
    st.plotly_chart(fig.update_layout(height=420, legend=dict(orientation="h", y=-0.25)), key="gz_points")


def grid() -> None:
    values = np.linspace(-SCALE, SCALE, st.slider("values per dimension", 5, 15, 9, 2, key="n_values"))
    dims = list(range(min(L, SHOWN_DIMS)))
    _, images = traversal_grid(model, code(), values, dims)  # (dims, V, D)
    st.caption(f"Row r sweeps z_r over [−{SCALE:g}, {SCALE:g}]; the other coordinates stay at the sliders' code.")
    factor_caption()
    labels = [FACTORS.latents_[d].label for d in dims] if FACTORS else None
    blocks = [(group_label(k), [d for d in g if d in dims]) for k, g in enumerate(GROUPS)] if GROUPED else [("", dims)]
    for heading, rows in [(h, r) for h, r in blocks if r]:  # one grid per group of dimensions (rows of `images`)
        if heading:
            st.markdown(f"**{heading}**")
        names = [f"z{d + 1}" if labels is None else labels[d] for d in rows]
        shown = None if labels is None else names  # row labels: the factors, else plots' 'z<d+1>'
        figure(lambda r=rows, t=shown: plots.traversal_figure(images[r], data.shape, values, r, t), len(rows),
               dict(zip(names, images[rows])), title="Latent traversals")
    if data.is_image:
        png = app_state.png_bytes(np.nan_to_num(plots.mosaic(images, data.shape), nan=1.0), 4)
        st.download_button("Download grid (PNG)", png, file_name=f"{rec.id}-step{step}-traversal.png",
                           mime="image/png", icon=":material/download:", key="grid_png")
    if L >= 2:
        res, (a, b) = 12, manifold_dims()
        codes, images = decode_manifold(model, res, dims=(a, b), base=code())
        st.caption(f"The decoded manifold over z{a + 1} and z{b + 1} at prior quantiles, other coordinates at the "
                   "sliders' code.")
        titles = (short_label(a), short_label(b))
        figure(lambda: plots.manifold_figure(images, data.shape, codes[0, :, 0], codes[:, 0, 1], titles), res,
               {f"rows: {titles[0]} varies": images, f"columns: {titles[1]} varies": images.transpose(1, 0, 2)},
               title="Decoded latent manifold")


def manifold_dims() -> tuple[int, int]:
    """The two dimensions of the decoded manifold: z1 and z2, or the first two of a group the user picks."""
    choices = [k for k, g in enumerate(GROUPS) if len(g) > 1] if GROUPED else []
    if not choices:
        return 0, 1
    k = st.selectbox("manifold of", choices, key="manifold_group", format_func=group_label)
    return GROUPS[k][0], GROUPS[k][1]


def interpolation() -> None:
    mu = probe_codes(rec.id, step)[0]
    clicked = state.get("clicked", [])
    c1, c2, c3 = st.columns(3)
    a = c1.number_input("from held-out example", 0, len(mu) - 1, clicked[1] if len(clicked) > 1 else 0, key="ia")
    b = c2.number_input("to held-out example", 0, len(mu) - 1, clicked[0] if clicked else 1, key="ib")
    n = c3.slider("steps", 3, 16, 10, key="isteps")
    strips = {kind: interpolate(model, mu[a], mu[b], n, kind)[1] for kind in ("lerp", "slerp")}
    figure(lambda: plots.interpolation_strip(strips, data.shape), 2, strips, title="Interpolation")
    st.caption("The last two points you clicked in the scatter are the default endpoints.")


@st.cache_data(show_spinner="Loading the ex-post samplers…", max_entries=8)
def gallery(run_id: str, ckpt: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """n decoded samples (n, D) each from the prior and from the run's saved samplers of step `ckpt`."""
    from vaeviz.samplers import decode_samples, fitted_samplers

    fitted = fitted_samplers(model, data.x_train, common.store().artifact_dir(run_id), ckpt,
                             fit_on=setup.objective.ex_post_fit, seed=rec.config.train.seed)
    prior = decode_batched(model, np.random.default_rng(seed).standard_normal((n, L)).astype(np.float32))
    return {"prior N(0, I)": prior,
            "single Gaussian": decode_samples(model, fitted["gaussian"], n, seed).reshape(n, -1),
            "GMM (k = 10)": decode_samples(model, fitted["gmm"], n, seed).reshape(n, -1)}


def samples() -> None:
    seed = st.number_input("seed", 0, 10_000, 0, key="gseed")
    galleries = gallery(rec.id, step, 20, seed)
    st.caption("20 samples each: from the prior, and from densities fitted to the training codes (codes z ~ q(z|x) "
               "for a stochastic encoder, as σ-VAE §2.1 fits the aggregate posterior; E(x) for a deterministic one).")
    figure(lambda: plots.sample_gallery(galleries, data.shape), 6, galleries, lines=False, title="Samples")


VIEWS = {"Sliders": explore, "Traversal grid": grid, "Interpolation": interpolation, "Samples": samples}
view = st.segmented_control("View", list(VIEWS), default="Sliders", key="tview", required=True)
VIEWS[view or "Sliders"]()
