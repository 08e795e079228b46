"""AppTest: every page renders with no runs, a finished run and a running run; the Train, Runs and Compare
actions do what they say; errors reach the page as messages, never as tracebacks."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vaeviz.app_state import plain, short
from vaeviz.config import RunConfig
from vaeviz.control import Cancelled
from vaeviz.plots import literal
from vaeviz.runs import RunStore
from vaeviz.train import train

REPO = Path(__file__).resolve().parents[1]
PAGES = ["train", "info_plane", "tiling", "holes", "sigma", "geco", "traversals", "compare", "beta", "runs"]
TINY = {"data.name": "digits", "model.hidden": "32,32", "train.steps": 150, "train.eval_every": 50,
        "train.checkpoint_every": 50, "train.probe_size": 300}


def make_run(store: RunStore, overrides: dict, stop_at: int | None = None, name: str | None = None) -> str:
    """Train a tiny run in this process; stopped at `stop_at` it stays `running` (owned by this live process)."""
    cfg = RunConfig().with_overrides({**TINY, **overrides})
    run_id = store.create_run(cfg, name, worker_pid=os.getpid())
    reached = {"stop": False}

    def progress(step, total, metrics):
        reached["stop"] = stop_at is not None and step >= stop_at

    try:
        train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id), progress=progress,
              should_stop=lambda: reached["stop"])
    except Cancelled:
        return run_id
    store.set_status(run_id, "done", device="cpu")
    return run_id


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> dict[str, tuple[RunStore, dict[str, str]]]:
    """Three stores: none (no runs), finished (a GECO and a 3-D σ-VAE run, done), running (a VAE at step 100/300)."""
    out = {}
    for name in ("none", "finished", "running"):
        out[name] = (RunStore(tmp_path_factory.mktemp(name)), {})
    store, ids = out["finished"]
    ids["geco"] = make_run(store, {"objective.name": "geco", "objective.kappa": 0.3, "objective.alpha": 0.9,
                                  "model.latent_dim": 2})
    ids["sigma"] = make_run(store, {"objective.name": "sigma_vae", "model.latent_dim": 3})
    store, ids = out["running"]
    ids["vae"] = make_run(store, {"objective.name": "vae", "model.latent_dim": 2, "train.steps": 300}, stop_at=100)
    return out


@pytest.fixture
def no_worker(monkeypatch) -> list:
    """Record ensure_worker calls instead of starting worker processes."""
    calls = []
    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: calls.append(store.home))
    return calls


def app(home: RunStore, monkeypatch, **query) -> AppTest:
    monkeypatch.setenv("VAEVIZ_HOME", str(home.home))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(f"views/{name}.py").run()


def problems(at: AppTest) -> list[str]:
    return [e.message for e in at.exception] + [e.value for e in at.error]


@pytest.mark.parametrize("state", ["none", "finished", "running"])
def test_every_page_renders(homes, state, monkeypatch, no_worker):
    store, ids = homes[state]
    at = app(store, monkeypatch)
    failures = {}
    for name in PAGES:
        page(at, name)
        if problems(at):
            failures[name] = problems(at)
    assert not failures
    if state == "none":
        assert any("No runs yet" in i.value for i in at.info)
    else:
        assert at.sidebar.selectbox(key="run").value in ids.values()


def test_pages_show_their_main_element(homes, monkeypatch, no_worker):
    store, ids = homes["finished"]
    at = app(store, monkeypatch, run=ids["geco"])
    assert at.sidebar.selectbox(key="run").value == ids["geco"]
    for name in ["info_plane", "tiling", "holes", "geco", "traversals"]:
        page(at, name)
        assert at.get("plotly_chart"), name
        assert not problems(at), name
    page(at, "geco")
    assert "step" in at.metric[2].value  # κ = 0.3 is met within 150 steps


def test_query_params_pick_run_and_step(homes, monkeypatch, no_worker):
    store, ids = homes["finished"]
    at = app(store, monkeypatch, run=ids["sigma"], step="50")
    page(at, "tiling")
    assert at.sidebar.selectbox(key="run").value == ids["sigma"]
    assert at.select_slider(key="scrub_tiling").value == 50
    at.select_slider(key="scrub_tiling").set_value(100).run()
    assert (at.query_params["step"], at.query_params["run"]) == ("100", ids["sigma"])
    page(at, "sigma")
    assert at.select_slider(key="scrub_sigma").value == 100  # the step follows across pages
    chart = at.get("plotly_chart")[0]  # (the reconstruction grid follows it)
    assert '"heatmap"' in chart.proto.spec  # σ² curves beside the per-pixel σ² map


def test_form_links_preset_names_and_comparisons_follow_the_config():
    """The link of a form holds only what differs from the defaults and gives the form back; a preset's run name
    takes a suffix when taken; a comparison from a Gaussian-decoder run keeps the decoder where it means the same."""
    from vaeviz import app_state
    from vaeviz.presets import preset_config

    cfg = preset_config("mixture-2d").with_overrides({"objective.name": "beta_vae", "objective.beta": 0.5})
    form = app_state.form_of(cfg)
    values = {k.split(":")[-1]: v for k, v in form.items()}
    link = app_state.form_params(values, "mixture-2d")
    assert link == {"data.name": "gaussian_mixture", "model.hidden": "64,64", "objective.name": "beta_vae",
                    "objective.decoder": "gaussian", "objective.sigma": "0.05", "objective.beta": "0.5",
                    "preset": "mixture-2d"}
    assert app_state.form_from_params(link) == (form, [])
    assert app_state.form_from_params({"objective.sigma": "20", "data.path": "/etc/passwd"})[1] == [
        "objective.sigma=20"]  # refused; a path is never read from a link
    assert app_state.preset_run_name("micro-mnist-2d", "vae", []) == "micro-mnist-2d"
    assert app_state.preset_run_name("micro-mnist-2d", "vae", ["micro-mnist-2d", "micro-mnist-2d-2"]) == \
        "micro-mnist-2d-3"
    assert app_state.preset_run_name("mixture-2d", "beta_vae", []) == "mixture-2d-beta_vae"
    vae, beta = app_state.comparison_configs(preset_config("mixture-2d"), ["vae", "beta_vae"])
    assert (beta.objective.decoder, beta.objective.sigma) == ("gaussian", 0.05) == (vae.objective.decoder,
                                                                                    vae.objective.sigma)


def test_tiling_draws_a_small_training_split_whole(monkeypatch, no_worker, tmp_path, data_dir):
    """Micro-MNIST (7 training images): the tiling shows the training split by default and says so, all 7
    posteriors with their decoded images on the plot and in a strip beside it; the points slider starts at 1."""
    import json

    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(data_dir))
    store = RunStore(tmp_path / "micro")
    run_id = make_run(store, {"data.name": "mnist", "data.n": 7, "train.batch_size": 7, "model.hidden": "64,32",
                              "train.steps": 100, "train.eval_every": 50, "train.checkpoint_every": 50})
    at = page(app(store, monkeypatch, run=run_id), "tiling")
    assert not problems(at)
    assert at.radio(key="tile_split").value == "training"
    assert any("all 7 training examples" in c.value for c in at.caption)
    assert at.select_slider(key="scrub_tiling_train").value == 100
    assert at.select_slider(key="tile_n_train").options[0] == "1" and at.select_slider(key="tile_n_train").value == 7
    tiles, strip = (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    assert len(tiles["layout"]["images"]) == 7  # each example's g(μ) at its μ
    assert [t["text"] for t in tiles["data"] if t.get("name") == "examples"] == [[str(i) for i in range(1, 8)]]
    assert strip["layout"]["xaxis"]["ticktext"] == [str(i) for i in range(1, 8)]
    at.select_slider(key="tile_n_train").set_value(1).run()
    assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["images"]) == 1
    at.radio(key="tile_split").set_value("held-out").run()
    assert not problems(at) and at.select_slider(key="tile_n").options[0] == "1"
    assert any("Held-out split" in c.value for c in at.caption)


def test_tiling_of_a_large_training_split_shows_the_held_out_probe(homes, monkeypatch, no_worker):
    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["geco"]), "tiling")
    assert not at.get("radio") or "tile_split" not in [r.key for r in at.radio]
    assert any("Held-out split" in c.value for c in at.caption)
    assert at.select_slider(key="tile_n").options[0] == "1"


def test_traversal_slider_changes_the_decoded_image(homes, monkeypatch, no_worker):
    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["sigma"]), "traversals")
    before = at.image[0].proto.imgs[0].url
    at.slider(key=f"z_{ids['sigma']}_0").set_value(2.5).run()
    assert not problems(at)
    after = at.image[0].proto.imgs[0].url
    assert before != after
    for view in ["Traversal grid", "Interpolation", "Samples"]:
        at.segmented_control(key="tview").set_value(view).run()
        assert not problems(at), view
    at.segmented_control(key="tview").set_value("Traversal grid").run()
    assert at.get("download_button")


def test_launch_enqueues_exactly_the_chosen_config(homes, monkeypatch, no_worker, tmp_path):
    store = RunStore(tmp_path / "launch")
    at = app(store, monkeypatch)
    at.selectbox(key="cfg:objective.name").set_value("geco").run()
    at.number_input(key="cfg:geco:objective.kappa").set_value(0.15)
    at.number_input(key="cfg:model.latent_dim").set_value(4)
    at.text_input(key="cfg:model.hidden").input("64,32")
    at.number_input(key="cfg:train.steps").set_value(250).run()
    page(page(at, "runs"), "train")  # the form survives a visit to another page
    at.number_input(key="cfg:train.eval_every").set_value(50)
    at.button(key="launch").click().run()
    assert not problems(at)
    (rec,) = store.list_runs()
    want = RunConfig().with_overrides({"objective.name": "geco", "objective.kappa": 0.15, "model.latent_dim": 4,
                                       "model.hidden": "64,32", "train.steps": 250, "train.eval_every": 50})
    assert rec.status == "queued"
    assert rec.config.to_dict() == want.to_dict()
    assert store.home in no_worker  # a worker was asked for
    assert at.sidebar.selectbox(key="run").value == rec.id  # and the new run is selected


def test_preset_fills_the_form(homes, monkeypatch, no_worker, tmp_path):
    store = RunStore(tmp_path / "preset")
    at = app(store, monkeypatch)
    at.selectbox(key="preset").set_value("sigma-vae-digits").run()
    assert at.selectbox(key="cfg:objective.name").value == "sigma_vae"
    assert at.text_input(key="cfg:model.hidden").value == "256,256"
    at.text_input(key="cfg:model.hidden").input("32")
    at.number_input(key="cfg:train.steps").set_value(20)
    at.button(key="launch").click().run()
    (rec,) = store.list_runs()
    want = RunConfig().with_overrides({"data.name": "digits", "model.hidden": "32", "model.latent_dim": 8,
                                       "objective.name": "sigma_vae", "objective.variance": "global_closed_form",
                                       "train.steps": 20, "name": "sigma-vae-digits"})
    assert rec.config.to_dict() == want.to_dict()
    assert rec.name == "sigma-vae-digits"  # a run launched from a preset is named after it
    at.button(key="launch").click().run()
    assert sorted(r.name for r in store.list_runs()) == ["sigma-vae-digits", "sigma-vae-digits-2"]


def test_objective_switch_after_a_preset_keeps_the_knobs_that_mean_the_same(monkeypatch, no_worker, tmp_path):
    """Preset mixture-2d (Gaussian decoder, σ = 0.05), then β-VAE: decoder and σ stay, and the page says so;
    then σ-VAE, which has neither knob: the page names both as dropped."""
    store = RunStore(tmp_path / "switch")
    at = app(store, monkeypatch)
    at.selectbox(key="preset").set_value("mixture-2d").run()
    at.selectbox(key="cfg:objective.name").set_value("beta_vae").run()
    assert at.selectbox(key="cfg:beta_vae:objective.decoder").value == "gaussian"
    assert at.number_input(key="cfg:beta_vae:objective.sigma").value == 0.05
    assert [i.value for i in at.info] == [plain("Kept from vae: objective.decoder = gaussian, objective.sigma = 0.05.")]
    at.number_input(key="cfg:train.steps").set_value(20).run()
    at.button(key="launch").click().run()
    assert not problems(at)
    (rec,) = store.list_runs()
    assert rec.config.objective.to_dict() == {**RunConfig().with_overrides({"objective.name": "beta_vae"}).objective
                                              .to_dict(), "decoder": "gaussian", "sigma": 0.05}
    assert rec.name == "mixture-2d-beta_vae" and rec.config.data.name == "gaussian_mixture"
    at.selectbox(key="cfg:objective.name").set_value("sigma_vae").run()
    (note,) = [i.value for i in at.info]
    for words in ("objective.decoder = gaussian dropped (sigma_vae has no such knob)",
                  "objective.sigma = 0.05 dropped"):
        assert plain(words) in note, note


def test_the_train_form_survives_a_reload(monkeypatch, no_worker, tmp_path):
    """The form's non-default values are in the link; a new session on that link (a reload) shows them, and a
    value the config refuses is left at its default with a notice."""
    store = RunStore(tmp_path / "reload")
    at = app(store, monkeypatch)
    at.selectbox(key="preset").set_value("mixture-2d").run()
    at.selectbox(key="cfg:objective.name").set_value("beta_vae").run()
    at.number_input(key="cfg:beta_vae:objective.beta").set_value(0.5)
    at.number_input(key="cfg:train.steps").set_value(300).run()
    link = dict(at.query_params)
    assert link["objective.name"] == "beta_vae" and link["objective.sigma"] == "0.05" and link["preset"] == "mixture-2d"
    assert "train.lr" not in link  # defaults stay out of the link
    again = app(store, monkeypatch, **link)
    assert again.selectbox(key="cfg:objective.name").value == "beta_vae"
    assert again.selectbox(key="cfg:beta_vae:objective.decoder").value == "gaussian"
    assert (again.number_input(key="cfg:beta_vae:objective.beta").value, again.number_input(key="cfg:train.steps")
            .value, again.selectbox(key="cfg:data.name").value) == (0.5, 300, "gaussian_mixture")
    assert again.selectbox(key="preset").value == "mixture-2d"
    bad = app(store, monkeypatch, **{**link, "train.steps": "-4"})
    assert bad.number_input(key="cfg:train.steps").value == 2000
    assert any("train.steps=-4" in t.value.replace("\\", "") for t in bad.toast)


@pytest.mark.parametrize("setting, message", [
    (("number_input", "cfg:train.lr", 0.0), "train.lr"),
    (("selectbox", "cfg:data.name", "mnist"), "t10k-images-idx3-ubyte.gz"),
])
def test_bad_input_is_refused_with_its_message(monkeypatch, no_worker, tmp_path, setting, message):
    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("VAEVIZ_OFFLINE", "1")
    store = RunStore(tmp_path / "bad")
    at = app(store, monkeypatch)
    kind, key, value = setting
    getattr(at, kind)(key=key).set_value(value).run()
    at.button(key="launch").click().run()
    assert not at.exception
    assert any(plain(message) in e.value for e in at.error), [e.value for e in at.error]
    assert store.list_runs() == []


def test_launch_runs_the_preflight_checks(homes, monkeypatch, no_worker, tmp_path):
    """A network whose training state exceeds VAEVIZ_MAX_MODEL_BYTES is refused at launch, from Train and Compare."""
    monkeypatch.setenv("VAEVIZ_MAX_MODEL_BYTES", "1000")
    store = RunStore(tmp_path / "preflight")
    at = app(store, monkeypatch)
    at.button(key="launch").click().run()
    assert any(plain("VAEVIZ_MAX_MODEL_BYTES") in e.value for e in at.error) and store.list_runs() == []
    store, ids = homes["finished"]
    before = store.list_runs()
    at = page(app(store, monkeypatch, run=ids["geco"]), "compare")
    at.button(key="cmp_launch").click().run()
    assert any(plain("VAEVIZ_MAX_MODEL_BYTES") in e.value for e in at.error) and store.list_runs() == before


def test_runs_page_actions(homes, monkeypatch, no_worker, tmp_path):
    store = RunStore(tmp_path / "actions")
    cfg = RunConfig().with_overrides(TINY)
    failed = store.create_run(cfg, "broken")
    store.claim_next(os.getpid())
    store.set_status(failed, "failed", "diverged at step 7: loss = nan (try a smaller train.lr)")
    other = store.create_run(cfg, "other")
    store.add_metrics(other, [(1, "train", "loss", 3.5)])
    at = page(app(store, monkeypatch, run=failed), "runs")
    assert any("diverged at step 7" in e.value for e in at.error)
    at.button(key="resume").click().run()
    assert store.get(failed).status == "queued"
    store.request_cancel(failed)
    at = page(app(store, monkeypatch, run=other), "runs")
    assert at.get("download_button")
    at.button(key="delete").click().run()
    assert store.get(other)  # not yet: it asks first
    at.button(key="confirm_yes").click().run()
    assert [r.id for r in store.list_runs()] == [failed]
    assert not problems(at)


def test_compare_launches_one_run_per_objective(homes, monkeypatch, no_worker):
    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["geco"]), "compare")
    assert len(at.get("plotly_chart")) >= 3  # the overlaid plane and one tiling per run
    before = {r.id for r in store.list_runs()}
    at.multiselect(key="cmp_objectives").set_value(["vae", "beta_vae", "rae"])
    at.button(key="cmp_launch").click().run()
    new = [r for r in store.list_runs() if r.id not in before]
    try:
        assert sorted(r.objective for r in new) == ["beta_vae", "rae", "vae"]
        base = store.get(ids["geco"]).config
        assert len({r.batch for r in new}) == 1 and new[0].batch is not None  # queued as one batch
        for r in new:
            assert r.status == "queued"
            assert (r.config.data, r.config.model, r.config.train) == (base.data, base.model, base.train)
    finally:
        for r in new:
            store.delete(r.id)


def test_widget_bounds_are_the_validation_bounds():
    """Every numeric knob's widget bounds are accepted by the config and one step past them is refused."""
    from vaeviz import app_state
    from vaeviz.config import ConfigError, DataConfig, ModelConfig, TrainConfig
    from vaeviz.objectives import REGISTRY

    knobs = [(None, k) for cls, p in [(DataConfig, "data"), (ModelConfig, "model"), (TrainConfig, "train")]
             for k in app_state.knobs(cls, p)]
    knobs += [(name, k) for name in REGISTRY for k in app_state.objective_knobs(name)]
    checked = 0
    for objective, k in knobs:
        if k.kind not in ("int", "float") or k.key == "data.per_class":
            continue
        base = {"objective.name": objective} if objective else {}
        for bound, outside in [(k.lo, -1), (k.hi, +1)]:
            if bound is None:
                continue
            if not (k.key == "objective.lambda_init" or bound == 0 and k.kind == "float"):
                app_state.build_config({**base, k.key: bound})  # the bound itself passes (open bounds excepted)
            with pytest.raises(ConfigError, match=k.key.split(".")[1]):
                app_state.build_config({**base, k.key: bound + outside * (1 if k.kind == "int" else abs(bound) or 1)})
            checked += 1
    assert checked > 30


def test_progress_and_comparison_configs():
    from vaeviz import app_state

    store = RunStore()
    cfg = RunConfig().with_overrides(TINY)
    run_id = store.create_run(cfg, worker_pid=os.getpid())
    rec = store.get(run_id)
    rec.started, rec.heartbeat, rec.step = 100.0, 110.0, 50
    p = app_state.progress(rec)
    assert (p.steps_per_s, p.eta_s, p.fraction) == (5.0, 20.0, 50 / 150)
    assert "ETA 20s" in p.text
    cfgs = app_state.comparison_configs(cfg, ["vae", "geco"])
    assert [c.objective.name for c in cfgs] == ["vae", "geco"]
    assert all((c.data, c.model, c.train) == (cfg.data, cfg.model, cfg.train) for c in cfgs)
    assert app_state.nearest([0, 50, 100], 70) == 50 and app_state.nearest([0, 50], None) == 50


def test_traversal_samples_decode_the_samplers_saved_by_training(homes, monkeypatch, no_worker):
    from vaeviz.samplers import GaussianSampler, GMMSampler

    def no_refit(self, latents):
        raise AssertionError("a saved sampler was fitted again")

    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["geco"]), "traversals")
    for cls in (GaussianSampler, GMMSampler):
        monkeypatch.setattr(cls, "fit", no_refit)
    at.segmented_control(key="tview").set_value("Samples").run()
    assert not problems(at)
    assert at.get("plotly_chart")  # prior, single Gaussian and GMM samples


def test_compare_metrics_table_comes_from_vaeviz_eval(homes, monkeypatch, no_worker):
    """The metrics table (the page's last chart) holds every `vaeviz eval` key but the Fréchet distances
    (n_components among them, as a count); those sit side by side, one column per sampler, in a table of their
    own just above it (issue 14)."""
    from vaeviz.data import load_dataset

    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["geco"]), "compare")
    at.button(key="cmp_eval").click().run()
    assert not problems(at)
    specs = [c.proto.spec for c in at.get("plotly_chart")[-2:]]
    fd, table = (json.loads(spec)["data"][0] for spec in specs)
    metrics = table["meta"]  # the columns' keys, after the run column
    for key in ("elbo", "nll_sigma_free", "iwae", "hole_fraction", "marginal_kl", "n_components"):
        assert key in metrics
    assert not {"fd_prior", "fd_gaussian", "fd_gmm"} & set(metrics)
    counts = set(table["cells"]["values"][1 + metrics.index("n_components")])
    n_train = len(load_dataset(store.get(ids["geco"]).config.data).x_train)
    assert counts == {str(min(10_000, n_train))}  # all the training posteriors of digits, printed as a count
    assert fd["header"]["values"] == ["run", "prior N(0, I) · fd_prior", "single Gaussian · fd_gaussian",
                                      "GMM (k = 10) · fd_gmm"]
    assert sorted(fd["cells"]["values"][0]) == sorted(literal(store.get(i).name) for i in ids.values())
    assert all(float(v) > 0 for column in fd["cells"]["values"][1:] for v in column)
    assert all(store.get(i).name in specs[1] for i in ids.values())


def test_holes_fits_q_to_the_training_posteriors_of_the_checkpoint(homes, monkeypatch, no_worker):
    """Issue 14: q(z) is the mixture of every training posterior of the chosen checkpoint, its number shown with
    the direction of its bias; for L = 3 the headline is over all 3 dimensions and the figure matching the map is
    the hole fraction of the 2-D marginal on the chosen axes."""
    from vaeviz.analysis.aggregate import fit_aggregate
    from vaeviz.build import load_run

    store, ids = homes["finished"]
    at = page(app(store, monkeypatch, run=ids["sigma"], step="100"), "holes")
    assert not problems(at) and at.select_slider(key="scrub_holes").value == 100
    setup, _ = load_run(store.get(ids["sigma"]).config, store.artifact_dir(ids["sigma"]), 100)
    agg = fit_aggregate(setup.model, setup.data.x_train)
    assert agg.n_components_ == len(setup.data.x_train) > 1000  # all of digits' training split
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["components N"] == f"{agg.n_components_:,}" and metrics["checkpoint step"] == "100"
    assert metrics["hole fraction"] == f"{agg.hole_fraction(0.1, 5000):.1%}"
    assert metrics["marginal KL(q‖p)"] == f"{agg.marginal_kl(5000):.3f} nats"
    assert any("sample estimate" in c.value and "overestimated" in c.value for c in at.caption)
    for dims in [(0, 1), (0, 2)]:
        if dims != (0, 1):
            at.selectbox(key="hy").set_value(dims[1]).run()
        text = " ".join(m.value for m in at.markdown)
        marginal = agg.marginal(dims)
        assert "over all 3 latent dimensions" in text and f"z{dims[1] + 1} against the 2-D prior" in text
        assert f"**{marginal.hole_fraction(0.1, 5000):.1%}**" in text
        chart = json.loads(at.get("plotly_chart")[0].proto.spec)
        assert f"hole fraction {marginal.hole_fraction(0.1, 5000):.3f}" in chart["layout"]["title"]["text"]
    at = page(app(store, monkeypatch, run=ids["geco"]), "holes")  # L = 2: the map is all of q
    assert not problems(at) and "over all" not in " ".join(m.value for m in at.markdown)


def test_cancel_from_the_train_page(monkeypatch, no_worker, tmp_path):
    store = RunStore(tmp_path / "cancel")
    run_id = store.create_run(RunConfig().with_overrides(TINY), worker_pid=os.getpid())  # running, no metrics yet
    at = app(store, monkeypatch, run=run_id)
    assert any("Waiting for the first metrics" in c.value for c in at.caption)
    assert not store.cancel_requested(run_id)
    at.button(key="cancel").click().run()
    assert store.cancel_requested(run_id) and store.get(run_id).status == "running"  # the worker stops it
    assert not problems(at)


# -- inputs that cannot hurt: user text, links, uploads ----------------------------------------

HOSTILE = ["![n](http://127.0.0.1:9/x.png)", "<img src=x onerror=alert(1)>", "**bold**", "[link](javascript:alert(1))"]
FAILURE = "diverged at ![e](http://127.0.0.1:9/e.png) **loud** <b>x</b> [l](javascript:alert(1)) :red[red] $x$"
MARKDOWN_KINDS = ["markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader", "toast"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[RunStore, list[str]]:
    """Runs named in markdown and HTML: a finished run, a queued one with metrics, a failed one and an interrupted
    one whose error messages are markdown too."""
    store = RunStore(tmp_path_factory.mktemp("hostile"))
    ids = [make_run(store, {"objective.name": "vae"}, name=HOSTILE[0])]
    ids += [store.create_run(RunConfig().with_overrides(TINY), name) for name in HOSTILE[1:]]
    store.add_metrics(ids[1], [(step, split, name, value + step / 50) for step in (0, 50) for split in ("train", "eval")
                               for name, value in (("rate", 1.0), ("distortion", 30.0))])
    store.set_status(ids[2], "failed", FAILURE)
    store.set_status(ids[3], "interrupted", FAILURE)
    return store, ids


def markdown_text(at: AppTest) -> list[str]:
    """Every string of the page that Streamlit renders as markdown (sidebar included)."""
    texts = [e.value for kind in MARKDOWN_KINDS for e in at.get(kind)]
    return texts + [m.label for m in at.metric] + [p.text for p in at.get("progress")]


def chart_strings(at: AppTest) -> list[str]:
    """Every string inside the page's plotly figures (names, titles, table cells), which plotly renders as HTML."""
    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, (list, dict)):
            for item in node.values() if isinstance(node, dict) else node:
                yield from walk(item)

    return [s for chart in at.get("plotly_chart") for s in walk(json.loads(chart.proto.spec))]


@pytest.mark.parametrize("which", range(len(HOSTILE)))
def test_names_and_messages_are_shown_as_text(hostile, monkeypatch, no_worker, which):
    """On every page, each run name and error message appears escaped, never as markdown or HTML."""
    store, ids = hostile
    at = app(store, monkeypatch, run=ids[which])
    shown, charts = [], []
    for name in PAGES:
        page(at, name)
        assert not (at.exception if which >= 2 else problems(at)), (name, problems(at))
        if name == "compare":
            at.multiselect(key="cmp_pick").set_value(ids[:2]).run()
        shown += markdown_text(at)
        charts += chart_strings(at)
    for raw in HOSTILE + [FAILURE]:
        assert not [t for t in shown if raw in t], raw
    assert [t for t in shown if plain(HOSTILE[which]) in t]  # Runs, Compare and the Train progress name it
    if which >= 2:  # the failed and the interrupted run show their error on every page but Compare
        assert sum(plain(FAILURE) in t for t in shown) == len(PAGES) - 1
    assert {literal(HOSTILE[0]), literal(HOSTILE[1])} <= set(charts)  # the information planes' legends
    assert not [s for s in charts if "<img" in s or "<b>" in s]


@pytest.mark.parametrize("raw", ["9" * 5000, "²", "-1", "1e400", "nan", "12 ", HOSTILE[0]])
def test_a_bad_step_in_the_link_falls_back_to_the_latest_step(homes, monkeypatch, no_worker, raw):
    store, ids = homes["finished"]
    at = app(store, monkeypatch, run=ids["sigma"], step=raw)
    assert not problems(at)
    (note,) = [t.value for t in at.toast]
    assert plain(short(raw)) in note and "not a step number" in note and len(note) < 150
    assert "step" not in at.query_params
    page(at, "tiling")
    assert not problems(at)
    assert at.select_slider(key="scrub_tiling").value == store.snapshot_steps(ids["sigma"])[-1]


@pytest.mark.parametrize("raw", ["garbage", "deadbeef", "x" * 5000, "²", HOSTILE[0], HOSTILE[1]])
def test_an_unknown_run_in_the_link_falls_back_to_the_newest_run(homes, monkeypatch, no_worker, raw):
    store, _ = homes["finished"]
    newest = store.list_runs()[0].id
    at = app(store, monkeypatch, run=raw, step="50")
    assert not problems(at)
    (note,) = [t.value for t in at.toast]
    assert plain(short(raw)) in note and len(note) < 150
    assert raw == plain(raw) or raw not in note  # markdown shown escaped
    assert at.sidebar.selectbox(key="run").value == newest and at.query_params["run"] == newest
    page(at, "tiling")
    assert not problems(at)
    assert at.select_slider(key="scrub_tiling").value == 50  # a good step still applies


def test_an_unknown_run_in_the_link_of_an_empty_store(homes, monkeypatch, no_worker):
    at = app(homes["none"][0], monkeypatch, run="nope")
    assert not problems(at) and [t.value for t in at.toast] == ["No run nope here."]
    assert any("No runs yet" in i.value for i in page(at, "runs").info)


def npz_bytes(n: int = 60) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).random((n, 8, 8)).astype(np.float32), y=np.arange(n) % 3)
    return buf.getvalue()


def choose_npz(at: AppTest) -> AppTest:
    at.selectbox(key="cfg:data.name").set_value("npz").run()
    assert "cfg:data.path" not in [t.key for t in at.text_input]  # no server path is ever typed
    return at


def test_npz_data_is_uploaded_and_stored_by_its_content(monkeypatch, no_worker, tmp_path):
    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(tmp_path / "no-data"))
    store = RunStore(tmp_path / "upload")
    at = choose_npz(app(store, monkeypatch))
    assert not at.radio  # an empty data folder: uploads only
    at.button(key="launch").click().run()
    assert any("Upload a .npz file" in e.value for e in at.error) and store.list_runs() == []

    at.file_uploader(key="npz_upload").set_value(("../../x/evil.npz", b"not an npz", "application/zip")).run()
    (error,) = [e.value for e in at.error]
    assert plain("../../x/evil.npz is not a valid .npz file") in error
    assert str(tmp_path) not in error and str(store.home) not in error
    assert not list((store.home / "uploads").iterdir())  # an invalid upload is not kept
    at.button(key="launch").click().run()
    assert store.list_runs() == []

    good = npz_bytes()
    at.file_uploader(key="npz_upload").set_value(("mine.npz", good, "application/zip")).run()
    assert not at.error and any("60 examples" in c.value for c in at.caption)
    at.number_input(key="cfg:train.steps").set_value(20)
    at.button(key="launch").click().run()
    assert not problems(at)
    (rec,) = store.list_runs()
    path = Path(rec.config.data.path)
    assert path == store.home / "uploads" / f"{hashlib.sha256(good).hexdigest()[:32]}.npz"
    assert path.read_bytes() == good and rec.config.data.name == "npz"


def test_an_upload_over_the_limit_is_refused(monkeypatch, no_worker, tmp_path):
    monkeypatch.setenv("VAEVIZ_UPLOAD_MAX_MB", "1")
    store = RunStore(tmp_path / "limit")
    at = choose_npz(app(store, monkeypatch))
    assert at.file_uploader(key="npz_upload").proto.max_upload_size_mb == 1
    at.file_uploader(key="npz_upload").set_value(("big.npz", npz_bytes(6000), "application/zip")).run()
    (error,) = [e.value for e in at.error]
    assert "the limit is 1 MB" in error
    assert not (store.home / "uploads").exists()


def test_npz_data_from_the_data_folder(monkeypatch, no_worker, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "good.npz").write_bytes(npz_bytes())
    (folder / "bad.npz").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not data")
    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(folder))
    store = RunStore(tmp_path / "folder")
    at = choose_npz(app(store, monkeypatch))
    at.radio(key="npz_source").set_value("data folder").run()
    assert at.selectbox(key="npz_folder_file").options == ["bad.npz", "good.npz"]
    at.selectbox(key="npz_folder_file").set_value("bad.npz").run()
    at.button(key="launch").click().run()
    (error,) = [e.value for e in at.error]
    assert plain("bad.npz") in error and str(folder) not in error and store.list_runs() == []
    page(page(at, "runs"), "train")  # the choice survives a visit to another page
    assert at.selectbox(key="npz_folder_file").value == "bad.npz"
    at.selectbox(key="npz_folder_file").set_value("good.npz").run()
    at.number_input(key="cfg:train.steps").set_value(20)
    at.button(key="launch").click().run()
    (rec,) = store.list_runs()
    assert rec.config.data.path == str(folder / "good.npz")
    page(at, "runs")
    assert str(folder) not in at.json[0].proto.body  # the config shows $VAEVIZ_DATA_DIR, not the server's folder
