"""End to end in headless Chromium (issue 15): Compare launches a comparison of a tiny digits run (latent 8, a
Gaussian decoder with σ = 0.2) and shows it without a reload: the four new runs picked, the stored GECO run's κ
taken from the base run's measured error, the base run's decoder and σ kept; once they have trained, one legend for
all tilings, PCA axis titles, and the metrics table's human column names. A full-page screenshot of Compare with
four runs goes to test-artifacts/browser/compare_four.png.

Every wait polls for its condition with a generous timeout: nothing here assumes how fast the machine is.
"""

from __future__ import annotations

import contextlib
import math
import re

import pytest
from test_browser import (  # noqa: F401 - `browser` is the module's Chromium fixture
    CHROMIUM,
    WAIT_S,
    browser,
    no_exception,
    page_text,
    serve,
    settle,
    shot,
    sidebar_text,
    train_done,
    until,
)

from vaeviz.runs import RunStore

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]
BASE = {"model.latent_dim": 8, "objective.decoder": "gaussian", "objective.sigma": 0.2, "train.steps": 1000,
        "name": "base"}  # TINY's digits and 64,64 net; 1,000 steps: the comparison trains for a few seconds at least
PICKED = "() => document.querySelectorAll('.st-key-cmp_pick [data-tag]').length"
TILINGS = "() => document.querySelector('.st-key-cmp_tilings .js-plotly-plot')"


@pytest.fixture(scope="module")
def compare_server(tmp_path_factory):
    """The app over a fresh VAEVIZ_HOME holding one finished run, the base of the comparison."""
    store = RunStore(tmp_path_factory.mktemp("compare_home"))
    base = train_done(store, BASE)
    with serve(store) as url:
        yield url, store, base


def objectives(pg, remove: str, add: str) -> None:
    """Swap one objective of the comparison's multiselect for another."""
    box = pg.locator(".st-key-cmp_objectives")
    box.get_by_role("button", name=f"Remove {remove}").click()
    settle(pg)
    box.locator("input[role=combobox]").click()
    pg.get_by_role("option", name=add, exact=True).click()
    pg.keyboard.press("Escape")
    settle(pg)


def tiling_data(pg) -> list[dict]:
    return pg.evaluate(f"() => {{ const el = ({TILINGS})(); return el && el.data ? el.data.map(t => "
                       "({name: t.name, showlegend: t.showlegend !== false, mode: t.mode})) : []; }")


def test_compare_launch_shows_the_new_runs_without_a_reload(compare_server, browser):  # noqa: F811
    url, store, base = compare_server
    with contextlib.closing(browser.new_page(viewport={"width": 1400, "height": 4400})) as pg:
        pg.set_default_timeout(WAIT_S * 1000 // 5)
        pg.goto(f"{url}/compare?run={base}")
        pg.wait_for_selector(".st-key-cmp_launch button")
        settle(pg)
        assert "Pick at least two runs" in page_text(pg)
        objectives(pg, remove="sigma_vae", add="rae")  # vae, β-VAE, GECO and RAE (a deterministic encoder)
        mse = store.metrics(base, split="eval", names=["mse"]).sort_values("step")["value"].iloc[-1]
        kappa = float(f"{math.sqrt(mse):.3g}")  # GECO's κ = √MSE, the base run's RMSE per pixel
        until(lambda: f"kappa = {kappa:g}" in page_text(pg), "the page to say which κ GECO will get")

        pg.evaluate("() => { window.vaevizSamePage = true }")  # gone after a reload
        pg.locator(".st-key-cmp_launch button").click()
        until(lambda: pg.evaluate(PICKED) == 4, "the four new runs in the picker")
        new = {r.objective: r for r in store.list_runs() if r.id != base}
        assert sorted(new) == ["beta_vae", "geco", "rae", "vae"]
        picked = pg.locator(".st-key-cmp_pick").inner_text()
        assert all(r.id in picked for r in new.values()), picked
        until(lambda: "Pick at least two runs" not in page_text(pg), "the hint to go")
        badge = until(lambda: re.search(r"\d+ running · \d+ queued", sidebar_text(pg)), "the badge to count the runs")
        assert sum(map(int, re.findall(r"\d+", badge.group()))) >= 1
        assert pg.evaluate("() => window.vaevizSamePage === true")  # all of it without a reload

        # what was stored: GECO's κ from the base run's error, the base run's decoder and σ wherever they exist
        assert new["geco"].config.objective.kappa == kappa
        for name in ("vae", "beta_vae"):
            assert (new[name].config.objective.decoder, new[name].config.objective.sigma) == ("gaussian", 0.2)
        assert all((r.config.data, r.config.model, r.config.train) == (store.get(base).config.data,
                   store.get(base).config.model, store.get(base).config.train) for r in new.values())

        # the tilings appear and follow the runs; once all have ended the page is redrawn with them done
        until(lambda: all(store.get(r.id).status != "running" for r in new.values()) and
              all(store.get(r.id).status != "queued" for r in new.values()), "the comparison to end")
        assert {store.get(r.id).status for r in new.values()} == {"done"}
        until(lambda: page_text(pg).count("· done") >= 4, "the page to show the four runs done")
        settle(pg)
        until(lambda: len(tiling_data(pg)) > 0, "the tilings")
        assert pg.evaluate("() => window.vaevizSamePage === true")
        traces = tiling_data(pg)
        legend = [t["name"] for t in traces if t["showlegend"]]
        assert legend == [str(k) for k in range(10)] + ["prior 1σ"]  # one entry per class, for all four panels
        assert pg.locator(".st-key-cmp_tilings .legend").count() == 1
        assert pg.locator(".st-key-cmp_tilings .legend .traces").count() == 11
        assert any(t["mode"] == "markers" for t in traces)  # RAE's codes: no ellipses to draw
        titles = pg.locator(".st-key-cmp_tilings .infolayer text").all_text_contents()  # axis and panel titles
        assert titles.count("PC1 of μ (8-D latent)") == 4 and titles.count("PC2 of μ (8-D latent)") == 4, titles
        assert "PCA of μ" in page_text(pg)

        # the metrics: human column names, units and directions, and the Fréchet table kept
        pg.locator(".st-key-cmp_eval button").click()
        pg.wait_for_selector(".st-key-cmp_table .js-plotly-plot", timeout=WAIT_S * 1000)
        pg.wait_for_selector(".st-key-cmp_fd_table .js-plotly-plot", timeout=WAIT_S * 1000)
        settle(pg)
        header = pg.evaluate("() => document.querySelector('.st-key-cmp_table .js-plotly-plot').data[0].header.values")
        for column in ("ELBO †<br>nats<br>↑ better", "σ-free NLL*<br>nats<br>↓ better",
                       "holes<br>prior mass<br>↓ better"):
            assert column in header, header
        assert not {"elbo", "nll_sigma_free", "fd_prior", "hole_fraction"} & set(header)
        shown = pg.locator(".st-key-cmp_table").text_content()
        assert "σ-free NLL*" in shown and "↓ better" in shown and "nll_sigma_free" not in shown
        assert "probability mass" in page_text(pg)  # why ELBOs of different decoders do not compare
        no_exception(pg)
        shot(pg, "compare_four")
