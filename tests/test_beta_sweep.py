"""β sweeps (issue 15, item 6): the β list, the sweep's configs and names, finding sweeps in the store, their points
and the β plot; run names that say what varies and never repeat (app and CLI); the β sweep page in AppTest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from vaeviz import app_state, plots
from vaeviz.cli import main
from vaeviz.config import ConfigError, RunConfig
from vaeviz.presets import preset_config
from vaeviz.runs import RunStore

REPO = Path(__file__).resolve().parents[1]
SMALL = {"data.name": "digits", "model.hidden": "32", "model.latent_dim": 2, "train.steps": 50}


# -- the β list ----------------------------------------------------------------------------------


def test_default_betas_are_eight_log_spaced_values_from_0_1_to_10():
    betas = app_state.log_betas()
    assert betas == [0.1, 0.193, 0.373, 0.72, 1.39, 2.68, 5.18, 10.0]
    ratios = np.diff(np.log10(betas))
    assert np.allclose(ratios, 2 / 7, atol=0.003)  # evenly spaced in log β (up to the 3-digit rounding)
    text = ", ".join(map(app_state.beta_text, betas))
    assert text == "0.1, 0.193, 0.373, 0.72, 1.39, 2.68, 5.18, 10"
    assert app_state.parse_betas(text) == betas


def test_parse_betas_sorts_and_accepts_commas_and_spaces():
    assert app_state.parse_betas(" 10, 0.5 1e-2;2 ") == [0.01, 0.5, 2.0, 10.0]
    assert app_state.parse_betas("1000, 0.0001") == [0.0001, 1000.0]


@pytest.mark.parametrize("text, message", [
    ("", "list at least two β values"),
    ("4", "list at least two β values"),
    ("1, x", "β 'x' is not a number"),
    ("1, 0", "β = 0 is not in (0, 1000]"),
    ("1, -2", "β = -2 is not in (0, 1000]"),
    ("1, nan", "β = nan is not in (0, 1000]"),
    ("1, inf", "β = inf is not in (0, 1000]"),
    ("1, 2000", "β = 2000 is not in (0, 1000]"),
    ("1, 2, 1.0", "β = 1 is listed twice"),
    (", ".join(str(i + 1) for i in range(17)), "17 β values: a sweep has at most 16"),
])
def test_parse_betas_refuses_bad_input_with_a_message(text, message):
    with pytest.raises(ConfigError) as err:
        app_state.parse_betas(text)
    assert message in str(err.value)


# -- the sweep's configs and names ---------------------------------------------------------------


def test_a_vae_run_is_swept_as_beta_vae_keeping_every_other_knob():
    base = preset_config("mixture-2d").with_overrides({"train.seed": 7, "train.steps": 123})  # Gaussian decoder σ 0.05
    plan = app_state.plan_beta_sweep(base, "mixture-2d", [0.1, 1.0, 10.0], [])
    assert plan.objective == "beta_vae" and plan.switched and plan.notes == []
    assert plan.names == ["mixture-2d β=0.1", "mixture-2d β=1", "mixture-2d β=10"]
    for cfg, beta, name in zip(plan.configs, [0.1, 1.0, 10.0], plan.names, strict=True):
        assert cfg.objective.name == "beta_vae" and cfg.objective.beta == beta and cfg.name == name
        assert (cfg.objective.decoder, cfg.objective.sigma, cfg.objective.schedule) == ("gaussian", 0.05, "constant")
        assert (cfg.data, cfg.model, cfg.train) == (base.data, base.model, base.train)


def test_a_beta_vae_run_keeps_its_objective_and_schedule():
    base = preset_config("beta-vae-annealed-digits")
    plan = app_state.plan_beta_sweep(base, "beta-vae-annealed-digits", [0.5, 4.0], [])
    assert not plan.switched and plan.objective == "beta_vae"
    assert [(c.objective.beta, c.objective.schedule, c.objective.warmup_steps) for c in plan.configs] == [
        (0.5, "linear", 1000), (4.0, "linear", 1000)]


def test_an_objective_without_a_rate_beta_is_switched_and_the_page_is_told_what_went():
    for name in ("vae", "geco", "rae", "beta_tcvae", "hfvae"):  # RAE's and β-TCVAE's β weigh other terms
        assert not app_state.has_rate_beta(name)
    assert app_state.has_rate_beta("beta_vae")
    base = RunConfig().with_overrides({"objective.name": "geco", "objective.kappa": 0.2})
    plan = app_state.plan_beta_sweep(base, "geco-digits", [1.0, 2.0], [])
    assert plan.switched and [c.objective.name for c in plan.configs] == ["beta_vae", "beta_vae"]
    assert plan.notes == ["objective.kappa = 0.2 dropped (beta_vae has no such knob)"]
    tc = RunConfig().with_overrides({"objective.name": "beta_tcvae", "objective.decoder": "gaussian"})
    plan = app_state.plan_beta_sweep(tc, "tc", [1.0, 2.0], [])
    assert [c.objective.beta for c in plan.configs] == [1.0, 2.0] and plan.configs[0].objective.decoder == "gaussian"


def test_names_of_a_second_sweep_get_one_copy_number():
    assert app_state.sweep_stem("vae-digits β=0.316 #2") == "vae-digits"
    assert app_state.sweep_stem("digits-beta_vae beta=10") == "digits-beta_vae"
    assert app_state.sweep_stem("plain") == "plain"
    taken = ["vae-digits β=0.1", "vae-digits β=1"]
    assert app_state.unique_names(["vae-digits β=0.5", "vae-digits β=2"], taken) == [
        "vae-digits β=0.5", "vae-digits β=2"]
    assert app_state.unique_names(["vae-digits β=0.1", "vae-digits β=5"], taken) == [
        "vae-digits β=0.1 #2", "vae-digits β=5 #2"]
    assert app_state.unique_names(["vae-digits β=0.1"], taken + ["vae-digits β=0.1 #2"]) == ["vae-digits β=0.1 #3"]
    with pytest.raises(ConfigError):
        app_state.unique_names(["a", "a"], [])
    # a sweep based on a run of another sweep is named after the same stem
    plan = app_state.plan_beta_sweep(RunConfig(), "vae-digits β=1 #2", [0.1, 1.0], taken)
    assert plan.names == ["vae-digits β=0.1 #2", "vae-digits β=1 #2"]


# -- sweeps in the store and their points --------------------------------------------------------


def _sweep(store: RunStore, betas, base_name="vae-digits", **overrides) -> list[str]:
    base = RunConfig().with_overrides({**SMALL, **overrides})
    taken = [r.name for r in store.list_runs()]
    plan = app_state.plan_beta_sweep(base, base_name, betas, taken)
    return store.create_batch(plan.configs, plan.names)


def test_beta_sweeps_are_batches_that_differ_only_in_beta(vaeviz_home):
    store = RunStore()
    first = _sweep(store, [0.1, 1.0, 10.0])
    cfgs = app_state.comparison_configs(RunConfig().with_overrides(SMALL), ["vae", "beta_vae"])
    store.create_batch(cfgs, [c.name for c in cfgs])  # a comparison: not a β sweep
    seeds = [RunConfig().with_overrides({**SMALL, "objective.name": "beta_vae", "train.seed": s}) for s in (0, 1)]
    store.create_batch(seeds)  # the same β twice: not a β sweep
    second = _sweep(store, [10.0, 0.5])
    sweeps = app_state.beta_sweeps(store.list_runs())
    assert [[r.id for r in sw.runs] for sw in sweeps] == [[second[1], second[0]], first]  # newest first, by β
    assert sweeps[1].betas == [0.1, 1.0, 10.0]
    assert sweeps[0].label == f"vae-digits #2 · β 0.5 … 10 · 2 runs · batch {sweeps[0].batch}"
    names = [r.name for r in store.list_runs()]
    assert len(names) == len(set(names))  # no two entries of a run picker alike


def test_sweep_points_take_the_latest_eval_else_the_last_training_batch(vaeviz_home):
    store = RunStore()
    ids = _sweep(store, [0.5, 2.0, 8.0])
    store.add_metrics(ids[0], [(0, "eval", "rate", 9.0), (0, "eval", "distortion", 40.0),
                               (100, "eval", "rate", 6.0), (100, "eval", "distortion", 30.0),
                               (100, "eval", "active_units", 2.0), (150, "train", "rate", 1.0),
                               (150, "train", "distortion", 1.0)])
    store.add_metrics(ids[1], [(10, "train", "rate", 3.0), (10, "train", "distortion", 50.0),
                               (20, "train", "rate", 2.5), (20, "train", "distortion", 45.0)])
    (sweep,) = app_state.beta_sweeps(store.list_runs())
    points = app_state.sweep_points(store, sweep.runs)  # the third run has logged nothing: no point
    assert points[["beta", "step", "split", "rate", "distortion", "neg_elbo"]].values.tolist() == [
        [0.5, 100, "eval", 6.0, 30.0, 36.0], [2.0, 20, "train", 2.5, 45.0, 47.5]]
    assert points.active_units.iloc[0] == 2.0 and math.isnan(points.active_units.iloc[1])
    assert list(points.run) == ["vae-digits β=0.5", "vae-digits β=2"]


# -- the β plot ------------------------------------------------------------------------------------


def _points(betas, names=None) -> pd.DataFrame:
    rate = [20.0 / (1 + b) for b in betas]
    dist = [30.0 + 5 * b for b in betas]
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(betas))], "run": names or [f"β={b}" for b in betas],
                         "beta": betas, "status": "done", "step": 300, "split": "eval", "rate": rate,
                         "distortion": dist, "neg_elbo": [r + d for r, d in zip(rate, dist, strict=True)],
                         "active_units": 2.0})


def test_beta_curves_plot_r_d_and_neg_elbo_against_log_beta():
    fig = plots.beta_curves(_points([10.0, 0.1, 1.0], ["a <b>x</b>", "b", "c"]))
    curves = {t.name: t for t in fig.data}
    assert [t.name for t in fig.data] == ["rate R", "β = 1: the ELBO", "distortion D", "β = 1: the ELBO",
                                          "−ELBO = D + R", "β = 1: the ELBO"]  # one panel each, a guide in each
    assert [t.showlegend for t in fig.data if t.name.startswith("β")] == [True, False, False]
    for name in ("rate R", "distortion D", "−ELBO = D + R"):
        assert list(curves[name].x) == [0.1, 1.0, 10.0]
    assert np.allclose(curves["rate R"].y, [20 / 1.1, 10.0, 20 / 11])
    assert np.allclose(curves["−ELBO = D + R"].y, np.add(curves["rate R"].y, curves["distortion D"].y))
    assert [row[0] for row in curves["rate R"].customdata] == ["b", "c", "a &lt;b&gt;x&lt;/b&gt;"]  # hover: run
    assert "%{customdata[0]}" in curves["rate R"].hovertemplate
    for axis in (fig.layout.xaxis, fig.layout.xaxis2, fig.layout.xaxis3):
        assert axis.type == "log" and axis.dtick == 1 and axis.tickvals is None  # one label per power of ten
    assert [fig.layout[f"yaxis{i}"].title.text for i in ("", 2, 3)] == ["nats"] * 3


def test_a_sweep_within_one_decade_gets_a_tick_at_each_beta_and_no_beta_1_guide_outside_it():
    fig = plots.beta_curves(_points([2.0, 4.0, 8.0]))
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [2.0, 4.0, 8.0]
    assert list(fig.layout.xaxis.ticktext) == ["2", "4", "8"]
    assert [t.name for t in fig.data] == ["rate R", "distortion D", "−ELBO = D + R"]
    fig = plots.beta_curves(_points([0.3, 1.0, 3.0]))  # one power of ten inside: a tick at each β, not one "1"
    assert list(fig.layout.xaxis.ticktext) == ["0.3", "1", "3"]
    fig = plots.beta_curves(_points([0.1, 10.0]))
    assert fig.layout.xaxis.dtick == 1
    betas = [1 + i / 4 for i in range(16)]  # 16 β within one decade: every other one labelled
    assert list(plots.beta_curves(_points(betas)).layout.xaxis.tickvals) == betas[::2]


# -- the CLI -------------------------------------------------------------------------------------


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _ids(out: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith("run: ")]


@pytest.fixture
def queued_only(monkeypatch):
    monkeypatch.setattr("vaeviz.cli.ensure_worker", lambda store: None)


def test_cli_preset_runs_are_named_like_the_apps(capsys, queued_only):
    names = []
    for extra in ([], [], ["--set", "objective.name=beta_vae"], ["--name", "mine"], ["--set", "name=other"]):
        code, out, err = _cli(capsys, "train", "--preset", "vae-digits", "--background", *extra)
        assert code == 0, err
        rec = RunStore().get(_ids(out)[0])
        assert rec.config.name == rec.name
        names.append(rec.name)
    assert names == ["vae-digits", "vae-digits-2", "vae-digits-beta_vae", "mine", "other"]
    assert app_state.preset_run_name("vae-digits", "vae", names) == "vae-digits-3"  # the app's rule


def test_cli_sweeps_are_named_by_base_and_value_and_never_repeat(capsys, queued_only):
    sets = ["--set", "model.hidden=32", "--set", "train.steps=50", "--background"]
    runs = []
    for _ in range(2):
        code, out, err = _cli(capsys, "sweep", "--preset", "vae-digits", "--set", "objective.name=beta_vae",
                              "--vary", "objective.beta=0.5,2.0,10", *sets)
        assert code == 0, err
        runs.append([RunStore().get(i).name for i in _ids(out)])
    assert runs == [["vae-digits beta=0.5", "vae-digits beta=2", "vae-digits beta=10"],
                    ["vae-digits beta=0.5 #2", "vae-digits beta=2 #2", "vae-digits beta=10 #2"]]
    code, out, err = _cli(capsys, "sweep", "--set", "data.name=digits", "--vary", "objective.name=vae,beta_vae",
                          "--vary", "train.seed=0,1", *sets)
    assert code == 0, err
    assert [RunStore().get(i).name for i in _ids(out)] == [
        "digits objective=vae seed=0", "digits objective=vae seed=1", "digits objective=beta_vae seed=0",
        "digits objective=beta_vae seed=1"]
    sweeps = app_state.beta_sweeps(RunStore().list_runs())  # the β page finds the CLI's β sweeps too
    assert [sw.betas for sw in sweeps] == [[0.5, 2.0, 10.0], [0.5, 2.0, 10.0]]
    names = [r.name for r in RunStore().list_runs()]
    assert len(names) == len(set(names)) == 10


# -- the page ------------------------------------------------------------------------------------


@pytest.fixture
def no_worker(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: calls.append(store.home))
    return calls


def _page(store: RunStore, monkeypatch, run_id: str) -> AppTest:
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    return at.switch_page("views/beta.py").run()


def _problems(at: AppTest) -> list[str]:
    return [e.message for e in at.exception] + [e.value for e in at.error]


def test_the_page_launches_a_sweep_of_the_selected_run_as_one_batch(vaeviz_home, monkeypatch, no_worker):
    store = RunStore()
    base = store.create_run(RunConfig().with_overrides({**SMALL, "train.seed": 3}), "small-vae")
    store.set_status(base, "done")
    at = _page(store, monkeypatch, base)
    assert not _problems(at)
    assert at.text_input(key="beta_values").value == "0.1, 0.193, 0.373, 0.72, 1.39, 2.68, 5.18, 10"
    assert any("vae has no β weighing the rate" in i.value for i in at.info)
    assert any("No β sweep yet" in i.value for i in at.info)
    at.text_input(key="beta_values").set_value("0, 1").run()
    at.button(key="beta_launch").click().run()
    assert [e.value for e in at.error] == [app_state.plain("β = 0 is not in (0, 1000]: β must be positive (its axis "
                                                           "is logarithmic) and at most β-VAE's bound")]
    assert len(store.list_runs()) == 1 and not no_worker
    at.text_input(key="beta_values").set_value("8, 0.5, 2").run()
    at.button(key="beta_launch").click().run()
    assert not _problems(at) and no_worker
    runs = [r for r in store.list_runs() if r.id != base]
    assert len(runs) == 3 and len({r.batch for r in runs}) == 1 and {r.status for r in runs} == {"queued"}
    by_beta = sorted(runs, key=lambda r: r.config.objective.beta)
    assert [(r.name, r.config.objective.name, r.config.objective.beta) for r in by_beta] == [
        ("small-vae β=0.5", "beta_vae", 0.5), ("small-vae β=2", "beta_vae", 2.0), ("small-vae β=8", "beta_vae", 8.0)]
    assert all(r.config.train.seed == 3 and r.config.model.hidden == [32] for r in runs)
    assert at.selectbox(key=f"beta_pick_{base}").value == runs[0].batch  # the new sweep is shown
    assert any("0 of 3 runs done" in c.value for c in at.caption)


def test_the_page_plots_one_point_per_run_of_the_selected_runs_sweep(vaeviz_home, monkeypatch, no_worker):
    store = RunStore()
    old = _sweep(store, [1.0, 3.0], base_name="older")
    ids = _sweep(store, [0.1, 1.0, 10.0])
    for i, run_id in enumerate(ids):
        store.add_metrics(run_id, [(50, "eval", "rate", 8.0 - 3 * i), (50, "eval", "distortion", 30.0 + 5 * i)])
        store.set_status(run_id, "done")
    for run_id in old:
        store.set_status(run_id, "done")
    at = _page(store, monkeypatch, ids[1])
    assert not _problems(at)
    picker = at.selectbox(key=f"beta_pick_{ids[1]}")
    assert picker.value == store.get(ids[0]).batch and len(picker.options) == 2
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    curves = {t["name"]: t for t in spec["data"]}
    assert curves["rate R"]["x"] == [0.1, 1.0, 10.0] and curves["rate R"]["y"] == [8.0, 5.0, 2.0]
    assert curves["−ELBO = D + R"]["y"] == [38.0, 40.0, 42.0]
    assert spec["layout"]["xaxis"]["type"] == "log"
    assert any("in the runs' own units" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table["run"]) == ["vae-digits β=0.1", "vae-digits β=1", "vae-digits β=10"]
    geco = store.create_run(RunConfig().with_overrides({**SMALL, "objective.name": "geco", "objective.kappa": 0.2}))
    at = _page(store, monkeypatch, geco)  # the page says what switching to β-VAE drops
    assert any("geco has no β weighing the rate" in i.value and app_state.plain(
        "Note: objective.kappa = 0.2 dropped (beta_vae has no such knob).") in i.value for i in at.info)
    at = _page(store, monkeypatch, old[0])  # a run of the other sweep: its sweep is shown
    assert at.selectbox(key=f"beta_pick_{old[0]}").value == store.get(old[0]).batch
    assert any("No metrics yet" in i.value for i in at.info) and not _problems(at)
