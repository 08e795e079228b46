"""The Gaussian VAE primer lesson (`vaeviz.lessons.primer`) at reduced size: its checks agree with the paper's claims
(full-covariance posteriors turn, the richer family is not worse), its figures draw, and a second run reuses every
run; and the `plots.reparameterisation` builder it adds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vaeviz import plots
from vaeviz.lessons import LESSONS, primer
from vaeviz.lessons.runner import lesson_runs, train_here
from vaeviz.runs import RunStore

STEPS = 3000  # the lesson trains 20,000; the claims already show here (3 seeds × 2 families, ~10 s idle)
SHORT = dataclasses.replace(primer.LESSON, configs=lambda full: primer.configs(full, STEPS))


def test_reparameterisation_joins_each_sample_to_its_mean():
    mu = np.array([[0.0, 0.0], [2.0, 1.0]])
    z = mu[:, None] + np.array([[[1.0, 0.0], [0.0, -1.0], [0.5, 0.5]]] * 2)  # (2, 3, 2)
    outlines = np.zeros((2, 5, 2))
    fig = plots.reparameterisation(outlines, mu, z, labels=[0, 1], class_names=["a <b>", "b"])
    names = [t.name for t in fig.data]
    assert names[:2] == ["a &lt;b&gt;", "b"] and "prior 1σ" in names
    lines = next(t for t in fig.data if t.name == "z − μ = A ε")
    x, y = np.array(lines.x, dtype=float).reshape(6, 3), np.array(lines.y, dtype=float).reshape(6, 3)
    assert np.allclose(x[:, 0], np.repeat(mu[:, 0], 3)) and np.allclose(y[:, 0], np.repeat(mu[:, 1], 3))  # from μ
    assert np.allclose(np.stack([x[:, 1], y[:, 1]], 1), z.reshape(-1, 2))  # to its sample z
    assert np.isnan(x[:, 2]).all()  # one segment per sample
    samples = next(t for t in fig.data if t.name == "samples z = μ + A ε")
    assert np.allclose(np.stack([samples.x, samples.y], 1), z.reshape(-1, 2))
    means = next(t for t in fig.data if t.name == "means μ")
    assert list(means.x) == [0.0, 2.0] and list(means.y) == [0.0, 1.0]


def test_the_primer_is_registered_with_three_seeds_of_each_family():
    assert LESSONS["gaussian-primer"] is primer.LESSON
    cfgs = primer.configs(False)
    assert sorted({c.model.covariance for c in cfgs.values()}) == ["diag", "full"]
    assert sorted(c.train.seed for c in cfgs.values()) == [0, 0, 1, 1, 2, 2]
    assert {c.train.steps for c in cfgs.values()} == {20_000}


def test_checks_wait_for_the_runs(tmp_path):
    runs = lesson_runs(RunStore(tmp_path), SHORT)
    assert [check.judge(runs) for check in SHORT.checks] == [None, None]
    assert [spec.build(runs) for spec in SHORT.figures] == [None] * len(SHORT.figures)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("primer"))
    first = train_here(store, SHORT)
    second = train_here(store, SHORT)
    return store, first, second



@pytest.mark.slow
def test_trains_once_then_reuses_every_run(trained):
    _, first, second = trained
    assert (first.new, first.reused) == (6, 0) and (second.new, second.reused) == (0, 6)


@pytest.mark.slow
def test_full_covariance_posteriors_turn(trained):
    store, *_ = trained
    runs = lesson_runs(store, SHORT)
    verdict = primer.full_rotates(runs)
    assert verdict.holds, verdict.sentence
    rho = np.abs(primer.correlation(primer.posteriors(runs, "full · seed 0")[1]))
    assert rho.mean() > primer.ROTATED and "1000 held-out points" in verdict.sentence
    assert np.abs(primer.correlation(primer.posteriors(runs, "diagonal · seed 0")[1])).max() == 0.0


@pytest.mark.slow
def test_full_covariance_is_not_worse(trained):
    store, *_ = trained
    verdict = primer.full_not_worse(lesson_runs(store, SHORT))
    assert verdict.holds, verdict.sentence
    assert "3 + 3 seeds" in verdict.sentence


@pytest.mark.slow
def test_figures_draw_the_runs(trained):
    store, *_ = trained
    runs = lesson_runs(store, SHORT)
    figs = {spec.title: spec.build(runs) for spec in SHORT.figures}
    assert all(f is not None for f in figs.values())
    reparam = figs["Reparameterisation, full covariance"]
    samples = next(t for t in reparam.data if t.name == "samples z = μ + A ε")
    assert len(samples.x) == primer.PICKED * primer.DRAWS
    bars = figs["Held-out ELBO of every run"].data[0]
    assert list(bars.x) == list(SHORT.configs(False)) and np.allclose(
        bars.y, [runs.last(r, "elbo") for r in SHORT.configs(False)])
