"""Lessons 1 (calibrated decoders) and 3 (β phase transitions) at their default size: each check asserts the
paper's claim on freshly trained runs, and a second run of the lesson trains nothing."""

from __future__ import annotations

import numpy as np
import pytest

from vaeviz.analysis.modes import groups
from vaeviz.lessons import LESSONS
from vaeviz.lessons.phase import transitions
from vaeviz.lessons.runner import lesson_runs, train_here
from vaeviz.runs import RunStore


def test_groups_link_points_closer_than_the_radius():
    line = np.array([[0.0], [0.1], [0.2], [1.0], [1.05], [3.0]])
    assert groups(line, 0.15) == 3  # {0, .1, .2} chained, {1, 1.05}, {3}
    assert groups(line, 0.05) == 6 and groups(line, 5.0) == 1


def test_transitions_are_the_drops_between_neighbouring_betas():
    counts = [(1.0, 8), (2.0, 8), (4.0, 4), (8.0, 4), (16.0, 1)]
    assert transitions(counts) == [(2.0, 4.0, 8, 4), (8.0, 16.0, 4, 1)]
    assert transitions([(1.0, 8), (2.0, 8)]) == []


@pytest.fixture(scope="module", params=["calibrated-decoders", "beta-phase-transitions"])
def lesson_store(request, tmp_path_factory):
    lesson = LESSONS[request.param]
    store = RunStore(tmp_path_factory.mktemp(request.param))
    first = train_here(store, lesson)
    return lesson, store, first


@pytest.mark.slow
def test_lesson_checks_agree_with_the_paper_and_nothing_is_retrained(lesson_store):
    lesson, store, first = lesson_store
    assert first.new == len(lesson.configs(False)) and first.reused == 0
    runs = lesson_runs(store, lesson)
    assert runs.done()
    for check in lesson.checks:
        verdict = check.judge(runs)
        assert verdict is not None and verdict.holds, f"{check.claim}: {verdict}"
    again = train_here(store, lesson)
    assert (again.new, again.reused) == (0, len(lesson.configs(False)))
    for spec in lesson.figures:  # every figure can be drawn from the finished runs
        assert spec.build(runs) is not None, spec.title
