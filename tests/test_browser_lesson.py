"""A lesson end to end in headless Chromium: the β phase-transition lesson's one button queues its runs as one
batch, the page shows them progressing and fills its checks and figures without a reload, and its HTML report,
downloaded from the page, opens from a file:// URL with the network off and draws its figures."""

from __future__ import annotations

import contextlib

import pytest
from test_browser import (  # noqa: F401 - `browser` is the module's Chromium fixture
    ARGS,
    CHROMIUM,
    WAIT_S,
    browser,
    new_page,
    no_exception,
    page_text,
    serve,
    settle,
    shot,
    until,
)

from vaeviz.lessons import LESSONS
from vaeviz.runs import RunStore

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]
NAME = "beta-phase-transitions"


@pytest.fixture(scope="module")
def lesson_server(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("lesson_home"))
    with serve(store) as url:
        yield url, store


def test_phase_lesson_runs_from_one_button_and_its_report_opens_offline(lesson_server, browser, tmp_path):  # noqa: F811
    url, store = lesson_server
    lesson = LESSONS[NAME]
    n_runs = len(lesson.configs(False))
    with contextlib.closing(new_page(browser)) as pg:
        pg.goto(f"{url}/lesson-{NAME}")
        until(lambda: lesson.paper in page_text(pg) and "not run yet" in page_text(pg), "the lesson's page")
        pg.get_by_role("button", name="Run this lesson").click()
        until(lambda: len(store.list_runs()) == n_runs, "the lesson's runs to be queued")
        assert len({r.batch for r in store.list_runs()}) == 1  # one batched model
        until(lambda: "step" in page_text(pg) and "not run yet" not in page_text(pg),
              "the runs' progress on the page, without a reload")
        until(lambda: all(r.status == "done" for r in store.list_runs()), "the lesson's runs to finish")
        until(lambda: page_text(pg).count("Agrees with the paper") == len(lesson.checks),
              "every check's sentence, without a reload")
        assert "phase transition" in page_text(pg)
        until(lambda: pg.locator(".js-plotly-plot").count() == len(lesson.figures), "every figure drawn")
        no_exception(pg)
        shot(pg, "lesson_phase")
        with pg.expect_download() as download:
            pg.get_by_role("button", name="Download this lesson as one HTML file").click()
        path = tmp_path / "lesson.html"
        download.value.save_as(path)
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 900})
    with contextlib.closing(context):
        report = context.new_page()
        requests = []
        report.on("request", lambda r: requests.append(r.url))
        report.goto(path.as_uri())
        until(lambda: report.locator(".js-plotly-plot .main-svg").count() >= len(lesson.figures),
              "the report's figures drawn from the file")
        assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
        assert "phase transition" in report.inner_text("body")
        report.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        shot(report, "lesson_phase_report")
