"""Reconstructions, their figures, the σ² colour scale and log axes, and the bounds a run touched (issue 15: items 7,
9 and the bound notice of item 2): `vaeviz.analysis.reconstruct`, `plots.reconstruction_grid`/`data_space`,
`vaeviz.analysis.bounds`, `vaeviz show` and the σ² page."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from plotly.colors import hex_to_rgb, unlabel_rgb

from vaeviz import plots
from vaeviz.analysis import reconstruct
from vaeviz.analysis.bounds import BoundHit, first_at_bound, touched_bounds
from vaeviz.app_state import plain
from vaeviz.build import build, load_run
from vaeviz.cli import main
from vaeviz.config import RunConfig
from vaeviz.data import load_dataset
from vaeviz.objectives import REGISTRY
from vaeviz.runs import RunStore
from vaeviz.train import train

TINY = {"data.name": "digits", "model.hidden": "32,32", "model.latent_dim": 2, "train.steps": 60,
        "train.eval_every": 30, "train.checkpoint_every": 30, "train.probe_size": 200}
CLI = ["data.name=digits", "model.latent_dim=2", "model.hidden=32,32", "train.batch_size=32", "train.eval_every=50",
       "train.probe_size=200", "train.steps=100"]


def trained(overrides: dict, store: RunStore | None = None) -> tuple[RunStore, str]:
    store = store or RunStore()
    cfg = RunConfig().with_overrides({**TINY, **overrides})
    run_id = store.create_run(cfg, None)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    return store, run_id


# -- reconstructions -----------------------------------------------------------------------------


def test_example_rows_take_classes_in_turn_and_keep_order_without_labels():
    labels = np.array([3, 3, 1, 0, 1, 3, 0])
    assert reconstruct.example_rows(7, 5, labels).tolist() == [3, 2, 0, 6, 4]  # 0, 1, 3, then each one's second
    assert reconstruct.example_rows(7, 4).tolist() == [0, 1, 2, 3]
    assert reconstruct.example_rows(3, 10).tolist() == [0, 1, 2]


def test_reconstructions_are_the_models_round_trip_on_the_eval_split():
    cfg = RunConfig().with_overrides(TINY)
    setup = build(cfg, torch.device("cpu"))
    model, data = setup.model.eval(), setup.data
    rec = reconstruct.eval_reconstructions(model, data, n=12, sample=True, seed=3)
    assert rec.shape == (1, 8, 8) and rec.is_image
    assert rec.inputs.shape == rec.means.shape == rec.samples.shape == (12, 64)
    assert sorted(data.y_eval[rec.index[:10]].tolist()) == list(range(10))  # every digit in the first ten
    np.testing.assert_array_equal(rec.inputs, load_dataset(cfg.data).x_eval[rec.index].reshape(12, -1))
    with torch.no_grad():  # the direct pass: g(μ(x)) and g(μ + σ ε) with the same seeded ε
        q = model.encode(torch.as_tensor(rec.inputs.reshape(12, 1, 8, 8)))
        mean = model.decode_mean(q.mu)
        eps = torch.randn(q.mu.shape, generator=torch.Generator().manual_seed(3))
        sample = model.decode_mean(q.mu + torch.exp(0.5 * q.logvar) * eps)
    np.testing.assert_allclose(rec.means, mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.samples, sample.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(rec.samples - rec.means).max() > 1e-3  # the sample is not the mean


def test_a_saved_run_reconstructs_its_eval_images_and_a_deterministic_encoder_has_no_sample():
    store, run_id = trained({"objective.name": "rae"})
    setup, step = load_run(store.get(run_id).config, store.artifact_dir(run_id))
    rec = reconstruct.eval_reconstructions(setup.model, setup.data, n=16, sample=True)
    assert step == 60 and rec.samples is None and rec.means.shape == (16, 64)
    with torch.no_grad():
        direct = setup.model.decode_mean(setup.model.encode(torch.as_tensor(setup.data.x_eval[rec.index])).mu)
    np.testing.assert_allclose(rec.means, direct.numpy(), rtol=1e-5, atol=1e-6)
    assert np.mean((rec.means - rec.inputs) ** 2) < np.mean((rec.inputs - rec.inputs.mean()) ** 2)  # it learned


def test_two_dimensional_data_reconstruct_to_points_and_the_prior_decodes_to_points():
    cfg = RunConfig().with_overrides({**TINY, "data.name": "gaussian_mixture", "objective.name": "sigma_vae"})
    setup = build(cfg, torch.device("cpu"))
    rec = reconstruct.eval_reconstructions(setup.model, setup.data, n=40, sample=False)
    assert rec.shape == (2,) and not rec.is_image and rec.means.shape == (40, 2) and rec.samples is None
    prior = reconstruct.decoded_prior(setup.model, 300, seed=1)
    assert prior.shape == (300, 2) and ((prior >= 0) & (prior <= 1)).all()
    np.testing.assert_array_equal(prior, reconstruct.decoded_prior(setup.model, 300, seed=1))
    z = torch.randn((300, 2), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(prior, setup.model.decode_mean(z).numpy(), rtol=1e-5, atol=1e-6)


# -- figures -------------------------------------------------------------------------------------


def test_reconstruction_grid_puts_each_input_above_its_reconstructions():
    rng = np.random.default_rng(0)
    inputs, means, samples = (rng.uniform(size=(13, 64)) for _ in range(3))
    fig = plots.reconstruction_grid(inputs, {"g(μ(x))": means, "g(z), z ~ q(z|x)": samples}, (1, 8, 8))
    z = np.asarray(fig.data[0].z, dtype=float)
    rows, cols = (z.shape[0] + 1) // 9, (z.shape[1] + 1) // 9  # tiles of 8 pixels and a 1-pixel gap
    assert (rows, cols) == (6, 8) and z.shape == (6 * 9 - 1, 8 * 9 - 1)
    assert list(fig.layout.yaxis.ticktext) == ["input x", "g(μ(x))", "g(z), z ~ q(z|x)"] * 2
    assert list(fig.layout.xaxis.ticktext) == [str(c) for c in range(1, 9)]

    def tile(r, c):
        return z[r * 9:r * 9 + 8, c * 9:c * 9 + 8]

    np.testing.assert_allclose(tile(0, 2), inputs[2].reshape(8, 8))
    np.testing.assert_allclose(tile(1, 2), means[2].reshape(8, 8))
    np.testing.assert_allclose(tile(5, 4), samples[12].reshape(8, 8))  # example 13: second block, fifth column
    assert np.isnan(tile(3, 5)).all()  # the second block has 5 examples: the rest are gaps
    one = plots.reconstruction_grid(inputs[:3], means[:3], (1, 8, 8))
    assert list(one.layout.yaxis.ticktext) == ["input x", "g(μ(x))"] and np.asarray(one.data[0].z).shape == (17, 26)
    rgb = plots.reconstruction_grid(rng.uniform(size=(2, 48)), rng.uniform(size=(2, 48)), (3, 4, 4))
    assert rgb.data[0].type == "image"


def test_data_space_joins_each_input_to_its_reconstruction_on_equal_axes():
    rng = np.random.default_rng(1)
    cloud, inputs, recons, prior = (rng.uniform(size=(n, 2)) for n in (50, 4, 4, 7))
    fig = plots.data_space(cloud, recons, prior, inputs)
    assert [t.name for t in fig.data] == ["data x", "input x → g(μ(x))", "reconstruction g(μ(x))",
                                          "decoded prior sample g(z), z ~ N(0, I)"]
    np.testing.assert_allclose(np.c_[fig.data[0].x, fig.data[0].y], cloud)
    lines = np.c_[fig.data[1].x, fig.data[1].y].reshape(4, 3, 2)  # input, reconstruction, gap
    np.testing.assert_allclose(lines[:, 0], inputs)
    np.testing.assert_allclose(lines[:, 1], recons)
    assert np.isnan(lines[:, 2]).all()
    np.testing.assert_allclose(np.c_[fig.data[2].x, fig.data[2].y], recons)
    np.testing.assert_allclose(np.c_[fig.data[3].x, fig.data[3].y], prior)
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    bare = plots.data_space(cloud, recons[:3])  # inputs default to the cloud's first points
    np.testing.assert_allclose(np.c_[bare.data[1].x, bare.data[1].y].reshape(3, 3, 2)[:, 0], cloud[:3])
    assert len(plots.data_space(cloud).data) == 1


def _luminance(colour: str) -> float:
    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_sigma_map_colour_scale_runs_dark_to_bright_without_wrapping():
    df = pd.DataFrame({"step": [1, 2], "split": "train", "name": "sigma2", "value": [0.1, 0.01]})
    sigma2 = np.geomspace(1e-4, 1e-1, 64)
    fig = plots.sigma_evolution(df, sigma2, (1, 8, 8), 2)
    heat = fig.data[-1]
    lum = [_luminance(c) for _, c in heat.colorscale]
    assert all(a < b for a, b in zip(lum, lum[1:])), lum  # brighter at every stop: the smallest σ² is darkest
    assert lum[0] < 0.3 * lum[-1]
    assert "log₁₀ σ²" in heat.colorbar.title.text
    np.testing.assert_allclose(np.asarray(heat.z).ravel(), np.log10(sigma2), rtol=1e-12)


def test_log_axes_label_decades_or_one_two_five_and_cover_the_data():
    decades = plots.log_axis([3e-4, 0.2])
    assert list(decades["tickvals"]) == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert decades["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert len(decades["minor"]["tickvals"]) == 9 * 5 and "ticktext" not in decades["minor"]  # minor: no labels
    assert decades["range"] == pytest.approx([-4.16, 0.16]) and decades["minor"]["showgrid"]
    narrow = plots.log_axis([0.021, 0.048, np.nan, 0.0])
    assert narrow["tickvals"] == pytest.approx([0.02, 0.05]) and narrow["ticktext"] == ["0.02", "0.05"]
    wide = plots.log_axis([1e-12, 10.0])
    assert len(wide["tickvals"]) <= 9 and wide["tickvals"][0] == pytest.approx(1e-12) and wide["tickvals"][-1] == 10
    lone = plots.log_axis([0.25])
    assert len(lone["tickvals"]) == 2 and lone["tickvals"][0] <= 0.25 <= lone["tickvals"][-1]
    df = pd.DataFrame({"step": [1, 2, 3], "split": "train", "name": "sigma2", "value": [0.3, 0.01, 0.002]})
    fig = plots.sigma_evolution(df)
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis.ticktext) == ["0.001", "0.01", "0.1", "1"]
    bars = plots.sigma_evolution(df, np.array([0.1, 0.2]), (2,), 3)
    assert bars.layout.yaxis2.type == "log" and list(bars.layout.yaxis2.ticktext) == ["0.1", "0.2"]
    assert bars.layout.yaxis2.range[0] < -1 < math.log10(0.2) < bars.layout.yaxis2.range[1]  # both bars show


# -- bounds ----------------------------------------------------------------------------------------


def _metrics(name: str, values) -> pd.DataFrame:
    return pd.DataFrame({"step": np.arange(1, len(values) + 1), "split": "train", "name": name,
                         "value": np.float32(values)})


def test_every_bound_names_a_knob_and_a_term_its_objective_logs():
    for name, cls in REGISTRY.items():
        params = RunConfig().with_overrides({"objective.name": name}).objective.params
        for bound in cls.bounds(params):
            assert cls.logs(bound.term) and hasattr(params, bound.knob) and bound.side in ("min", "max"), name
            assert bound.label and bound.note


def test_touched_bounds_reads_each_objectives_bounds_from_its_metrics():
    geco = RunConfig().with_overrides({"objective.name": "geco", "objective.lambda_max": 50.0})
    hits = touched_bounds(geco, _metrics("lambda", [1.0, 1e-6, 2e-6, 1e-6, 50.0]))
    assert [(h.bound.knob, h.value, h.step) for h in hits] == [("lambda_max", 50.0, 5), ("lambda_min", 1e-6, 2)]
    assert hits[0].describe() == "lambda reached lambda_max = 50 at step 5"
    assert touched_bounds(geco, _metrics("lambda", [1.0, 2.0, 49.0])) == []
    sigma = RunConfig().with_overrides({"objective.name": "sigma_vae", "objective.sigma_min": 0.1})
    (hit,) = touched_bounds(sigma, _metrics("sigma2", [0.5, 0.02, 0.01, 0.01]))
    assert (hit.bound.term, hit.value, hit.step) == ("sigma2", pytest.approx(0.01), 3)
    assert hit.describe() == "sigma2 reached sigma_min^2 = 0.01 at step 3"
    assert touched_bounds(sigma, _metrics("sigma2", [0.5, 0.0101])) == []  # the hard floor is exact
    per_dim = RunConfig().with_overrides({"objective.name": "sigma_vae", "objective.variance": "per_dim",
                                          "objective.sigma_min": 0.1})
    assert touched_bounds(per_dim, _metrics("sigma2", [0.01, 0.01])) == []  # per dimension: its smallest σ² counts
    (soft,) = touched_bounds(per_dim, _metrics("sigma2_min", [0.5, 0.0105]))  # the soft floor, within 10 %
    assert soft.step == 2 and isinstance(soft, BoundHit)
    assert touched_bounds(RunConfig(), _metrics("loss", [1.0])) == []  # a VAE has no bounds


def test_first_at_bound_sides():
    s = pd.Series([5.0, 1.0, 10.0], index=[10, 20, 30])
    assert first_at_bound(s, 10.0, "max", 1e-5) == 30 and first_at_bound(s, 1.0, "min", 1e-5) == 20
    assert first_at_bound(s, 0.5, "min", 1e-5) is None and first_at_bound(s.iloc[:0], 1.0, "max", 0.1) is None


def _show(capsys, *sets: str) -> str:
    assert main(["train", *[a for s in [*CLI, *sets] for a in ("--set", s)]]) == 0
    run_id = capsys.readouterr().out.splitlines()[0].removeprefix("run: ")
    assert main(["show", run_id]) == 0
    return capsys.readouterr().out


def test_show_prints_a_line_per_bound_the_run_reached(capsys):
    out = _show(capsys, "objective.name=geco", "objective.kappa=0.05", "objective.lambda_max=3")
    lines = [line for line in out.splitlines() if line.startswith("bound:")]
    assert len(lines) == 1 and lines[0].startswith("bound:     lambda reached lambda_max = 3 at step "), out
    step = int(lines[0].rsplit(" ", 1)[1])
    lam = RunStore().metrics(RunStore().list_runs()[0].id, split="train", names=["lambda"])
    assert step == int(lam[lam.value >= 3 * (1 - 1e-5)].step.min()) and (lam[lam.step < step].value < 3).all()

    out = _show(capsys, "objective.name=sigma_vae", "objective.sigma_min=0.5")
    assert "bound:     sigma2 reached sigma_min^2 = 0.25 at step 1\n" in out, out
    run = RunStore().list_runs()[0]
    (hit,) = touched_bounds(run.config, RunStore().metrics(run.id))
    assert hit.value == pytest.approx(0.25) and hit.step == 1

    out = _show(capsys, "objective.name=sigma_vae")  # σ_min = 1e-3: σ² stays far above 1e-6
    assert "bound:" not in out and "last train metrics" in out


# -- the σ² and GECO pages ---------------------------------------------------------------------------


def grids(at) -> list[dict]:
    """The page's reconstruction grids: plotly specs whose rows are labelled by the input row."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return [s for s in specs if "input x" in (s["layout"].get("yaxis", {}).get("ticktext") or [])]


def test_sigma_page_warns_of_the_floor_and_shows_the_reconstruction_grid(monkeypatch):
    from test_app import app, page, problems

    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: None)
    store, run_id = trained({"objective.name": "sigma_vae", "objective.sigma_min": 0.5})
    at = page(app(store, monkeypatch, run=run_id), "sigma")
    assert not problems(at)
    (warning,) = [w.value for w in at.warning]
    assert warning.startswith(plain("σ² reached its floor during the run (σ_min² = 0.25 at step 1). "))
    (grid,) = grids(at)
    assert grid["layout"]["title"]["text"] == "Held-out inputs and their reconstructions"
    assert grid["layout"]["yaxis"]["ticktext"] == ["input x", "g(μ(x))", "g(z), z ~ q(z|x)"] * 2
    assert any(plain("16 held-out examples") in c.value and plain("the weights of step 60") in c.value
               for c in at.caption)


def test_geco_page_shows_reconstructions_and_no_warning_without_a_clamp(monkeypatch):
    from test_app import app, page, problems

    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: None)
    store, run_id = trained({"objective.name": "geco", "objective.kappa": 0.3})
    assert touched_bounds(store.get(run_id).config, store.metrics(run_id)) == []
    at = page(app(store, monkeypatch, run=run_id), "geco")
    assert not problems(at) and not at.warning
    assert len(grids(at)) == 1


def test_a_deterministic_encoder_shows_inputs_above_their_codes_decoded_only(monkeypatch):
    from test_app import app, page, problems

    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: None)
    store, run_id = trained({"objective.name": "rae"})
    at = page(app(store, monkeypatch, run=run_id), "sigma")
    assert not problems(at) and not at.warning
    (grid,) = grids(at)
    assert grid["layout"]["yaxis"]["ticktext"] == ["input x", "g(μ(x))"] * 2  # no posterior sample to draw
    assert not any(plain("posterior sample") in c.value for c in at.caption)
