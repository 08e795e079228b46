"""Figure builders from real short training runs (digits) and from synthetic arrays: traces and axes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vaeviz import plots
from vaeviz.analysis.aggregate import AggregatePosterior
from vaeviz.analysis.evaluate import load_model
from vaeviz.analysis.likelihood import elbo_terms
from vaeviz.analysis.tiling import ellipses, posterior_samples
from vaeviz.analysis.traversal import decode_manifold, interpolate, traversal_grid
from vaeviz.config import RunConfig
from vaeviz.runs import RunStore
from vaeviz.train import train

BASE = ["data.name=digits", "model.latent_dim=2", "model.hidden=64,64", "train.steps=100", "train.eval_every=25",
        "train.checkpoint_every=100", "train.batch_size=64"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with short digits runs: a β sweep, a per-dimension σ-VAE and GECO."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEVIZ_HOME", str(tmp_path_factory.mktemp("plots_home")))
        s = RunStore()
        s.ids = {}
        for name, extra in [("β=0.5", ["objective.name=beta_vae", "objective.beta=0.5"]),
                            ("β=1", ["objective.name=beta_vae", "objective.beta=1"]),
                            ("β=4", ["objective.name=beta_vae", "objective.beta=4"]),
                            ("sigma", ["objective.name=sigma_vae", "objective.variance=per_dim"]),
                            ("geco", ["objective.name=geco", "objective.kappa=0.25", "objective.nu=20"])]:
            cfg = RunConfig().with_overrides(BASE + extra)
            run_id = s.create_run(cfg, name=name)
            train(cfg, s.sink(run_id), workdir=s.artifact_dir(run_id))
            s.ids[name] = run_id
        yield s


def _snapshot(store, name):
    run_id = store.ids[name]
    return store.load_snapshot(run_id, store.snapshot_steps(run_id)[-1])


def test_information_plane_trajectories_guides_and_frontier(store):
    runs = {k: store.metrics(store.ids[k]) for k in ("β=0.5", "β=1", "β=4")}
    fig = plots.information_plane(runs, guides=4)
    names = [t.name for t in fig.data]
    assert names[:3] == ["β=0.5", "β=1", "β=4"] and names[-1] == "frontier (final points)"
    assert names.count("iso-ELBO D + R = const") == 4 and sum(bool(t.showlegend) for t in fig.data[3:7]) == 1
    for trace, df in zip(fig.data[:3], runs.values()):
        ev = plots.wide(df, "eval")
        assert list(trace.marker.color) == [0, 25, 50, 75, 100]
        np.testing.assert_allclose(trace.x, ev["rate"])
        np.testing.assert_allclose(trace.y, ev["distortion"])
    for guide in fig.data[3:7]:  # every guide has slope −1: D + R constant along it
        assert guide.x[0] + guide.y[0] == pytest.approx(guide.x[1] + guide.y[1])
    frontier = fig.data[-1]
    assert list(frontier.x) == sorted(frontier.x) and len(frontier.x) == 3
    assert fig.layout.xaxis.title.text == "rate R (nats)" and fig.layout.yaxis.title.text == "distortion D (nats)"
    assert fig.layout.xaxis.range[0] < 0 < fig.layout.xaxis.range[1]
    assert fig.layout.coloraxis.colorbar.title.text == "step"
    single = plots.information_plane({"β=1": runs["β=1"]})
    assert "frontier (final points)" not in [t.name for t in single.data]


def test_tiling_ellipses_and_samples_by_class(store):
    snap = _snapshot(store, "β=1")
    mu, logvar, labels = snap["mu"][:200], snap["logvar"][:200], snap["labels"][:200]
    fig = plots.tiling(ellipses(mu, logvar, n_points=24), labels)
    classes = np.unique(labels)
    assert [t.name for t in fig.data] == [f"class {k}" for k in classes] + ["prior 1σ"]
    for trace, k in zip(fig.data, classes):  # one NaN-separated closed outline (25 points) per posterior
        assert len(trace.x) == 26 * int((labels == k).sum()) and trace.fill == "toself"
    assert fig.layout.yaxis.scaleanchor == "x"
    np.testing.assert_allclose(np.hypot(fig.data[-1].x, fig.data[-1].y)[:-1], 1.0)
    micro = plots.tiling(samples=posterior_samples(mu[:7], logvar[:7], n=50), labels=labels[:7],
                         class_names=[str(i) for i in range(10)])
    assert sum(len(t.x) for t in micro.data[:-1]) == 7 * 50 and micro.data[0].mode == "markers"


def test_holes_heat_map_mask_and_prior_circles(store):
    snap = _snapshot(store, "β=1")
    agg = AggregatePosterior().fit(snap["mu"], snap["logvar"])
    grid = agg.grid(3.0, 60)
    fig = plots.holes(grid, tau=0.1, hole_fraction=0.25, marginal_kl=1.5)
    heat, mask = fig.data[0], fig.data[1]
    assert np.asarray(heat.z).shape == (60, 60) and np.asarray(heat.z).min() >= grid.log_q.max() - 25.0
    assert np.asarray(mask.z).sum() == grid.hole_mask(0.1).sum()
    assert [t.name for t in fig.data[2:]] == ["prior 1σ, 2σ, 3σ"] * 2
    assert "hole fraction 0.250" in fig.layout.title.text and "marginal KL 1.500" in fig.layout.title.text
    assert list(fig.layout.xaxis.range) == [-3.0, 3.0]


def test_sigma_evolution_log_axes_and_per_dimension_map(store):
    df, snap = store.metrics(store.ids["sigma"]), _snapshot(store, "sigma")
    fig = plots.sigma_evolution(df, snap["sigma2"], (1, 8, 8), 100)
    names = [t.name for t in fig.data]
    assert names == ["σ² max", "σ² min–max", "σ²", "batch MSE (closed-form σ*²)", "β = 2σ²", "log₁₀ σ² per pixel"]
    w = plots.wide(df, "train")
    np.testing.assert_allclose(fig.data[2].y, w["sigma2"])
    np.testing.assert_allclose(fig.data[4].y, 2 * w["sigma2"])
    assert fig.layout.yaxis.type == "log" and np.asarray(fig.data[-1].z).shape == (8, 8)
    np.testing.assert_allclose(np.asarray(fig.data[-1].z), np.log10(snap["sigma2"].reshape(8, 8)), rtol=1e-6)
    bars = plots.sigma_evolution(df, np.array([0.1, 0.2]), (2,), 5)
    assert bars.data[-1].type == "bar" and bars.layout.yaxis2.type == "log"


def test_geco_dynamics_lambda_constraint_and_first_met_step(store):
    df = store.metrics(store.ids["geco"])
    fig = plots.geco_dynamics(df)
    assert [t.name for t in fig.data] == ["λ", "C̄ batch", "C_ma", "C = 0", "MSE per dimension", "κ² = 0.0625"]
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis3.type == "log"
    w = plots.wide(df, "train")
    met = w.index[w["c_ma"] <= 0]
    first = int(met[0]) if len(met) else None
    assert fig.layout.meta["first_met"] == first
    assert len(fig.layout.shapes) == (first is not None)
    synthetic = pd.DataFrame({"step": [1, 2, 3, 1, 2, 3], "split": "train", "name": ["c_ma"] * 3 + ["lambda"] * 3,
                              "value": [0.3, -0.1, -0.2, 1.0, 2.0, 1.5]})
    fig = plots.geco_dynamics(synthetic)
    assert fig.layout.meta["first_met"] == 2 and fig.layout.shapes[0].x0 == 2


def test_traversal_manifold_interpolation_and_gallery_images(store):
    model, _, data, _ = load_model(store, store.ids["β=1"])
    values = np.linspace(-2, 2, 5)
    _, imgs = traversal_grid(model, np.zeros(2), values)
    fig = plots.traversal_figure(imgs, data.shape, values)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (2 * 9 - 1, 5 * 9 - 1) and np.isnan(z[8]).all() and np.nanmax(z) <= 1.0
    np.testing.assert_allclose(z[:8, :8], imgs[0, 0].reshape(8, 8), rtol=1e-6)
    assert list(fig.layout.yaxis.ticktext) == ["z1", "z2"] and fig.layout.xaxis.ticktext[2] == "0"
    assert fig.layout.yaxis.autorange == "reversed"
    codes, man = decode_manifold(model, 6)
    fig = plots.manifold_figure(man, data.shape, codes[0, :, 0], codes[:, 0, 1])
    assert np.asarray(fig.data[0].z).shape == (6 * 9 - 1, 6 * 9 - 1)
    assert float(fig.layout.yaxis.ticktext[0]) > float(fig.layout.yaxis.ticktext[-1])  # top row = largest y
    strips = {k: interpolate(model, [1.0, 0.0], [0.0, 1.0], 7, k)[1] for k in ("lerp", "slerp")}
    fig = plots.interpolation_strip(strips, data.shape)
    assert list(fig.layout.yaxis.ticktext) == ["lerp", "slerp"] and len(fig.layout.xaxis.tickvals) == 7
    gallery = plots.sample_gallery({"prior": man[0], "GMM": man[1][:4]}, data.shape, per_row=4)
    assert list(gallery.layout.yaxis.ticktext) == ["prior", "", "GMM"]
    with pytest.raises(ValueError, match="points_figure"):
        plots.image_grid(np.zeros((1, 1, 2)), (2,))


def test_rgb_mosaic_and_points_figure():
    imgs = np.random.default_rng(0).random((2, 3, 3 * 4 * 4))
    fig = plots.image_grid(imgs, (3, 4, 4))
    assert fig.data[0].type == "image" and np.asarray(fig.data[0].z).shape == (9, 14, 3)
    assert np.asarray(fig.data[0].z)[4].min() == 255  # the white gap row
    pts = plots.points_figure({"z1": np.zeros((5, 2)), "z2": np.ones((5, 2))})
    assert [t.name for t in pts.data] == ["z1", "z2"] and len(pts.data[0].x) == 5


def test_metrics_table_and_lines(store):
    rows = {"a": {"elbo": -24.123456, "iwae": None, "active_units": 2.0}, "b": {"elbo": float("nan"), "mig": 0.5}}
    fig = plots.metrics_table(rows)
    header, cells = fig.data[0].header.values, fig.data[0].cells.values
    assert list(header) == ["metric", "a", "b"]
    assert list(cells[0]) == ["elbo", "iwae", "active_units", "mig"]
    assert list(cells[1]) == ["-24.12", "—", "2", "—"] and list(cells[2]) == ["—", "—", "—", "0.5"]
    real = {}
    for name in ("β=0.5", "β=4"):  # a real table: ELBO terms of two runs on their eval split
        model, objective, data, _ = load_model(store, store.ids[name])
        real[name] = elbo_terms(model, objective, data.x_eval)
    fig = plots.metrics_table(real)
    assert list(fig.data[0].cells.values[0]) == ["rate", "distortion", "elbo", "mse", "nll_sigma_free"]
    assert float(fig.data[0].cells.values[1][2]) == pytest.approx(real["β=0.5"]["elbo"], rel=1e-3)
    lines = plots.metric_lines(store.metrics(store.ids["β=1"]), ["loss", "rate", "missing"], log_y=True)
    assert [t.name for t in lines.data] == ["loss", "rate"] and len(lines.data[0].x) == 100
    assert lines.layout.yaxis.type == "log" and not math.isnan(lines.data[0].y[-1])


def test_latent_scatter_one_trace_per_class_with_row_indices_as_customdata():
    from vaeviz.plots import latent_scatter

    mu = np.arange(12, dtype=float).reshape(6, 2)
    fig = latent_scatter(mu, [0, 1, 0, 1, 2, 2], class_names=["a", "b", "c"], marker=np.array([0.5, -0.5]))
    assert [t.name for t in fig.data] == ["a", "b", "c", "sliders' z"]
    assert [list(t.customdata) for t in fig.data[:3]] == [[0, 2], [1, 3], [4, 5]]
    np.testing.assert_array_equal(fig.data[1].x, mu[[1, 3], 0])
    assert fig.data[3].marker.symbol == "star" and fig.layout.clickmode == "event+select"
