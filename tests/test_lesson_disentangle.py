"""Lesson 7 (Chen et al. 2018, MIG against β; β-VAE, β-TCVAE, HFVAE on shapes): the lesson's twelve runs (six
models, two seeds) trained here at reduced size (500 steps, 5,000 images, a 128-128 MLP; the default lesson's
numbers are in the lesson's note). The robust claim (β-TCVAE lowers the total correlation) holds; the MIG claims,
which at this budget depend on the seed, are checked to be the lesson's rule (every seed beyond twice the bootstrap
s.e.) applied to their own numbers; a second launch reuses every run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import train_on_one_thread

from vaeviz import plots
from vaeviz.lessons import LESSONS, disentangle
from vaeviz.lessons.common import base
from vaeviz.lessons.runner import identity, lesson_runs, train_here
from vaeviz.runs import RunStore

STEPS = 500
SMALL_DATA = {**disentangle.SHAPES, "data.size": 5000, "model.hidden": [128, 128]}  # 1,000 held out


def small(full: bool) -> dict:
    return {disentangle.seeded(m, s): base({**SMALL_DATA, **knobs, "train.seed": s}, STEPS)
            for m, knobs in disentangle.models().items() for s in disentangle.SEEDS}


SMALL = dataclasses.replace(disentangle.LESSON, configs=small)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store, Trained, LessonRuns) of the reduced lesson, trained once, on one thread like the rest of the suite."""
    store = RunStore(tmp_path_factory.mktemp("disentangle_home"))
    done = train_on_one_thread(store, SMALL)
    return store, done, lesson_runs(store, SMALL)


MODELS = ["VAE (β = 1)", "β-VAE β = 4", "β-VAE β = 16", "β-TCVAE β = 4", "β-TCVAE β = 16", "HFVAE β = 4, γ = 2"]
MIG_CHECKS = {"mig_rises_with_beta": [("β-VAE β = 16", "VAE (β = 1)")],
              "tcvae_beats_beta_vae": [("β-TCVAE β = 4", "β-VAE β = 4"), ("β-TCVAE β = 16", "β-VAE β = 16")],
              "hfvae_disentangles": [("HFVAE β = 4, γ = 2", "VAE (β = 1)")]}


def test_the_lesson_is_registered_with_two_seeds_of_each_model_and_the_presets_nets_at_full_size():
    assert LESSONS["disentangle"] is disentangle.LESSON
    default, full = disentangle.configs(False), disentangle.configs(True)
    assert list(default) == [f"{m} · seed {s}" for m in MODELS for s in (0, 1)]
    assert {(c.objective.name, c.objective.beta, c.train.seed) for c in default.values()} == {
        (name, beta, seed) for name, beta in [("beta_vae", 1.0), ("beta_vae", 4.0), ("beta_vae", 16.0),
                                              ("beta_tcvae", 4.0), ("beta_tcvae", 16.0), ("hfvae", 4.0)]
        for seed in (0, 1)}
    assert {(c.data.name, c.data.size, c.model.arch, c.model.latent_dim, c.train.steps) for c in default.values()} == {
        ("shapes", 20_000, "mlp", 6, 2500)}
    full_nets = {(c.model.arch, tuple(c.model.hidden), c.train.batch_size) for c in full.values()}
    assert full_nets == {("conv", (32, 32), 64)}
    hf = default["HFVAE β = 4, γ = 2 · seed 1"].objective
    assert (hf.groups, hf.gamma) == ([2, 2, 2], 2.0)
    for v in disentangle.LESSON.variations:  # a variation keeps the two seeds apart
        runs = disentangle.LESSON.runs_for(False, v)
        assert len({identity(c) for c in runs.values()}) == len(runs) == 12


def test_mig_difference_is_zero_for_the_same_codes_and_positive_for_a_disentangled_code():
    rng = np.random.default_rng(0)
    factors = rng.uniform(size=(2000, 2))
    clean = {"mu": factors + 0.01 * rng.standard_normal((2000, 2)), "factors": factors}
    mixed = {"mu": np.stack([factors.sum(1), factors[:, 0] - factors[:, 1]], 1), "factors": factors}
    for m in (clean, mixed):
        m["latents"] = disentangle.LatentFactors().fit(m["mu"], factors, ["a", "b"])
    assert disentangle.mig_difference(clean, clean, n_boot=20) == (0.0, 0.0)
    diff, se = disentangle.mig_difference(clean, mixed, n_boot=50)
    assert diff > 0.5 and 0 < se < 0.05


def test_a_mig_claim_needs_every_seed_beyond_twice_its_standard_error():
    agree = [(0, 0.30, 0.10, 0.20, 0.01), (1, 0.25, 0.20, 0.05, 0.02)]
    assert disentangle._beyond(agree) and disentangle._spread(agree) == "the seeds agree in sign"
    assert not disentangle._beyond([(0, 0.30, 0.10, 0.20, 0.01), (1, 0.21, 0.20, 0.01, 0.02)])  # within 2 s.e.
    flip = [(0, 0.30, 0.10, 0.20, 0.01), (1, 0.10, 0.20, -0.10, 0.01)]
    assert not disentangle._beyond(flip) and "disagree in sign" in disentangle._spread(flip)
    assert disentangle._seeds_text(flip) == ("seed 0: 0.300 vs 0.100 (+0.200 ± 0.010); "
                                             "seed 1: 0.100 vs 0.200 (-0.100 ± 0.010)")


def test_the_new_plot_builders_draw_means_seeds_and_grouped_terms():
    fig = plots.against_beta({"β-VAE <a>": {1.0: [0.1, 0.3], 16.0: [0.5]}, "HFVAE": {4.0: [0.2, 0.4]}}, "MIG", "MIG")
    mean, each, hf_mean, _ = fig.data
    assert mean.name == "β-VAE &lt;a&gt; (mean)" and list(mean.x) == [1.0, 16.0]
    assert list(mean.y) == pytest.approx([0.2, 0.5]) and list(each.y) == [0.1, 0.3, 0.5]
    assert list(hf_mean.x) == [4.0] and list(hf_mean.y) == pytest.approx([0.3])
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "β (log scale)"
    bars = plots.grouped_bars({"VAE": {"mi": 7.0, "tc": 3.5}, "β-TCVAE": {"mi": 5.0, "tc": 0.2}},
                              {"mi": "MI", "tc": "TC"}, "terms", "nats")
    assert bars.layout.barmode == "group" and [t.name for t in bars.data] == ["MI", "TC"]
    assert list(bars.data[1].x) == ["VAE", "β-TCVAE"] and list(bars.data[1].y) == [3.5, 0.2]


@pytest.mark.slow
def test_the_checks_follow_their_numbers_and_the_tc_claim_holds(trained):
    _, done, runs = trained
    assert (done.new, done.reused) == (12, 0) and runs.done()
    verdicts = {check.judge.__name__: check.judge(runs) for check in SMALL.checks}
    assert all(v is not None for v in verdicts.values())
    assert verdicts["tcvae_lowers_tc"].holds, verdicts["tcvae_lowers_tc"]  # the robust claim: a TC penalty lowers TC
    for name, pairs in MIG_CHECKS.items():  # MIG claims: the verdict is the rule applied to every seed's numbers
        rows = [row for better, worse in pairs for row in disentangle.paired(runs, better, worse)]
        assert len(rows) == 2 * len(pairs)
        assert verdicts[name].holds == all(d > 2 * se for *_, d, se in rows), (name, verdicts[name])
        for s, a, b, d, se in rows:
            assert d == pytest.approx(a - b) and 0 < se < 0.05
            assert f"seed {s}: {a:.3f} vs {b:.3f} ({d:+.3f} ± {se:.3f})" in verdicts[name].sentence
        assert "1,000 held-out examples" in verdicts[name].sentence


@pytest.mark.slow
def test_the_figures_show_mig_against_beta_and_labelled_traversals(trained):
    _, _, runs = trained
    curves = disentangle.mig_curves(runs)
    traces = {t.name: (list(t.x), list(t.y)) for t in curves.data}
    assert list(traces) == [f"{n} ({k})" for n in ("β-VAE", "β-TCVAE", "HFVAE β = 4, γ = 2") for k in ("mean", "each")]
    migs = {r: disentangle.measured(runs, r)["latents"].mig_ for r in runs.records}
    vae = [migs["VAE (β = 1) · seed 0"], migs["VAE (β = 1) · seed 1"]]
    assert traces["β-VAE (mean)"][0] == [1.0, 4.0, 16.0] and traces["β-TCVAE (each)"][0] == [1, 1, 4, 4, 16, 16]
    assert traces["β-VAE (mean)"][1][0] == pytest.approx(np.mean(vae)) == traces["β-TCVAE (mean)"][1][0]
    assert traces["β-TCVAE (each)"][1][-2:] == pytest.approx([migs[f"β-TCVAE β = 16 · seed {s}"] for s in (0, 1)])
    assert "1,000 held-out" in curves.layout.title.text
    bars = disentangle.decomposition(runs)
    assert [t.name for t in bars.data] == list(disentangle.TERMS.values())
    tc = dict(zip(bars.data[1].x, bars.data[1].y))
    assert list(tc) == MODELS and tc["β-TCVAE β = 16"] < tc["VAE (β = 1)"]
    assert len(disentangle.table(runs).data[0].cells.values[0]) == 12
    grid = disentangle.traversals("β-TCVAE β = 16")(runs)
    labels = list(grid.layout.yaxis.ticktext)
    assert len(labels) == 6 and all(label.startswith(f"z{d + 1} · ") for d, label in enumerate(labels))
    assert "β-TCVAE β = 16 · seed 0" in grid.layout.title.text


@pytest.mark.slow
def test_a_second_launch_reuses_every_run(trained):
    store, _, _ = trained
    again = train_here(store, SMALL)
    assert (again.new, again.reused) == (0, 12)


def test_checks_and_figures_wait_for_unfinished_runs(tmp_path):
    runs = lesson_runs(RunStore(tmp_path), disentangle.LESSON)
    assert all(check.judge(runs) is None for check in disentangle.LESSON.checks)
    assert all(fig.build(runs) is None for fig in disentangle.LESSON.figures)
