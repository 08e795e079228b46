"""End to end in headless Chromium (issue 15, item 6): a β sweep launched from the browser.

One tiny digits VAE in the store; open its β sweep page, type three β values, launch: the store holds three
β-VAE runs of one batch with those β and distinct names; a real worker trains them, and the β plot shows one
point per run on each of its curves (R, D, −ELBO), read from the plotly figure in the page. Every wait polls
with a generous timeout. Screenshots go to test-artifacts/browser/ (beta_sweep_launch.png, beta_sweep.png).
"""

from __future__ import annotations

import contextlib

import pytest
from test_browser import (
    CHROMIUM,
    WAIT_S,
    browser,
    new_page,
    no_exception,
    page_text,
    serve,
    settle,
    shot,
    train_done,
    until,
)

from vaeviz.runs import RunStore

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared from test_browser
pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]
BETAS = [0.3, 1.0, 3.0]
FIGURE = "() => document.querySelector('.st-key-beta_chart .js-plotly-plot')"


@pytest.fixture(scope="module")
def beta_server(tmp_path_factory):
    """The app over one finished tiny digits VAE (300 steps)."""
    store = RunStore(tmp_path_factory.mktemp("beta_home"))
    run_id = train_done(store, {"model.hidden": "32,32", "train.steps": 300}, name="digits-vae")
    with serve(store) as url:
        yield url, store, run_id


def curves(pg) -> dict:
    """{trace name: (x, hover run names)} of the β plot; {} while it is not drawn."""
    return pg.evaluate(f"""() => {{
        const el = ({FIGURE})();
        if (!el || !el.data) return {{}};
        return Object.fromEntries(el.data.map(t => [t.name, [Array.from(t.x), (t.customdata || []).map(c => c[0])]]));
    }}""")


def test_a_beta_sweep_launched_in_the_browser_trains_as_one_batch_and_plots_a_point_per_run(beta_server, browser):
    url, store, base = beta_server
    with contextlib.closing(new_page(browser)) as pg:
        pg.goto(f"{url}/beta?run={base}")
        settle(pg)
        until(lambda: "No β sweep yet" in page_text(pg), "the page to say there is no sweep yet")
        assert "vae has no β weighing the rate" in page_text(pg)
        box = pg.get_by_label("β values", exact=True)
        box.fill(", ".join(f"{b:g}" for b in BETAS))
        box.press("Enter")
        settle(pg)
        until(lambda: box.input_value() == "0.3, 1, 3", "the β values to reach the page")
        shot(pg, "beta_sweep_launch")
        pg.get_by_role("button", name="Launch β sweep").click()
        until(lambda: len(store.list_runs()) == 4, "the three runs of the sweep to be created")

        runs = sorted((r for r in store.list_runs() if r.id != base), key=lambda r: r.config.objective.beta)
        assert [r.config.objective.beta for r in runs] == BETAS and len({r.batch for r in runs}) == 1
        assert [r.name for r in runs] == ["digits-vae β=0.3", "digits-vae β=1", "digits-vae β=3"]
        assert {r.config.objective.name for r in runs} == {"beta_vae"}
        assert {r.config.model.hidden[0] for r in runs} == {32} and {r.config.train.steps for r in runs} == {300}

        until(lambda: all(store.get(r.id).status == "done" for r in runs), "the worker to train the sweep")
        until(lambda: "3 of 3 runs done" in page_text(pg), "the page to see the sweep done, without a reload")
        got = until(lambda: (c := curves(pg)) and all(len(c.get(n, [[]])[0]) == 3 for n in
                                                       ("rate R", "distortion D", "−ELBO = D + R")) and c,
                    "one point per run on each curve")
        for name in ("rate R", "distortion D", "−ELBO = D + R"):
            x, hover = got[name]
            assert x == BETAS and hover == [r.name for r in runs]
        no_exception(pg)

        pg.goto(f"{url}/beta?run={runs[1].id}")  # a run of the sweep: the page finds its sweep
        pg.wait_for_selector(".st-key-beta_chart .js-plotly-plot")
        settle(pg)
        until(lambda: len(curves(pg).get("rate R", [[]])[0]) == 3, "the sweep of the selected run")
        picker = f".st-key-beta_pick_{runs[1].id}"
        shown = pg.locator(f"{picker} input[role=combobox]").input_value() + pg.locator(picker).inner_text()
        assert f"batch {runs[0].batch}" in shown and "digits-vae · β 0.3 … 3 · 3 runs" in shown
        no_exception(pg)
        shot(pg, "beta_sweep")
