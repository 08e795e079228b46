"""Compare (issue 15): a comparison keeps the selected run's knobs and chooses the others for its data (GECO's κ, λ₀
and ν from the run's measured MSE); a launch picks the new runs without a reload; the tilings share one legend on
square panels that say which plane they show; the metrics table names its columns with units and directions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from test_app import REPO, make_run

from vaeviz import app_state, plots
from vaeviz.config import RunConfig
from vaeviz.objective_params import GECOParams
from vaeviz.objectives import REGISTRY
from vaeviz.presets import preset_config
from vaeviz.runs import RunStore
from vaeviz.train import train

LATENT8 = {"objective.name": "vae", "model.latent_dim": 8}


def with_mse(store: RunStore, cfg: RunConfig, train_mse: list[float], eval_mse: dict[int, float]) -> str:
    """A run whose logged MSE is known: `train_mse` at steps 1, 2, ... and `eval_mse` {step: value}."""
    run_id = store.create_run(cfg)
    rows = [(i + 1, "train", "mse", v) for i, v in enumerate(train_mse)]
    store.add_metrics(run_id, rows + [(step, "eval", "mse", v) for step, v in eval_mse.items()])
    return run_id


# -- suggested knobs --------------------------------------------------------------------------------


def test_measured_error_is_the_last_held_out_mse_else_the_recent_training_mse(tmp_path):
    store = RunStore(tmp_path)
    cfg = RunConfig()
    held_out = with_mse(store, cfg, [0.5] * 300, {100: 0.09, 300: 0.04})
    assert app_state.measured_error(store, held_out, 64) == {"mse": 0.04, "dim": 64, "split": "eval", "step": 300}
    training = with_mse(store, cfg, [0.5] * 200 + [0.03] * 100, {})  # the last 100 steps only
    assert app_state.measured_error(store, training, 784) == pytest.approx(
        {"mse": 0.03, "dim": 784, "split": "train", "step": 300})
    assert app_state.measured_error(store, store.create_run(cfg), 64) == {}


def test_geco_of_a_comparison_takes_kappa_from_the_runs_measured_error(tmp_path):
    """MSE 0.04 per dimension over d = 64: κ = √0.04 = 0.2, λ₀ = d/(2κ²) = 800, ν = 10⁻³/κ² = 0.025."""
    store = RunStore(tmp_path)
    cfg = RunConfig().with_overrides(LATENT8)
    run_id = with_mse(store, cfg, [0.3] * 50, {50: 0.04})
    measured = app_state.measured_error(store, run_id, 64)
    vae, geco, sigma = app_state.plan_comparison(cfg, ["vae", "geco", "sigma_vae"], measured)
    knobs = geco.config.objective
    assert (knobs.kappa, knobs.lambda_init, knobs.nu) == (0.2, 800.0, 0.025)
    assert geco.suggested == {"kappa": 0.2, "lambda_init": 800.0, "nu": 0.025}
    assert vae.config.objective == cfg.objective and not vae.suggested  # the run's own objective: its own knobs
    assert not sigma.suggested and sigma.config.objective == RunConfig().with_overrides(
        {"objective.name": "sigma_vae"}).objective
    assert all((p.config.data, p.config.model, p.config.train) == (cfg.data, cfg.model, cfg.train)
               for p in (vae, geco, sigma))
    assert app_state.comparison_configs(cfg, ["geco"], measured) == [geco.config]
    default = app_state.plan_comparison(cfg, ["geco"])[0].config.objective  # nothing measured: the defaults
    assert (default.kappa, default.lambda_init, default.nu) == (0.1, 1.0, 1.0)


def test_a_presets_decoder_and_sigma_are_kept(tmp_path):
    """mixture-2d (Gaussian decoder, σ = 0.05): every objective with those knobs keeps them; GECO gets its κ from
    the run's error; a GECO run compared with GECO keeps its own κ."""
    cfg = preset_config("mixture-2d")
    measured = {"mse": 0.0025, "dim": 2, "split": "eval", "step": 2000}
    plan = app_state.plan_comparison(cfg, ["beta_vae", "beta_tcvae", "hfvae", "sigma_vae", "geco"], measured)
    for p in plan[:3]:
        assert (p.config.objective.decoder, p.config.objective.sigma) == ("gaussian", 0.05), p.config.objective.name
        assert p.kept == {"decoder": "gaussian", "sigma": 0.05}
    assert plan[4].config.objective.kappa == 0.05 and plan[4].config.objective.lambda_init == 400.0  # 2/(2·0.05²)
    geco = preset_config("geco-digits")  # κ = 0.2, ν = 1
    (same,) = app_state.plan_comparison(geco, ["geco"], {"mse": 0.01, "dim": 64})
    assert same.config.objective == geco.objective and same.kept == {"kappa": 0.2} and not same.suggested


def test_only_a_constraint_on_the_mse_takes_a_kappa_from_it():
    measured = {"mse": 0.04, "dim": 64}
    assert REGISTRY["geco"].suggested(GECOParams(), measured)["kappa"] == 0.2
    for kind in ("fre", "cla"):  # κ in feature distance or probability: nothing measured in those units
        assert REGISTRY["geco"].suggested(GECOParams(constraint=kind), measured) == {}
    assert REGISTRY["geco"].suggested(GECOParams(), {}) == {}
    others = [cls for cls in REGISTRY.values() if cls is not REGISTRY["geco"]]
    assert [cls.suggested(cls.Params(), measured) for cls in others] == [{}] * len(others)  # the base's default


def lambda_path(store: RunStore, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    run_id = store.create_run(cfg)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    df = store.metrics(run_id, split="train", names=["lambda", "c_ma"])
    w = df.pivot_table(index="step", columns="name", values="value").sort_index()
    return w["lambda"].to_numpy(), w["c_ma"].to_numpy()


def test_geco_with_the_suggested_knobs_meets_its_constraint_inside_the_clamps(tmp_path):
    """After a σ-VAE on digits (latent 8), GECO with the knobs chosen from its held-out MSE meets the constraint
    with λ far below λ_max; with the default knobs (κ = 0.1, ν = 1, λ₀ = 1) λ sits at λ_max."""
    store = RunStore(tmp_path)
    base = preset_config("sigma-vae-digits").with_overrides(
        {"model.hidden": [64, 64], "train.steps": 1000, "train.eval_every": 500, "train.checkpoint_every": 1000})
    run_id = store.create_run(base)
    train(base, store.sink(run_id), workdir=store.artifact_dir(run_id))
    measured = app_state.measured_error(store, run_id, 64)
    (geco,) = app_state.comparison_configs(base, ["geco"], measured)
    assert geco.objective.kappa == float(f"{math.sqrt(measured['mse']):.3g}")
    lam, c_ma = lambda_path(store, geco)
    assert lam.max() < 1e-3 * geco.objective.lambda_max and (c_ma <= 0).any()
    lam, _ = lambda_path(store, base.with_overrides({"objective.name": "geco"}))
    assert lam.max() >= 1e8 * (1 - 1e-5)


# -- the page -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A store with two finished digits runs of an 8-D latent: a VAE (Bernoulli decoder) and a σ-VAE."""
    store = RunStore(tmp_path_factory.mktemp("compare_home"))
    return store, make_run(store, LATENT8, name="base"), make_run(store, {**LATENT8, "objective.name": "sigma_vae"},
                                                                     name="other")


@pytest.fixture
def no_worker(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: calls.append(store.home))
    return calls


def compare_page(store: RunStore, monkeypatch, run_id: str) -> AppTest:
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["run"] = run_id
    return at.run().switch_page("views/compare.py").run()


def problems(at: AppTest) -> list[str]:
    return [e.message for e in at.exception] + [e.value for e in at.error]


def figure(at: AppTest, title: str) -> dict:
    (spec,) = [s for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
               if s["layout"].get("title", {}).get("text") == title]
    return spec


def test_launch_picks_the_new_runs_at_once(tmp_path, monkeypatch, no_worker):
    store = RunStore(tmp_path / "launch")
    base = make_run(store, LATENT8, name="base")
    at = compare_page(store, monkeypatch, base)
    assert any("Pick at least two runs" in i.value for i in at.info)
    at.multiselect(key="cmp_objectives").set_value(["vae", "beta_vae", "sigma_vae", "geco"])
    at.button(key="cmp_launch").click().run()
    new = {r.objective: r for r in store.list_runs() if r.id != base}
    assert not problems(at) and no_worker  # a worker was asked for
    assert sorted(at.multiselect(key="cmp_pick").value) == sorted(r.id for r in new.values())
    assert not [i for i in at.info if "Pick at least two runs" in i.value]
    assert figure(at, "Information plane")  # drawn for the picked runs, in this very run of the script
    mse = store.metrics(base, split="eval", names=["mse"]).sort_values("step")["value"].iloc[-1]
    assert new["geco"].config.objective.kappa == float(f"{math.sqrt(mse):.3g}")
    at.button(key="cmp_launch").click().run()  # again: the same names get a suffix, never a clash
    assert sorted(r.name for r in store.list_runs() if r.objective == "geco") == ["geco-digits-cmp",
                                                                                  "geco-digits-cmp-2"]


def test_tilings_share_one_legend_on_square_panels_of_the_pca_plane(finished, monkeypatch, no_worker):
    store, base, other = finished
    at = compare_page(store, monkeypatch, base)
    at.multiselect(key="cmp_pick").set_value([base, other]).run()
    assert not problems(at)
    fig = figure(at, "Posterior tilings")
    legend = [t["name"] for t in fig["data"] if t.get("showlegend", True)]
    assert legend == [str(k) for k in range(10)] + ["prior 1σ"]  # each class once, for both panels
    colours = {}
    for t in fig["data"]:
        colours.setdefault(t["name"], set()).add(t.get("line", {}).get("color"))
    assert all(len(c) == 1 for c in colours.values())  # a class has one colour in every panel
    layout = fig["layout"]
    for x, y in (("xaxis", "yaxis"), ("xaxis2", "yaxis2")):
        assert layout[y]["scaleanchor"] == x.replace("axis", "") and layout[x]["range"] == layout[y]["range"]
        assert (layout[x]["title"]["text"], layout[y]["title"]["text"]) == ("PC1 of μ (8-D latent)",
                                                                            "PC2 of μ (8-D latent)")
    assert any("PCA of μ" in c.value for c in at.caption)
    at.radio(key="cmp_view").set_value("z₁, z₂").run()
    layout = figure(at, "Posterior tilings")["layout"]
    assert layout["xaxis"]["title"]["text"] == "z₁ (8-D latent)"
    assert any("Only z₁ and z₂ of the 8-D latent" in c.value for c in at.caption)


def test_metrics_table_names_units_and_directions(finished, monkeypatch, no_worker):
    store, base, other = finished
    at = compare_page(store, monkeypatch, base)
    at.multiselect(key="cmp_pick").set_value([base, other]).run()
    at.button(key="cmp_eval").click().run()
    assert not problems(at)
    table = figure(at, "Held-out metrics")["data"][0]
    header = table["header"]["values"]
    assert "ELBO †<br>nats<br>↑ better" in header  # a Bernoulli and a Gaussian decoder: not comparable
    assert "σ-free NLL*<br>nats<br>↓ better" in header
    assert "holes<br>prior mass<br>↓ better" in header
    assert not [h for h in header if "MIG" in h]  # digits have no known factors: no run has a MIG
    assert not {"nll_sigma_free", "fd_prior", "elbo"} & set(header)
    elbo = table["cells"]["values"][header.index("ELBO †<br>nats<br>↑ better")]
    assert all(float(v) < 0 for v in elbo)
    note = [c.value for c in at.caption if "probability mass" in c.value]
    assert note and "σ" in note[0] and "bernoulli" in note[0]
    assert figure(at, "Fréchet distance of decoded samples, by sampler")  # kept


def test_tiling_panels_of_a_deterministic_encoder_draw_codes():
    rng = np.random.default_rng(0)
    mu, labels = rng.normal(size=(40, 2)) * 3, np.arange(40) % 4
    fig = plots.tiling_panels([
        {"title": "codes", "points": mu, "labels": labels, "class_names": None, "axes": ("z₁", "z₂")},
        {"title": "<b>x</b>", "outlines": np.stack([mu[:, None]] * 5, 1)[:, :, 0], "labels": labels,
         "class_names": None, "axes": ("z₁", "z₂")}])
    assert fig.data[0].mode == "markers" and fig.data[5].mode == "lines"
    assert fig.layout.xaxis.range[1] >= np.abs(mu).max() and fig.layout.xaxis.range == fig.layout.yaxis.range
    assert fig.layout.annotations[1].text == "&lt;b&gt;x&lt;/b&gt;"  # a run name is literal text
