"""What each latent encodes (issue 15, item 8), factor-coloured scatters and g(z) in data space (item 7).

The per-latent factor assignment on synthetic codes whose latents are known functions of known factors, its
agreement with MIG; the plot builders; and the traversals page (AppTest) on a tiny β-TCVAE run on `shapes` and a
tiny VAE on the 2-D Gaussian mixture.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from vaeviz import plots
from vaeviz.analysis.batching import decode_batched, encode_batched
from vaeviz.analysis.disentangle import (
    MIN_NMI,
    LatentFactors,
    dimension_kl,
    is_categorical,
    mig,
    mutual_information_matrix,
)
from vaeviz.build import load_run
from vaeviz.checkpoint import checkpoint_steps
from vaeviz.config import RunConfig
from vaeviz.distributions import kl_diag_std_normal
from vaeviz.runs import RunStore
from vaeviz.train import train

REPO = Path(__file__).resolve().parents[1]
NAMES = ["shape", "position", "size"]


def _factorial(repeats: int) -> np.ndarray:
    """A full factorial design of three factors with 3, 4 and 5 levels: independent by construction."""
    grid = np.array(list(itertools.product(range(3), range(4), range(5))), dtype=float)
    return np.tile(grid, (repeats, 1))


def _known_codes(v: np.ndarray) -> np.ndarray:
    """z1 = size², z2 = cos(shape), z3 = 0 (dead), z4 = noise, z5 = −3·position: (N, 5)."""
    noise = np.random.default_rng(0).normal(size=len(v))
    return np.stack([v[:, 2] ** 2, np.cos(v[:, 0]), np.zeros(len(v)), noise, -3 * v[:, 1]], 1)


# -- the library ------------------------------------------------------------------------------


def test_each_latent_gets_the_factor_it_is_a_function_of():
    v = _factorial(100)  # 6,000 rows
    fit = LatentFactors().fit(_known_codes(v), v, NAMES)
    assert [lat.factor for lat in fit.latents_] == [2, 0, None, None, 1]
    assert [lat.status for lat in fit.latents_] == ["factor", "factor", "inactive", "none", "factor"]
    for j in (0, 1, 4):  # an injective function of one factor and independent of the others: I/H = 1, gap = 1
        assert fit.latents_[j].nmi == pytest.approx(1.0, abs=1e-9)
        assert fit.latents_[j].gap == pytest.approx(1.0, abs=1e-9)
    assert fit.latents_[0].mi == pytest.approx(math.log(5), abs=1e-9)
    assert fit.latents_[0].label == "z1 · size (MI 1.61 nats, gap 1.00)"
    assert fit.latents_[1].label == "z2 · shape (MI 1.10 nats, gap 1.00)"
    assert fit.latents_[2].label == "z3 · inactive (Var μ ≈ 0)"
    assert fit.latents_[3].nmi < MIN_NMI and fit.latents_[3].label.startswith("z4 · no factor (best: ")
    assert [lat.short for lat in fit.latents_] == ["z1 · size", "z2 · shape", "z3 · inactive", "z4 · no factor",
                                                   "z5 · position"]
    assert fit.n_ == 6000 and fit.entropy_ == pytest.approx(np.log([3, 4, 5]))


def test_permuting_the_factors_permutes_the_assignment():
    v = _factorial(40)
    perm = [1, 2, 0]
    fit = LatentFactors().fit(_known_codes(v), v[:, perm], [NAMES[k] for k in perm])
    assert [lat.name for lat in fit.latents_ if lat.status == "factor"] == ["size", "shape", "position"]
    assert [lat.factor for lat in fit.latents_] == [1, 2, None, None, 0]


def test_a_latent_with_kl_near_zero_is_inactive_whatever_it_predicts():
    v = _factorial(40)
    kl = np.array([1.0, 0.8, 0.3, 0.5, 0.002])  # z5 predicts `position` exactly but carries no KL
    fit = LatentFactors().fit(_known_codes(v), v, NAMES, kl)
    assert [lat.status for lat in fit.latents_] == ["factor", "factor", "none", "none", "inactive"]
    assert fit.latents_[4].label == "z5 · inactive (KL 0.00 nats)" and fit.latents_[4].name == "position"
    assert fit.latents_[0].kl == 1.0


def test_the_matrix_and_mig_are_those_of_the_mig_computation():
    v = _factorial(30)
    rng = np.random.default_rng(3)
    codes = v @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(len(v), 4))  # every latent mixes every factor
    fit = LatentFactors().fit(codes, v, NAMES)
    assert fit.mig_ == pytest.approx(mig(codes, v), rel=1e-12)
    np.testing.assert_allclose(fit.mi_, mutual_information_matrix(codes, v))
    nmi = fit.mi_ / fit.entropy_  # (L, K)
    for j, lat in enumerate(fit.latents_):
        assert lat.nmi == pytest.approx(nmi[j].max()) and lat.mi == pytest.approx(fit.mi_[j, nmi[j].argmax()])
        assert lat.gap == pytest.approx(np.sort(nmi[j])[-1] - np.sort(nmi[j])[-2])
    aligned = np.concatenate([v[:, [2, 0, 1]] * 0.7 - 1.0, np.zeros((len(v), 1))], 1)  # MIG = 1 (test_analysis_...)
    fit = LatentFactors().fit(aligned, v, NAMES)
    assert fit.mig_ == pytest.approx(mig(aligned, v)) == pytest.approx(1.0)
    assert [lat.name if lat.status == "factor" else lat.status for lat in fit.latents_] == \
        ["size", "shape", "position", "inactive"]


def test_dimension_kl_sums_to_the_rate():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) * 0.5
    per_dim = dimension_kl(mu, np.exp(logvar))
    rate = kl_diag_std_normal(torch.tensor(mu), torch.tensor(logvar)).mean().item()
    assert per_dim.shape == (3,) and per_dim.sum() == pytest.approx(rate)
    assert dimension_kl(np.zeros((4, 2)), np.ones((4, 2))) == pytest.approx([0.0, 0.0])
    assert dimension_kl(np.ones((4, 1)), np.full((4, 1), math.e))[0] == pytest.approx(0.5 * (1 + math.e - 2))


def test_categorical_factors_are_few_whole_numbers():
    assert is_categorical(np.array([0.0, 2.0, 1.0, 2.0]))
    assert not is_categorical(np.array([0.5, 1.5]))
    assert not is_categorical(np.arange(11.0))


# -- plot builders ------------------------------------------------------------------------------


def test_traversal_rows_and_manifold_axes_carry_labels_as_text():
    images = np.random.default_rng(0).random((2, 3, 4))
    fig = plots.traversal_figure(images, (1, 2, 2), [-1, 0, 1], [0, 1], ["z1 · <b>x</b>", "z2 · a & b"])
    assert list(fig.layout.yaxis.ticktext) == ["z1 · &lt;b&gt;x&lt;/b&gt;", "z2 · a &amp; b"]
    assert fig.layout.yaxis.automargin is True
    assert list(plots.traversal_figure(images, (1, 2, 2), [-1, 0, 1]).layout.yaxis.ticktext) == ["z1", "z2"]
    grid = np.random.default_rng(1).random((3, 3, 4))
    fig = plots.manifold_figure(grid, (1, 2, 2), [-1, 0, 1], [1, 0, -1], ("z1 · x", "z2 · <y>"))
    assert fig.layout.xaxis.title.text == "z1 · x" and fig.layout.yaxis.title.text == "z2 · &lt;y&gt;"


def test_latent_scatter_coloured_by_a_continuous_or_a_categorical_factor():
    mu = np.arange(12, dtype=float).reshape(6, 2)
    x = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    fig = plots.latent_scatter(mu, None, values=x, colour_title="x", marker=np.zeros(2), axis_titles=("z1 · y", "z2"))
    dots, star = fig.data
    np.testing.assert_array_equal(dots.marker.color, x)
    assert list(dots.customdata) == list(range(6)) and dots.marker.colorbar.title.text == "x"
    assert star.marker.symbol == "star" and fig.layout.xaxis.title.text == "z1 · y"
    fig = plots.latent_scatter(mu, [2, 0, 2, 1, 0, 0], colour_title="size")
    assert [t.name for t in fig.data] == ["size 0", "size 1", "size 2"]
    assert fig.layout.legend.title.text == "size" and list(fig.data[2].customdata) == [0, 2]
    assert len({t.marker.color for t in fig.data}) == 3 and fig.data[0].marker.colorbar.title.text is None


def test_points_figure_draws_decoded_points_over_the_data_cloud():
    cloud = np.random.default_rng(0).random((50, 2))
    paths = np.random.default_rng(1).random((3, 4, 2))  # three paths of four points
    fig = plots.points_figure({"rows": paths, "g(z)": np.array([[0.2, 0.4]])}, background=cloud, highlight="g(z)")
    data, rows, point = fig.data
    assert data.name == "data" and "140,140,140" in data.marker.color
    np.testing.assert_array_equal(data.x, cloud[:, 0])
    assert len(rows.x) == 3 * 5 and np.isnan(rows.x[4]) and rows.x[5] == paths[1, 0, 0]  # NaN breaks the paths
    assert point.marker.symbol == "star" and list(point.x) == [0.2] and point.mode == "markers"
    assert fig.layout.yaxis.scaleanchor == "x"


# -- the traversals page ------------------------------------------------------------------------


def _run(store: RunStore, overrides: dict) -> str:
    cfg = RunConfig().with_overrides({"model.hidden": "32,32", "train.steps": 150, "train.eval_every": 50,
                                      "train.checkpoint_every": 150, "train.probe_size": 200, **overrides})
    run_id = store.create_run(cfg)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    return run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny β-TCVAE on 1,000 shapes (4 latents) and a tiny VAE on the 2-D Gaussian mixture."""
    store = RunStore(tmp_path_factory.mktemp("factors"))
    tc = _run(store, {"data.name": "shapes", "data.size": 1000, "objective.name": "beta_tcvae",
                      "objective.beta": 6.0, "model.latent_dim": 4})
    mix = _run(store, {"data.name": "gaussian_mixture", "objective.name": "vae", "objective.decoder": "gaussian",
                       "objective.sigma": 0.05})
    return store, tc, mix


def _setup(store: RunStore, run_id: str):
    rec = store.get(run_id)
    step = checkpoint_steps(store.artifact_dir(run_id))[-1]
    return load_run(rec.config, store.artifact_dir(run_id), step, device="cpu")[0]


def _page(store: RunStore, run_id: str, monkeypatch) -> AppTest:
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))
    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda s: None)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    return at.switch_page("views/traversals.py").run()


def _ok(at: AppTest) -> None:
    assert not at.exception and not at.error, [e.message for e in at.exception] + [e.value for e in at.error]


def _arr(value) -> np.ndarray:
    """A figure's array from its JSON: a list, or plotly's typed array {'dtype', 'bdata'[, 'shape']}."""
    if isinstance(value, dict):
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape([int(n) for n in str(value["shape"]).split(",")]) if "shape" in value else out
    return np.asarray(value, dtype=float)


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_page_labels_latents_by_factor_and_colours_the_scatter_by_any_factor(runs, monkeypatch):
    store, tc, _ = runs
    setup = _setup(store, tc)
    data = setup.data
    q = encode_batched(setup.model, data.x_eval)
    want = LatentFactors().fit(q.mu.numpy(), data.factors_eval, data.factor_names,
                               dimension_kl(q.mu.numpy(), q.variance.numpy()))
    at = _page(store, tc, monkeypatch)
    _ok(at)
    assert [s.label for s in at.slider if s.key.startswith("z_")] == [lat.short for lat in want.latents_]
    assert any(f"first {len(data.x_eval)} held-out examples" in c.value for c in at.caption)
    assert at.selectbox(key="scatter_colour").options == ["shape", "scale", "rotation", "x", "y"]
    (scatter,) = _charts(at)
    assert [t["name"] for t in scatter["data"]] == ["square", "ellipse", "triangle", "sliders' z"]
    assert scatter["layout"]["legend"]["title"]["text"] == "shape"
    at.selectbox(key="scatter_colour").set_value("x").run()
    _ok(at)
    (scatter,) = _charts(at)
    dots = scatter["data"][0]
    np.testing.assert_allclose(_arr(dots["marker"]["color"]), data.factors_eval[:1000, 3], rtol=1e-6)
    assert dots["marker"]["colorbar"]["title"]["text"] == "x"
    at.segmented_control(key="tview").set_value("Traversal grid").run()
    _ok(at)
    grid = _charts(at)[0]
    assert grid["layout"]["yaxis"]["ticktext"] == [plots.literal(lat.label) for lat in want.latents_]
    assert any(lat.status == "factor" and lat.name in data.factor_names for lat in want.latents_)


def _point(trace: dict) -> np.ndarray:
    """The one (x, y) point of a trace."""
    return np.concatenate([_arr(trace["x"]), _arr(trace["y"])])


def test_page_draws_g_of_z_in_data_space_for_2d_data(runs, monkeypatch):
    store, _, mix = runs
    setup = _setup(store, mix)
    at = _page(store, mix, monkeypatch)
    _ok(at)
    assert not at.metric  # no printed "g(z)" numbers
    (_, space) = _charts(at)
    names = [t["name"] for t in space["data"]]
    assert names[0] == "data" and names[-1] == "g(z)" and space["layout"]["yaxis"]["scaleanchor"] == "x"
    assert len(_arr(space["data"][0]["x"])) == min(2000, len(setup.data.x_train))
    origin = decode_batched(setup.model, np.zeros((1, 2), np.float32))[0]
    np.testing.assert_allclose(_point(space["data"][-1]), origin, rtol=1e-5)
    at.slider(key=f"z_{mix}_1").set_value(1.5).run()
    _ok(at)
    (_, space) = _charts(at)
    moved = decode_batched(setup.model, np.array([[0.0, 1.5]], np.float32))[0]
    np.testing.assert_allclose(_point(space["data"][-1]), moved, rtol=1e-5)
    assert "z2" in space["data"][1]["name"]  # the path of the slider just moved
    at.segmented_control(key="tview").set_value("Traversal grid").run()
    _ok(at)
    traversal, manifold = _charts(at)
    assert [t["name"] for t in traversal["data"]] == ["data", "z1", "z2"]
    assert [t["name"] for t in manifold["data"]] == ["data", "rows: z1 varies", "columns: z2 varies"]
