"""Lesson 5 (holes and the marginal KL) at its default size: it trains nothing of its own (lesson 2's runs are
reused config for config), its estimates obey the bound I(x; z) ≤ log N of a mixture of N posteriors, and its
checks assert Table 2's claim and the β ordering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaeviz.analysis.aggregate import AggregatePosterior
from vaeviz.lessons import LESSONS
from vaeviz.lessons.geco_vs_beta import GECO, SWEEP
from vaeviz.lessons.holes import _train_rate, configs, measures
from vaeviz.lessons.runner import identity, lesson_runs, train_here


def test_runs_are_lesson_twos_config_for_config():
    mine, theirs = configs(False), LESSONS["geco-vs-beta"].configs(False)
    assert {r: identity(c) for r, c in mine.items()} == {r: identity(c) for r, c in theirs.items()}


def test_train_rate_is_the_mean_closed_form_kl():
    mu, var = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.5, 1.0], [1.0, 0.25]])
    agg = AggregatePosterior().fit(mu, np.log(var))
    kl = 0.5 * (var + mu**2 - 1 - np.log(var)).sum(1)  # KL(N(μ, diag var) ‖ N(0, I)) per component
    assert _train_rate(agg) == pytest.approx(kl.mean())
    full = AggregatePosterior().fit(mu, scale_tril=np.stack([np.diag(np.sqrt(v)) for v in var]))
    assert _train_rate(full) == pytest.approx(kl.mean())


@pytest.fixture(scope="module")
def trained(geco_vs_beta_trained):
    store, _ = geco_vs_beta_trained  # lesson 2's runs, trained once for the session
    return store, train_here(store, LESSONS["holes"])


@pytest.mark.slow
def test_lesson_reuses_lesson_two_and_its_checks_hold(trained):
    store, second = trained
    lesson = LESSONS["holes"]
    assert (second.new, second.reused) == (0, len(SWEEP) + 1)  # every run comes from lesson 2
    runs = lesson_runs(store, lesson)
    assert runs.done()
    for check in lesson.checks:
        verdict = check.judge(runs)
        assert verdict is not None and verdict.holds, f"{check.claim}: {verdict}"
    for role in (*SWEEP, GECO):
        m = measures(runs, role)
        assert m["n"] == len(runs.model(role)[0].data.x_train)  # every training posterior in q(z)
        assert m["info"] <= math.log(m["n"]) + 5 * m["kl_se"]  # I(x; z) of an N-mixture is at most log N
        assert m["in_holes"].shape == m["dense"].shape == (10, 64)
    kls = [measures(runs, r)["marginal_kl"] for r in SWEEP]  # β ascending: the rate's weight pulls q to p
    assert kls == sorted(kls, reverse=True)
    for spec in lesson.figures:
        assert spec.build(runs) is not None, spec.title
