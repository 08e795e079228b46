"""Plotly figure builders for every view: pure functions from arrays and metric frames to go.Figure.

Metric frames are long tables with columns step, split, name, value (`RunStore.metrics`). Nothing
here trains, reads the store, or imports streamlit. Conventions: the information plane has rate R on
x and distortion D on y (Alemi et al. 2018, fig. 1), with iso-ELBO guides D + R = const; images are
arrays (..., D) reshaped to (C, H, W) and tiled into one heat map (grey) or RGB image.
"""

from __future__ import annotations

import html
import math
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, unlabel_rgb
from plotly.subplots import make_subplots

CLASS_COLOURS = qualitative.Plotly + qualitative.D3
RUN_COLOURS = qualitative.Dark24
GUIDE = dict(color="rgba(120,120,120,0.6)", dash="dot", width=1)


def literal(text) -> str:
    """A run or class name as literal text in a figure: plotly renders a subset of HTML (and entities) in names,
    titles and table cells, so `&`, `<` and `>` are escaped."""
    return html.escape(str(text), quote=False)


def wide(df: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    """One row per step, one column per metric name, of the rows of `split`."""
    rows = df[df["split"] == split]
    return rows.pivot_table(index="step", columns="name", values="value", aggfunc="last").sort_index()


def _base(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=60, r=20, t=60, b=50))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def metric_lines(df: pd.DataFrame, names, split: str = "train", log_y: bool = False, title: str = "") -> go.Figure:
    """Each named metric against step (the Train page's live curves)."""
    w, fig = wide(df, split), go.Figure()
    for name in names:
        if name in w:
            col = w[name].dropna()
            fig.add_trace(go.Scatter(x=col.index, y=col.values, mode="lines", name=name))
    if log_y:
        fig.update_yaxes(type="log")
    return _base(fig, title, "step", "value")


# ----------------------------------------------------------------------------- information plane


def _rd(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """(step, rate, distortion) rows of `split`, falling back to train when the split has none."""
    w = wide(df, split)
    if not {"rate", "distortion"} <= set(w.columns):
        w = wide(df, "train")
    return w[["rate", "distortion"]].dropna() if {"rate", "distortion"} <= set(w.columns) else w.iloc[:0]


def _iso_elbo(fig: go.Figure, xr: tuple[float, float], yr: tuple[float, float], n: int) -> None:
    """Dotted lines D + R = c across the visible box, one legend entry for all."""
    lo, hi = xr[0] + yr[0], xr[1] + yr[1]
    for i, c in enumerate(np.linspace(lo, hi, n + 2)[1:-1]):
        fig.add_trace(go.Scatter(x=[xr[0], xr[1]], y=[c - xr[0], c - xr[1]], mode="lines+text", line=GUIDE,
                                 text=[f"{c:.3g}", ""], textposition="top right",
                                 textfont=dict(size=9, color="gray"), name="iso-ELBO D + R = const",
                                 legendgroup="iso", showlegend=i == 0, hovertemplate=f"D + R = {c:.4g}<extra></extra>"))


def information_plane(runs: dict[str, pd.DataFrame], split: str = "eval", guides: int = 6,
                      frontier: bool = True, title: str = "Information plane") -> go.Figure:
    """Distortion vs rate: one trajectory per run (markers coloured by step), iso-ELBO guides, frontier."""
    fig, finals, points = go.Figure(), [], []
    for i, (run, df) in enumerate(runs.items()):
        rd = _rd(df, split)
        if rd.empty:
            continue
        fig.add_trace(go.Scatter(  # the hover box's side label is the trace's name
            x=rd["rate"], y=rd["distortion"], mode="lines+markers", name=literal(run), customdata=rd.index,
            line=dict(color=RUN_COLOURS[i % len(RUN_COLOURS)], width=1.5),
            marker=dict(color=rd.index, coloraxis="coloraxis", size=7),
            hovertemplate="R %{x:.3g}, D %{y:.4g}, step %{customdata}"))
        finals.append((rd["rate"].iloc[-1], rd["distortion"].iloc[-1]))
        points.append(rd.to_numpy())
    if points:
        pts = np.concatenate(points)
        xr, yr = _padded(np.append(pts[:, 0], 0.0)), _padded(pts[:, 1])
        _iso_elbo(fig, xr, yr, guides)
        fig.update_xaxes(range=list(xr))
        fig.update_yaxes(range=list(yr))
    if frontier and len(finals) >= 2:
        fr = np.array(sorted(finals))
        fig.add_trace(go.Scatter(x=fr[:, 0], y=fr[:, 1], mode="lines", name="frontier (final points)",
                                 line=dict(color="black", width=2, dash="dash")))
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="step", x=1.02)),
                      legend=dict(orientation="h", y=-0.2))
    return _base(fig, title, "rate R (nats)", "distortion D (nats)")


def _padded(values: np.ndarray, frac: float = 0.08) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = frac * (hi - lo) if hi > lo else max(1.0, abs(hi) * 0.1)
    return lo - pad, hi + pad


BETA_TERMS = {"rate": ("rate R", "#1f77b4"), "distortion": ("distortion D", "#d62728"),
              "neg_elbo": ("−ELBO = D + R", "black")}  # column of `app_state.sweep_points` -> (name, colour)
BETA_TICKS = 8  # at most this many β labels on an axis that spans less than two powers of ten


def beta_curves(points: pd.DataFrame, title: str = "Rate, distortion and −ELBO against β") -> go.Figure:
    """R, D and −ELBO = D + R (nats per example, the runs' own decoder) against β on a log axis, one panel each
    (their scales differ: R can be a fraction of a nat where D is tens), one point per run of a β sweep (rows of
    `app_state.sweep_points`: beta, run, step, split, rate, distortion, neg_elbo), each run named in its hover
    box; a dotted guide at β = 1, where D + βR is the negative ELBO itself."""
    pts = points.sort_values("beta")
    custom = np.column_stack([pts["run"].map(literal), pts["step"], pts["split"]]).astype(object)  # (N, 3)
    betas = pts["beta"].tolist()
    fig = make_subplots(rows=len(BETA_TERMS), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[label for label, _ in BETA_TERMS.values()])
    for row, (column, (label, colour)) in enumerate(BETA_TERMS.items(), start=1):
        fig.add_trace(go.Scatter(
            x=betas, y=pts[column].tolist(), mode="lines+markers", name=label, customdata=custom,
            line=dict(color=colour, width=2), marker=dict(color=colour, size=9),
            hovertemplate=f"%{{customdata[0]}}<br>β = %{{x:g}} · {label} = %{{y:.4g}} nats"
                          "<br>step %{customdata[1]} (%{customdata[2]})<extra></extra>"), row, 1)
        if betas and betas[0] <= 1 <= betas[-1]:
            ys = pts[column]
            fig.add_trace(go.Scatter(x=[1, 1], y=[float(ys.min()), float(ys.max())], mode="lines", line=GUIDE,
                                     name="β = 1: the ELBO", legendgroup="elbo", showlegend=row == 1,
                                     hoverinfo="skip"), row, 1)
        fig.update_yaxes(title_text="nats", row=row, col=1)
    _beta_axis(fig, np.asarray(betas))
    fig.update_xaxes(title_text="β (log scale)", row=len(BETA_TERMS), col=1)
    fig.update_layout(title=title, template="plotly_white", height=720, margin=dict(l=60, r=20, t=80, b=50),
                      legend=dict(orientation="h", y=-0.12))
    return fig


def _beta_axis(fig: go.Figure, betas: np.ndarray) -> None:
    """A log β axis without minor labels: a tick per power of ten when two or more lie in the range, else ticks
    at (up to BETA_TICKS of) the sweep's β."""
    if not len(betas):
        return
    lo, hi = np.log10(betas.min()) - 1e-9, np.log10(betas.max()) + 1e-9  # (1e-9: 1000 is a power of ten)
    decades = int(np.floor(hi) - np.ceil(lo)) + 1  # powers of ten within [min β, max β]
    if decades >= 2:
        fig.update_xaxes(type="log", dtick=1, tickformat="~g")
    else:
        shown = betas[::-(-len(betas) // BETA_TICKS)]  # every k-th β, k = ceil(n / BETA_TICKS)
        fig.update_xaxes(type="log", tickmode="array", tickvals=shown.tolist(), ticktext=[f"{b:g}" for b in shown])


def against_beta(series: dict, title: str, y: str) -> go.Figure:
    """One family of runs per colour ({name: {β: [value of each seed, ...]}}) on a log β axis: a line through the
    mean at each β and a dot per seed, e.g. MIG against β for β-VAE and β-TCVAE (Chen et al. 2018); names are
    literal text."""
    fig = go.Figure()
    for i, (name, by_beta) in enumerate(series.items()):
        betas = sorted(by_beta)
        colour, label = RUN_COLOURS[i % len(RUN_COLOURS)], literal(name)
        fig.add_trace(go.Scatter(x=betas, y=[float(np.mean(by_beta[b])) for b in betas], mode="lines+markers",
                                 name=f"{label} (mean)", line=dict(color=colour, width=2), legendgroup=label,
                                 marker=dict(color=colour, size=10, symbol="diamond"),
                                 hovertemplate=f"{label}<br>β = %{{x:g}} · mean %{{y:.3g}}<extra></extra>"))
        xs = [b for b in betas for _ in by_beta[b]]
        fig.add_trace(go.Scatter(x=xs, y=[v for b in betas for v in by_beta[b]], mode="markers", name=f"{label} (each)",
                                 marker=dict(color=colour, size=7, opacity=0.6), legendgroup=label,
                                 hovertemplate=f"{label}<br>β = %{{x:g}} · %{{y:.3g}}<extra></extra>"))
    _beta_axis(fig, np.array(sorted({b for by_beta in series.values() for b in by_beta}), dtype=float))
    fig.update_xaxes(type="log")
    return _base(fig, title, "β (log scale)", y)


def grouped_bars(rows: dict, keys: dict, title: str, y: str) -> go.Figure:
    """Bars side by side: one group per run ({run label: {key: value}}), one bar per key of `keys` ({key: legend
    name}, in order), e.g. the MI / TC / dimension-wise KL terms of each run's KL (Chen et al. 2018, eq. 2)."""
    labels = [literal(r) for r in rows]
    fig = go.Figure([go.Bar(x=labels, y=[rows[r].get(k) for r in rows], name=literal(name),
                            marker_color=CLASS_COLOURS[i % len(CLASS_COLOURS)])
                     for i, (k, name) in enumerate(keys.items())])
    fig.update_layout(barmode="group")
    return _base(fig, title, "", y)


def _pair(df: pd.DataFrame, split: str, x: str, y: str) -> pd.DataFrame:
    """(step, x, y) rows of `split`, falling back to train when the split lacks either metric."""
    for part in (split, "train"):
        w = wide(df, part)
        if {x, y} <= set(w.columns):
            return w[[x, y]].dropna()
    return pd.DataFrame(columns=[x, y])


def code_plane(runs: dict[str, pd.DataFrame], split: str = "eval",
               title: str = "Distortion against code norm ½‖z‖²") -> go.Figure:
    """Distortion D against ½‖z‖² for deterministic encoders (RAE, AE), one trajectory per run, markers coloured
    by step. Without q(z|x) there is no rate R and no ELBO; ½‖z‖² (mean over examples) is the code penalty
    L_z^RAE that RAE puts where the VAE puts R (Ghosh et al. 2020, eq. 11). No iso-ELBO guides."""
    fig = go.Figure()
    for i, (run, df) in enumerate(runs.items()):
        zd = _pair(df, split, "z_norm", "distortion")
        if zd.empty:
            continue
        fig.add_trace(go.Scatter(
            x=zd["z_norm"], y=zd["distortion"], mode="lines+markers", name=f"{literal(run)} (D vs ½‖z‖²)",
            customdata=zd.index, line=dict(color=RUN_COLOURS[i % len(RUN_COLOURS)], width=1.5),
            marker=dict(color=zd.index, coloraxis="coloraxis", size=7),
            hovertemplate="½‖z‖² %{x:.3g}, D %{y:.4g}, step %{customdata}"))
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="step", x=1.02)),
                      legend=dict(orientation="h", y=-0.2))
    return _base(fig, title, "code norm ½‖z‖² (mean over examples; no rate without q(z|x))",
                 "distortion D = ‖x − g(z)‖² (squared error)")


def rate_mse_plane(runs: dict[str, pd.DataFrame], split: str = "eval", frontier=None, kappa2: float | None = None,
                   marks: dict | None = None, mse_range: tuple[float, float] | None = None,
                   title: str = "Information plane in (rate, MSE)", x: str = "rate",
                   x_title: str = "rate R (nats)", by_step: bool = True) -> go.Figure:
    """The MSE per data dimension against the rate R, one trajectory per run (markers coloured by step, MSE on a
    log axis): the information plane with distortion on one scale for every decoder (a fixed-σ Gaussian, GECO's
    calibrated σ*, ...), whose D in nats is not. `frontier`: (x, mse) points drawn as one dashed line, in the
    given order; `kappa2`: a horizontal line at GECO's tolerance κ²; `marks`: {label: (x, mse)} as stars;
    `mse_range`: the visible MSE (low, high), e.g. to leave the untrained start above the view; `x`: the metric on
    the horizontal axis (default the rate; e.g. a marginal KL), titled `x_title`; `by_step=False`: markers in their
    run's colour (for one point per run) instead of coloured by step."""
    fig = go.Figure()
    for i, (run, df) in enumerate(runs.items()):
        rm = _pair(df, split, x, "mse")
        if rm.empty:
            continue
        fig.add_trace(go.Scatter(
            x=rm[x], y=rm["mse"], mode="lines+markers", name=literal(run), customdata=rm.index,
            line=dict(color=RUN_COLOURS[i % len(RUN_COLOURS)], width=1.5),
            marker=dict(color=rm.index, coloraxis="coloraxis", size=7) if by_step else
            dict(color=RUN_COLOURS[i % len(RUN_COLOURS)], size=11),
            hovertemplate="%{x:.3g}, MSE %{y:.4g}, step %{customdata}"))
    if frontier is not None and len(frontier):
        fr = np.asarray(frontier, dtype=float)  # (P, 2): x, mse
        fig.add_trace(go.Scatter(x=fr[:, 0], y=fr[:, 1], mode="lines", name="frontier (final points)",
                                 line=dict(color="gray", width=2, dash="dash")))
    if kappa2 is not None:  # a trace, not add_hline: an annotation on a log axis would need log10(κ²)
        right = max((max(t.x) for t in fig.data), default=1.0)
        fig.add_trace(go.Scatter(x=[0.0, right], y=[kappa2, kappa2], mode="lines", name=f"κ² = {kappa2:.3g}",
                                 line=dict(color="crimson", dash="dot")))
    for label, (at, mse) in (marks or {}).items():
        fig.add_trace(go.Scatter(x=[at], y=[mse], mode="markers", name=literal(label),
                                 marker=dict(symbol="star", size=16, color="orange", line=dict(color="black", width=1)),
                                 hovertemplate="%{x:.3g}, MSE %{y:.4g}"))
    fig.update_yaxes(type="log", range=None if mse_range is None else [math.log10(v) for v in mse_range])
    fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="step", x=1.02)),
                      legend=dict(orientation="h", y=-0.2))
    return _base(fig, title, x_title, "MSE per data dimension (log)")


# ----------------------------------------------------------------------------- tiling and holes


def _joined(shapes) -> tuple[np.ndarray, np.ndarray]:
    """Polylines (P, T, 2) joined into one x, y pair separated by NaN (one trace for many shapes)."""
    shapes = np.asarray(shapes, dtype=float)
    gap = np.full((shapes.shape[0], 1, 2), np.nan)
    flat = np.concatenate([shapes, gap], 1).reshape(-1, 2)
    return flat[:, 0], flat[:, 1]


def _circles(radii=(1, 2, 3), n: int = 120) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n + 1)
    return np.stack([np.stack([r * np.cos(t), r * np.sin(t)], 1) for r in radii])  # (R, T, 2)


def _rgba(colour: str, alpha: float) -> str:
    """'#rrggbb' or 'rgb(r,g,b)' with an alpha channel."""
    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    return f"rgba({int(r)},{int(g)},{int(b)},{alpha})"


def _class_groups(n: int, labels, class_names):
    """(name, colour, indices) per class; a single group when there are no labels."""
    if labels is None:
        return [("posteriors", CLASS_COLOURS[0], np.arange(n))]
    labels = np.asarray(labels)
    out = []
    for k in np.unique(labels):
        name = class_names[int(k)] if class_names is not None and 0 <= int(k) < len(class_names) else f"class {k}"
        out.append((literal(name), CLASS_COLOURS[int(k) % len(CLASS_COLOURS)], np.flatnonzero(labels == k)))
    return out


def tiling(outlines=None, labels=None, class_names=None, samples=None, axis_titles=("z₁", "z₂"),
           title: str = "Posterior tiling") -> go.Figure:
    """1σ ellipses (P, T, 2) filled per class, or posterior samples (P, n, 2), over the prior's 1σ circle."""
    data = outlines if outlines is not None else samples
    fig = go.Figure()
    for name, colour, idx in _class_groups(len(data), labels, class_names):
        if outlines is not None:
            x, y = _joined(np.asarray(outlines)[idx])
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", fill="toself", name=name, fillcolor=_rgba(colour, 0.12),
                                     line=dict(color=_rgba(colour, 0.8), width=1), hoverinfo="name"))
        else:
            pts = np.asarray(samples)[idx].reshape(-1, 2)
            fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=name,
                                     marker=dict(color=colour, size=3, opacity=0.5)))
    x, y = _joined(_circles((1,)))
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="prior 1σ", line=dict(color="black", dash="dash")))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _base(fig, title, *axis_titles)


def reparameterisation(outlines, centres, samples, labels=None, class_names=None, axis_titles=("z₁", "z₂"),
                       title: str = "Reparameterisation z = μ + A ε") -> go.Figure:
    """The reparameterisation trick drawn: each posterior's 1σ ellipse (P, T, 2) filled per class (`tiling`), its
    mean μ (P, 2) as a cross, and its samples z = μ + A ε (P, n, 2) as dots, each joined to its μ by a thin line:
    the path by which a gradient at z reaches μ and A (AAᵀ = Σ)."""
    fig = tiling(outlines, labels, class_names, axis_titles=axis_titles, title=title)
    centres, samples = np.asarray(centres, dtype=float), np.asarray(samples, dtype=float)
    starts = np.broadcast_to(centres[:, None], samples.shape)  # (P, n, 2)
    pairs = np.stack([starts, samples], 2).reshape(-1, 2, 2)  # (P·n, 2, 2): μ, then z
    x, y = _joined(pairs)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="z − μ = A ε", hoverinfo="skip",
                             line=dict(color="rgba(80,80,80,0.45)", width=1)))
    pts = samples.reshape(-1, 2)
    fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name="samples z = μ + A ε",
                             marker=dict(color="black", size=4, opacity=0.7)))
    fig.add_trace(go.Scatter(x=centres[:, 0], y=centres[:, 1], mode="markers", name="means μ",
                             marker=dict(color="rgb(214,39,40)", size=11, symbol="x")))
    return fig


TILE_PX = 420  # height of one row of `tiling_panels`


def tiling_panels(panels: list[dict], columns: int | None = None, title: str = "Posterior tilings") -> go.Figure:
    """Several runs' tilings side by side, one legend for all: each panel is a dict with `title`, `outlines`
    (P, T, 2) 1σ ellipses or `points` (P, 2) codes (a deterministic encoder), `labels` (P,) or None,
    `class_names` and `axes` (x and y titles). A class has one colour (`CLASS_COLOURS[label]`) and one legend
    entry for every panel (clicking it hides the class everywhere); the prior's 1σ circle is in every panel. Each
    panel is square: both axes at one scale over one range, [−r, r] around the prior with the panel's shapes
    inside. `columns` per row (default: all in one row)."""
    n = max(len(panels), 1)
    cols = columns or n
    rows = math.ceil(n / cols)
    fig = make_subplots(rows, cols, subplot_titles=[literal(p["title"]) for p in panels],
                        horizontal_spacing=0.22 / cols, vertical_spacing=0.3 / rows)
    shown = set()
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        shapes = panel.get("outlines") if panel.get("outlines") is not None else panel["points"]
        shapes = np.asarray(shapes, dtype=float)
        for name, colour, idx in _class_groups(len(shapes), panel.get("labels"), panel.get("class_names")):
            fig.add_trace(_class_trace(shapes[idx], panel.get("outlines") is not None, name, colour,
                                       name not in shown), row, col)
            shown.add(name)
        x, y = _joined(_circles((1,)))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="prior 1σ", legendgroup="prior",
                                 showlegend="prior 1σ" not in shown, line=dict(color="black", dash="dash")), row, col)
        shown.add("prior 1σ")
        r = max(1.15, 1.05 * float(np.nanmax(np.abs(shapes)))) if np.isfinite(shapes).any() else 1.15
        anchor = "x" if i == 0 else f"x{i + 1}"
        fig.update_xaxes(range=[-r, r], title_text=panel["axes"][0], constrain="domain", row=row, col=col)
        fig.update_yaxes(range=[-r, r], title_text=panel["axes"][1], scaleanchor=anchor, scaleratio=1,
                         constrain="domain", row=row, col=col)
    fig.update_layout(title=title, template="plotly_white", height=TILE_PX * rows + 60,
                      legend=dict(title=dict(text="class"), x=1.02, y=1, itemsizing="constant", tracegroupgap=0),
                      margin=dict(l=60, r=20, t=80, b=50))
    return fig


def _class_trace(shapes: np.ndarray, outlines: bool, name: str, colour: str, showlegend: bool) -> go.Scatter:
    """One class of a `tiling_panels` panel: its ellipses (P, T, 2) filled, or its codes (P, 2) as markers."""
    common = dict(name=name, legendgroup=name, showlegend=showlegend, hoverinfo="name")
    if outlines:
        x, y = _joined(shapes)
        return go.Scatter(x=x, y=y, mode="lines", fill="toself", fillcolor=_rgba(colour, 0.12),
                          line=dict(color=_rgba(colour, 0.8), width=1), **common)
    return go.Scatter(x=shapes[:, 0], y=shapes[:, 1], mode="markers", marker=dict(color=colour, size=4, opacity=0.7),
                      **common)


def image_markers(fig: go.Figure, centres, images, size: float | None = None, name: str = "examples") -> go.Figure:
    """A copy of `fig` with each image (N, H, W) or (N, H, W, 3) in [0, 1] drawn centred on its point of `centres`
    (N, 2) in data coordinates (e.g. a training example's decoded g(μ) at its μ on a tiling), `size` data units
    wide (default: an eighth of the points' spread, at least 0.25), and the points numbered 1..N beside them."""
    from PIL import Image

    fig, centres = go.Figure(fig), np.asarray(centres, dtype=float)
    spread = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 0.0
    size = size or max(spread / 8, 0.25)
    for (cx, cy), img in zip(centres, np.asarray(images)):
        pixels = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
        fig.add_layout_image(source=pixels, x=cx, y=cy, xref="x", yref="y", sizex=size, sizey=size, xanchor="center",
                             yanchor="middle", sizing="stretch", layer="below", opacity=0.85)
    labels = [str(i + 1) for i in range(len(centres))]
    fig.add_trace(go.Scatter(x=centres[:, 0], y=centres[:, 1] + 0.6 * size, mode="text", text=labels, name=name,
                             textfont=dict(size=13, color="black"), hoverinfo="skip"))
    return fig


def holes(grid, tau: float = 0.1, hole_fraction: float | None = None, marginal_kl: float | None = None,
          floor: float = 25.0, axis_titles=("z₁", "z₂")) -> go.Figure:
    """log q(z) heat map and the hole map q/p < τ, both with the prior's 1σ/2σ/3σ circles.

    `grid` has xs (Rx,), ys (Ry,), log_q and log_p (Ry, Rx) (an `AggregatePosterior.grid` result);
    log q is shown down to `floor` nats below its maximum.
    """
    log_q = np.asarray(grid.log_q)
    mask = (log_q - np.asarray(grid.log_p) < math.log(tau)).astype(float)
    fig = make_subplots(1, 2, subplot_titles=("log q(z)", f"holes: q(z)/p(z) < {tau:g}"),
                        horizontal_spacing=0.16)
    fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=np.maximum(log_q, log_q.max() - floor), name="log q(z)",
                             colorscale="Viridis", colorbar=dict(title="log q", x=0.44, len=0.9)), 1, 1)
    fig.add_trace(go.Heatmap(x=grid.xs, y=grid.ys, z=mask, name=f"q/p < {tau:g}", showscale=False, zmin=0, zmax=1,
                             colorscale=[[0, "rgb(245,245,245)"], [1, "rgb(200,30,45)"]]), 1, 2)
    x, y = _joined(_circles())
    for col in (1, 2):
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="prior 1σ, 2σ, 3σ", legendgroup="prior",
                                 showlegend=col == 2, line=dict(color="white" if col == 1 else "black", width=1,
                                                                dash="dash")), 1, col)
    rng = [float(grid.xs[0]), float(grid.xs[-1])], [float(grid.ys[0]), float(grid.ys[-1])]
    fig.update_xaxes(range=rng[0], title_text=axis_titles[0])
    fig.update_yaxes(range=rng[1], title_text=axis_titles[1], scaleanchor="x")
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    parts = [f"hole fraction {hole_fraction:.3f}" if hole_fraction is not None else "",
             f"marginal KL {marginal_kl:.3f} nats" if marginal_kl is not None else ""]
    fig.update_layout(title="Aggregate posterior and holes" + "".join(f" · {p}" for p in parts if p),
                      template="plotly_white", legend=dict(orientation="h", y=-0.15))
    return fig


# ----------------------------------------------------------------------------- objective dynamics


def _col(w: pd.DataFrame, name: str) -> pd.Series:
    return w[name].dropna() if name in w else pd.Series(dtype=float)


def sigma_evolution(df: pd.DataFrame, sigma2_map=None, image_shape=None, map_step: int | None = None) -> go.Figure:
    """σ² (log scale), the batch MSE (the closed-form σ*²) and β = 2σ² against step; per-dimension σ² map."""
    w = wide(df, "train")
    cols = 2 if sigma2_map is not None else 1
    fig = make_subplots(1, cols, column_widths=[0.62, 0.38][:cols], horizontal_spacing=0.14,
                        subplot_titles=["σ² against step", f"per-dimension σ² (step {map_step})"][:cols])
    lo, hi = _col(w, "sigma2_min"), _col(w, "sigma2_max")
    if len(lo) and len(hi):
        fig.add_trace(go.Scatter(x=hi.index, y=hi.values, mode="lines", line=dict(width=0), showlegend=False,
                                 name="σ² max", hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Scatter(x=lo.index, y=lo.values, mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor="rgba(99,110,250,0.2)", name="σ² min–max"), 1, 1)
    s2, mse = _col(w, "sigma2"), _col(w, "mse")
    fig.add_trace(go.Scatter(x=s2.index, y=s2.values, mode="lines", name="σ²", line=dict(color="rgb(99,110,250)")),
                  1, 1)
    fig.add_trace(go.Scatter(x=mse.index, y=mse.values, mode="lines", name="batch MSE (closed-form σ*²)",
                             line=dict(color="rgb(239,85,59)", dash="dot")), 1, 1)
    fig.add_trace(go.Scatter(x=s2.index, y=2 * s2.values, mode="lines", name="β = 2σ²",
                             line=dict(color="rgb(0,160,120)", dash="dash")), 1, 1)
    fig.update_yaxes(title_text="σ², MSE, β (log)", row=1, col=1,
                     **log_axis(np.concatenate([hi.values, lo.values, s2.values, 2 * s2.values, mse.values])))
    fig.update_xaxes(title_text="step", row=1, col=1)
    if sigma2_map is not None:
        _sigma_map(fig, np.asarray(sigma2_map), image_shape)
    fig.update_layout(title="Decoder variance σ²", template="plotly_white",
                      legend=dict(orientation="h", y=-0.2, traceorder="normal"))
    return fig


SIGMA_SCALE = "Viridis"  # sequential, never wrapping: the smallest σ² darkest, the largest brightest


def _sigma_map(fig: go.Figure, sigma2: np.ndarray, image_shape) -> None:
    """log₁₀ σ² per data dimension: an image (channel mean) on a sequential scale for images, bars otherwise."""
    if image_shape is not None and len(image_shape) == 3:
        img = np.log10(sigma2.reshape(image_shape).mean(0))  # (H, W)
        fig.add_trace(go.Heatmap(z=img, name="log₁₀ σ² per pixel", colorscale=SIGMA_SCALE,
                                 colorbar=dict(title=dict(text="log₁₀ σ²<br>(dark: small)"), x=1.0)), 1, 2)
        fig.update_yaxes(autorange="reversed", scaleanchor="x2", showticklabels=False, row=1, col=2)
        fig.update_xaxes(showticklabels=False, row=1, col=2)
    else:
        fig.add_trace(go.Bar(x=[f"x{i + 1}" for i in range(len(sigma2))], y=sigma2, name="σ² per dimension"), 1, 2)
        fig.update_yaxes(row=1, col=2, **log_axis(sigma2))


def log_axis(values, max_ticks: int = 8) -> dict:
    """Settings of a log axis over positive `values` without cluttered labels: labelled ticks at the decades
    10^k (at 1, 2, 5 × 10^k where the values span under 1.5 decades; thinned to about `max_ticks`), a range from
    the labelled tick at or below the smallest value to the one above or at the largest (padded a little), so at
    least two labels show, and faint unlabelled minor grid lines at 1–9 × 10^k."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return dict(type="log")
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    steps = (1,) if math.log10(v.max() / v.min()) >= 1.5 else (1, 2, 5)
    ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in steps]
    below = max(t for t in ticks if t <= v.min())
    above = min(t for t in ticks if t >= v.max() and t > below)  # (steps 1, 2, 5 leave one above a lone value)
    ticks = [t for t in ticks if below <= t <= above]
    thinned = ticks[:: math.ceil(len(ticks) / max_ticks)]
    ticks = thinned if thinned[-1] == above else [*thinned, above]  # the range's two ends stay labelled
    minor = [m * 10.0**k for k in range(lo, hi + 1) for m in range(1, 10)]
    lo_end, hi_end = math.log10(below), math.log10(above)
    pad = 0.04 * (hi_end - lo_end)  # a point (or a bar's top) at a labelled end stays inside the plot
    return dict(type="log", tickmode="array", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                range=[lo_end - pad, hi_end + pad],
                minor=dict(tickmode="array", tickvals=minor, ticks="", showgrid=True, gridcolor="rgba(0,0,0,0.04)"))


def sigma_spread(sigma2_per_image, step: int | None = None, sigma_min: float | None = None) -> go.Figure:
    """Histogram of σ*_i = √σ*²_i over one training batch (σ-VAE's per-image closed form, σ*²_i = ‖x_i − g(z_i)‖²/d
    floored at σ_min²), with the one σ* the batch would share under the global closed form, √(mean σ*²_i)
    (Rybkin et al. 2021, eq. 6), and the floor σ_min when given."""
    sigma = np.sqrt(np.asarray(sigma2_per_image, dtype=np.float64))  # (B,)
    fig = go.Figure(go.Histogram(x=sigma, nbinsx=min(40, max(5, len(sigma) // 2)), name="σ*ᵢ per image",
                                 marker_color="rgb(99,110,250)"))
    shared = float(np.sqrt(np.mean(sigma**2))) if len(sigma) else float("nan")
    fig.add_vline(x=shared, line=dict(color="rgb(239,85,59)", dash="dash"),
                  annotation_text=f"shared σ* = {shared:.3g}", annotation_position="top right")
    if sigma_min is not None:
        fig.add_vline(x=sigma_min, line=dict(color="gray", dash="dot"), annotation_text=f"σ_min = {sigma_min:.3g}",
                      annotation_position="top left")
    where = "" if step is None else f" (the training batch of step {step})"
    return _base(fig, f"Spread of the per-image σ*ᵢ{where}", "σ*ᵢ = ‖xᵢ − g(zᵢ)‖ / √d", "images")


def first_constraint_step(w: pd.DataFrame) -> int | None:
    """The first step at which GECO's moving-average constraint C_ma ≤ 0 (None if never)."""
    c = _col(w, "c_ma")
    met = c[c <= 0]
    return int(met.index[0]) if len(met) else None


def geco_dynamics(df: pd.DataFrame) -> go.Figure:
    """λ (log scale); C_ma and the batch C with the boundary C = 0; MSE per dimension against κ²."""
    w = wide(df, "train")
    fig = make_subplots(3, 1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=(
        "Lagrange multiplier λ", "constraint C = MSE − κ² (moving average)", "reconstruction MSE per dimension"))
    lam, cb, cma, mse, k2 = (_col(w, n) for n in ("lambda", "c_batch", "c_ma", "mse", "kappa2"))
    fig.add_trace(go.Scatter(x=lam.index, y=lam.values, mode="lines", name="λ"), 1, 1)
    fig.add_trace(go.Scatter(x=cb.index, y=cb.values, mode="lines", name="C̄ batch",
                             line=dict(color="rgba(150,150,150,0.6)", width=1)), 2, 1)
    fig.add_trace(go.Scatter(x=cma.index, y=cma.values, mode="lines", name="C_ma"), 2, 1)
    steps = w.index.to_numpy()
    edges = [steps.min(), steps.max()] if len(steps) else [0, 1]
    fig.add_trace(go.Scatter(x=edges, y=[0, 0], mode="lines", name="C = 0", line=dict(color="black", dash="dash")),
                  2, 1)
    fig.add_trace(go.Scatter(x=mse.index, y=mse.values, mode="lines", name="MSE per dimension"), 3, 1)
    kappa2 = float(k2.iloc[-1]) if len(k2) else float("nan")
    fig.add_trace(go.Scatter(x=edges, y=[kappa2, kappa2], mode="lines", name=f"κ² = {kappa2:.3g}",
                             line=dict(color="crimson", dash="dash")), 3, 1)
    first = first_constraint_step(w)
    if first is not None:
        fig.add_vline(x=first, line=dict(color="green", dash="dot"))
        fig.add_annotation(x=first, y=0.9, xref="x2", yref="y2 domain", text=f" constraint met at step {first}",
                           showarrow=False, xanchor="left", font=dict(color="green"))
    fig.update_yaxes(type="log", title_text="λ (log)", row=1, col=1)
    fig.update_yaxes(title_text="C", row=2, col=1)
    fig.update_yaxes(type="log", title_text="MSE (log)", row=3, col=1)
    fig.update_xaxes(title_text="step", row=3, col=1)
    fig.update_layout(title="GECO dynamics", template="plotly_white", height=720, meta={"first_met": first})
    return fig


def geco_constraint_dynamics(df: pd.DataFrame, name: str, units: str, bounds_mse: bool) -> go.Figure:
    """`geco_dynamics` for any GECO constraint kind (Rezende & Viola 2018, Table 1): the constraint panel names
    the kind (`name`) and the constraint's own `units` (those of the logged c_batch, c_ma, kappa2); the κ² line
    is drawn on the MSE panel only where that tolerance bounds the MSE per dimension (`bounds_mse`: RE)."""
    fig = geco_dynamics(df)
    fig.layout.annotations[1].text = "constraint C and its moving average"
    fig.update_yaxes(title_text="<br>".join(textwrap.wrap(f"C: {units}", 28)), row=2, col=1)
    if not bounds_mse:
        fig.data = [t for t in fig.data if not t.name.startswith("κ²")]
    fig.update_layout(title=f"GECO dynamics: {name}")
    return fig


# ----------------------------------------------------------------------------- images


def mosaic(images, shape, gap: int = 1) -> np.ndarray:
    """Tile images (R, C, D) of shape (ch, H, W) into one array: (R·(H+gap)−gap, C·(W+gap)−gap[, 3]).

    Grey images give floats with NaN gaps; RGB images give uint8 with white gaps.
    """
    ch, h, w = shape
    images = np.asarray(images, dtype=float)
    rows, cols = images.shape[:2]
    tiles = images.reshape(rows, cols, ch, h, w).transpose(0, 1, 3, 4, 2)  # (R, C, H, W, ch)
    fill = np.nan if ch == 1 else 1.0
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, ch), fill)
    for r in range(rows):
        for c in range(cols):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[r, c]
    return out[..., 0] if ch == 1 else (np.clip(out, 0, 1) * 255).astype(np.uint8)


def image_grid(images, shape, row_labels=None, col_labels=None, title: str = "", gap: int = 1) -> go.Figure:
    """A grid of decoded images (R, C, D) as one picture, rows and columns labelled on the axes."""
    if len(shape) != 3:
        raise ValueError(f"image_grid needs image data (C, H, W); got data of shape {tuple(shape)}: "
                         "use points_figure for vector data")
    ch, h, w = shape
    tile = mosaic(images, shape, gap)
    if ch == 1:
        trace = go.Heatmap(z=tile, zmin=0, zmax=1, colorscale=[[0, "black"], [1, "white"]], showscale=False,
                           hoverongaps=False, name="images")
    else:
        trace = go.Image(z=tile, name="images")
    fig = go.Figure(trace)
    rows, cols = np.asarray(images).shape[:2]
    fig.update_xaxes(tickvals=[c * (w + gap) + (w - 1) / 2 for c in range(cols)], ticktext=col_labels,
                     showticklabels=col_labels is not None, showgrid=False, zeroline=False)
    fig.update_yaxes(tickvals=[r * (h + gap) + (h - 1) / 2 for r in range(rows)], ticktext=row_labels,
                     showticklabels=row_labels is not None, showgrid=False, zeroline=False,
                     autorange="reversed", scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=60, r=20, t=50, b=40),
                      plot_bgcolor="white")
    return fig


def _fmt(v) -> str:
    return f"{v:.2g}"


def traversal_figure(images, shape, values, dims=None, row_labels=None) -> go.Figure:
    """Traversal grid: row r varies latent dims[r] over `values` (columns), labelled 'z<d+1>' or by `row_labels`
    (e.g. the factor each latent predicts, shown as literal text; the left margin grows to fit them)."""
    dims = range(np.asarray(images).shape[0]) if dims is None else dims
    labels = [f"z{d + 1}" for d in dims] if row_labels is None else [literal(t) for t in row_labels]
    fig = image_grid(images, shape, labels, [_fmt(v) for v in values], "Latent traversals")
    return fig if row_labels is None else fig.update_yaxes(automargin=True)


def manifold_figure(images, shape, xs, ys, axis_titles=None) -> go.Figure:
    """The decoded 2-D manifold (R, R, D): x increases to the right, y upwards (top row = largest y);
    `axis_titles` (x, y), e.g. ('z1 · x', 'z2 · y'), as literal text."""
    fig = image_grid(images, shape, [_fmt(v) for v in ys], [_fmt(v) for v in xs], "Decoded latent manifold")
    if axis_titles is not None:
        fig.update_xaxes(title_text=literal(axis_titles[0]))
        fig.update_yaxes(title_text=literal(axis_titles[1]))
    return fig


def interpolation_strip(strips: dict, shape) -> go.Figure:
    """One row per interpolation kind ({'lerp': (n, D), 'slerp': (n, D)}), columns t = 0 … 1."""
    rows = np.stack([np.asarray(v) for v in strips.values()])  # (K, n, D)
    ts = np.linspace(0, 1, rows.shape[1])
    return image_grid(rows, shape, list(strips), [_fmt(t) for t in ts], "Interpolation")


def sample_gallery(galleries: dict, shape, per_row: int = 10) -> go.Figure:
    """Samples per sampler ({'prior': (n, D), 'GMM': (n, D)}), `per_row` images a row, label on its first row."""
    rows, labels = [], []
    for label, imgs in galleries.items():
        imgs = np.asarray(imgs).reshape(len(imgs), -1)
        n_rows = max(1, math.ceil(len(imgs) / per_row))
        padded = np.full((n_rows * per_row, imgs.shape[1]), np.nan)
        padded[: len(imgs)] = imgs
        rows.append(padded.reshape(n_rows, per_row, -1))
        labels += [label] + [""] * (n_rows - 1)
    return image_grid(np.concatenate(rows), shape, labels, None, "Samples")


def _paths_xy(pts) -> tuple[np.ndarray, np.ndarray]:
    """The first two coordinates (y = 0 for 1-D data) of a path (n, D), or of P paths (P, n, D) joined by NaN gaps."""
    pts = np.asarray(pts, dtype=float)
    if pts.ndim == 3:  # (P, n, D) -> (P·(n+1), D), a NaN row after each path breaks the line
        pts = np.concatenate([pts, np.full((pts.shape[0], 1, pts.shape[2]), np.nan)], 1)
    pts = pts.reshape(-1, pts.shape[-1])  # (n, D)
    return pts[:, 0], pts[:, 1] if pts.shape[1] > 1 else np.zeros(len(pts))


def points_figure(groups: dict, title: str = "Decoded points", lines: bool = True, background=None,
                  highlight: str | None = None) -> go.Figure:
    """Vector data (e.g. toy 2-D) in data space, equal axis scale: each group as a path of decoded points (n, D) or
    as P paths (P, n, D) in one trace (names as literal text), over `background` (N, D), the data cloud in grey,
    when given; the group named `highlight` (e.g. the decoded g(z) of the sliders) as large stars."""
    fig = go.Figure()
    if background is not None:
        x, y = _paths_xy(background)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="data", hoverinfo="skip",
                                 marker=dict(color="rgba(140,140,140,0.35)", size=4)))
    for i, (label, pts) in enumerate(groups.items()):
        x, y = _paths_xy(pts)
        star = label == highlight
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers" if star or not lines else "lines+markers",
                                 name=literal(label), marker=dict(color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                                                                 size=16 if star else 6,
                                                                 symbol="star" if star else "circle")))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _base(fig, title, "x₁", "x₂")


def reconstruction_grid(inputs, recons, shape, per_row: int = 8,
                        title: str = "Held-out inputs and their reconstructions") -> go.Figure:
    """Inputs x (N, D) above their reconstructions, so that each column is one example: `recons` is
    {row label: (N, D)} (e.g. g(μ(x)) and a posterior sample's g(z)) or one array (N, D), labelled g(μ(x)).
    Every `per_row` examples make one block of rows: the inputs, then each reconstruction; columns are numbered
    by example."""
    inputs = np.asarray(inputs, dtype=float).reshape(len(inputs), -1)  # (N, D)
    rows = {"input x": inputs, **(recons if isinstance(recons, dict) else {"g(μ(x))": recons})}
    n, cols = len(inputs), max(1, min(per_row, len(inputs)))
    blank = np.nan if shape[0] == 1 else 1.0  # an empty tile: a gap (grey) or white (RGB)
    tiles, labels = [], []
    for start in range(0, n, cols):
        for label, images in rows.items():
            part = np.full((cols, inputs.shape[1]), blank)  # (cols, D)
            chunk = np.asarray(images, dtype=float).reshape(n, -1)[start:start + cols]
            part[: len(chunk)] = chunk
            tiles.append(part)
            labels.append(label)
    return image_grid(np.stack(tiles), shape, labels, [str(c + 1) for c in range(cols)], title)


def _xy(points) -> tuple[np.ndarray, np.ndarray]:
    """The first two coordinates of points (N, D) (y = 0 for one-dimensional data)."""
    pts = np.asarray(points, dtype=float).reshape(len(points), -1)
    return pts[:, 0], pts[:, 1] if pts.shape[1] > 1 else np.zeros(len(pts))


def data_space(cloud, recons=None, samples=None, inputs=None, title: str = "Data space") -> go.Figure:
    """Vector data drawn where it lives, on one scale for both axes: the data cloud x (N, D); reconstructions
    g(μ(x)) (M, D) of `inputs` (M, D) (default: the cloud's first M points), each joined to its input by a line;
    decoded prior samples g(z), z ~ N(0, I) (S, D). Data of more than two dimensions show their first two."""
    fig = go.Figure()
    x, y = _xy(cloud)
    fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name="data x",
                             marker=dict(color="rgba(120,120,120,0.35)", size=4)))
    if recons is not None:
        start = _xy(np.asarray(cloud)[: len(recons)] if inputs is None else inputs)
        end = _xy(recons)
        pairs = np.stack([np.stack(start, 1), np.stack(end, 1)], 1)  # (M, 2, 2): input, reconstruction
        lx, ly = _joined(pairs)
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name="input x → g(μ(x))",
                                 line=dict(color="rgba(239,85,59,0.5)", width=1), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=end[0], y=end[1], mode="markers", name="reconstruction g(μ(x))",
                                 marker=dict(color="rgb(239,85,59)", size=7, symbol="diamond")))
    if samples is not None:
        sx, sy = _xy(samples)
        fig.add_trace(go.Scatter(x=sx, y=sy, mode="markers", name="decoded prior sample g(z), z ~ N(0, I)",
                                 marker=dict(color="rgb(0,160,120)", size=5, symbol="x", opacity=0.7)))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.15))
    return _base(fig, title, "x₁", "x₂")


# ----------------------------------------------------------------------------- metrics table


def bar_chart(values: dict, title: str, y: str, log_y: bool = False, note: dict | None = None) -> go.Figure:
    """One bar per label ({label: value}), with an optional text per bar (`note`: {label: text})."""
    labels = list(values)
    fig = go.Figure(go.Bar(x=[literal(k) for k in labels], y=[values[k] for k in labels],
                           text=[literal((note or {}).get(k, "")) for k in labels], textposition="outside",
                           marker_color=[RUN_COLOURS[i % len(RUN_COLOURS)] for i in range(len(labels))]))
    if log_y:
        fig.update_yaxes(type="log", dtick=1)
    return _base(fig, title, "", y)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def metrics_table(rows: dict, keys=None) -> go.Figure:
    """A table: one row per metric, one column per run ({run label: {metric: value}})."""
    runs = list(rows)
    keys = keys or list(dict.fromkeys(k for r in rows.values() for k in r))
    cells = [keys] + [[literal(_cell(rows[run].get(k))) for k in keys] for run in runs]
    header = ["metric", *map(literal, runs)]
    fig = go.Figure(go.Table(header=dict(values=header, align="left", fill_color="rgb(230,232,250)"),
                             cells=dict(values=cells, align="left")))
    fig.update_layout(title="Metrics", margin=dict(l=10, r=10, t=40, b=10))
    return fig


def runs_table(rows: dict, columns: dict, title: str = "", first_width: float | None = None) -> go.Figure:
    """A table: one row per run, one column per value side by side ({run label: {key: value}}); `columns` maps
    each key to its column header, in order: text, or a tuple of lines. The keys are the table's `meta`;
    `first_width`: the run column's width relative to the others (default: all equal). As tall as its rows."""
    runs = list(rows)
    cells = [[literal(r) for r in runs]] + [[literal(_cell(rows[r].get(k))) for r in runs] for k in columns]
    header = ["run", *("<br>".join(map(literal, h)) if isinstance(h, tuple) else literal(h) for h in columns.values())]
    widths = None if first_width is None else [first_width] + [1] * len(columns)
    lines = max([len(h) for h in columns.values() if isinstance(h, tuple)], default=1)
    head = dict(values=header, align="left", fill_color="rgb(230,232,250)", height=8 + 18 * lines)
    fig = go.Figure(go.Table(header=head, cells=dict(values=cells, align="left", height=24), columnwidth=widths,
                             meta=list(columns)))
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=40, b=10), height=80 + 18 * lines + 24 * len(runs))
    return fig


def latent_scatter(mu: np.ndarray, labels, dims=(0, 1), class_names=None, marker=None, values=None,
                   colour_title: str | None = None, axis_titles=None):
    """Codes μ (N, L) on two dimensions, each point's row index as `customdata` (what a click hands back to the
    page); `marker` (L,) is drawn as a star. Colour: one trace per class of `labels` (named by `class_names`, else
    '<colour_title> k'), or, when `values` (N,) are given, one trace on a continuous colour scale with a colour
    bar; `colour_title` (e.g. a factor's name) titles the legend or the colour bar. `axis_titles` default to
    'z<d+1>'. No template: 50 ms less per build, which matters on every slider move."""
    fig = go.Figure()
    if values is None:
        _scatter_classes(fig, mu, labels, dims, class_names, colour_title)
    else:
        idx = np.arange(len(mu))
        title = literal(colour_title or "value")
        fig.add_trace(go.Scatter(x=mu[:, dims[0]], y=mu[:, dims[1]], customdata=idx, mode="markers", name=title,
                                 hovertemplate=f"example %{{customdata}}<br>{title} %{{marker.color:.3g}}"
                                               "<extra></extra>", showlegend=False,
                                 marker=dict(size=6, color=np.asarray(values, dtype=float), colorscale="Viridis",
                                             opacity=0.8, colorbar=dict(title=dict(text=title)))))
    if marker is not None:
        fig.add_trace(go.Scatter(x=[marker[dims[0]]], y=[marker[dims[1]]], mode="markers", name="sliders' z",
                                 marker=dict(symbol="star", size=16, color="black"), hoverinfo="skip"))
    fig.update_layout(title="Codes μ(x) of held-out examples", clickmode="event+select",
                      margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.15))
    if values is None and colour_title:
        fig.update_layout(legend_title_text=literal(colour_title))
    x_title, y_title = axis_titles or (f"z{dims[0] + 1}", f"z{dims[1] + 1}")
    fig.update_xaxes(title_text=literal(x_title))
    fig.update_yaxes(title_text=literal(y_title), scaleanchor="x", scaleratio=1)
    return fig


def _scatter_classes(fig: go.Figure, mu, labels, dims, class_names, colour_title) -> None:
    """One scatter trace per class of `labels` (all points in one when None), customdata = row indices."""
    colours = qualitative.Plotly + qualitative.D3
    labels = np.zeros(len(mu), int) if labels is None else np.asarray(labels)
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        known = class_names is not None and int(k) < len(class_names)
        name = class_names[int(k)] if known else f"{colour_title or 'class'} {k:g}"
        fig.add_trace(go.Scatter(x=mu[idx, dims[0]], y=mu[idx, dims[1]], customdata=idx, mode="markers",
                                 name=literal(name), hovertemplate="example %{customdata}",  # side label: name
                                 marker=dict(size=6, color=colours[int(k) % len(colours)], opacity=0.7)))
