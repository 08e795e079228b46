"""End to end in headless Chromium (issue 15, items 7 and 9): the σ² page of a tiny σ-VAE on digits shows its
held-out inputs above their reconstructions, draws the per-pixel σ² map on a sequential colour scale that never
wraps (the smallest σ² darkest), and the page of a tiny σ-VAE on a 2-D Gaussian mixture draws the reconstructions
in data space. Screenshots go to test-artifacts/browser/ (sigma_recon.png, sigma_recon_top.png, data_space.png).

Every wait polls with a generous timeout (`until`, `settle`): nothing here assumes how fast the machine is.
"""

from __future__ import annotations

import pytest
from plotly.colors import hex_to_rgb, unlabel_rgb
from test_browser import CHROMIUM, SHOTS, WAIT_S, browser, new_page, no_exception, serve, settle, shot, train_done

from vaeviz.runs import RunStore

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_browser

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]

SHORT = {"train.steps": 300, "train.checkpoint_every": 100, "model.latent_dim": 2}
IMAGES, PER_ROW, ROWS, PIXELS = 16, 8, 3, 8  # the panel's examples, columns, rows per example, digit side
TRACES = ["data x", "input x → g(μ(x))", "reconstruction g(μ(x))", "decoded prior sample g(z), z ~ N(0, I)"]


@pytest.fixture(scope="module")
def recon_server(tmp_path_factory):
    """The app over a store with a σ-VAE (per-pixel σ) on digits and a σ-VAE on the 2-D Gaussian mixture."""
    store = RunStore(tmp_path_factory.mktemp("recon_home"))
    ids = {"digits": train_done(store, {**SHORT, "objective.name": "sigma_vae", "objective.variance": "per_dim"},
                                "sigma-digits"),
           "mixture": train_done(store, {**SHORT, "objective.name": "sigma_vae", "data.name": "gaussian_mixture",
                                         "model.hidden": "32,32"}, "sigma-mixture")}
    with serve(store) as url:
        yield url, ids


def plotly_json(pg, key: str, what: str):
    """`what` (a JS expression of the figure element `el`) of the plotly chart of widget key `key`."""
    pg.wait_for_selector(f".st-key-{key} .js-plotly-plot", timeout=WAIT_S * 1000)
    pg.wait_for_function(f"() => document.querySelector('.st-key-{key} .js-plotly-plot')._fullData",
                         timeout=WAIT_S * 1000)
    return pg.evaluate(f"() => {{ const el = document.querySelector('.st-key-{key} .js-plotly-plot'); "
                       f"return {what}; }}")


def luminance(colour: str) -> float:
    r, g, b = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)[:3]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_sigma_page_shows_reconstructions_and_a_sequential_sigma_map(recon_server, browser):
    url, ids = recon_server
    pg = new_page(browser)
    try:
        pg.goto(f"{url}/sigma?run={ids['digits']}")
        settle(pg)
        rows, cols = plotly_json(pg, "sigma_recon", "[el._fullData[0].z.length, el._fullData[0].z[0].length]")
        tiles = ((rows + 1) // (PIXELS + 1), (cols + 1) // (PIXELS + 1))  # 8-pixel tiles, 1-pixel gaps
        assert tiles == (IMAGES // PER_ROW * ROWS, PER_ROW) and tiles[0] * tiles[1] == IMAGES * ROWS
        labels = plotly_json(pg, "sigma_recon", "el._fullLayout.yaxis.ticktext")
        assert labels == ["input x", "g(μ(x))", "g(z), z ~ q(z|x)"] * 2, labels
        scale = plotly_json(pg, "sigma_chart", "el._fullData.find(t => t.type === 'heatmap').colorscale")
        lum = [luminance(c) for _, c in scale]
        assert all(a < b for a, b in zip(lum, lum[1:])), scale  # never wraps: brighter at every stop
        assert scale[0][1].lower() in ("#440154", "rgb(68, 1, 84)", "rgb(68,1,84)"), scale  # Viridis, dark at low σ²
        title = plotly_json(pg, "sigma_chart", "el._fullData.find(t => t.type === 'heatmap').colorbar.title.text")
        assert title.startswith("log₁₀ σ²"), title
        captions = pg.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        assert any("16 held-out examples (eval split)" in c and "step 300" in c for c in captions), captions
        no_exception(pg)
        shot(pg, "sigma_recon_top")
        pg.locator(".st-key-sigma_recon").scroll_into_view_if_needed()
        pg.wait_for_timeout(500)
        pg.screenshot(path=str(SHOTS / "sigma_recon.png"))
    finally:
        pg.close()


def test_two_dimensional_run_draws_reconstructions_in_data_space(recon_server, browser):
    url, ids = recon_server
    pg = new_page(browser)
    try:
        pg.goto(f"{url}/sigma?run={ids['mixture']}")
        settle(pg)
        names = plotly_json(pg, "sigma_recon", "el._fullData.map(t => t.name)")
        assert names == TRACES, names
        sizes = plotly_json(pg, "sigma_recon", "el._fullData.map(t => t.x.length)")
        assert sizes[2] == 40 and sizes[1] == 3 * 40 and sizes[3] == 300, sizes  # 40 pairs, 300 prior samples
        assert plotly_json(pg, "sigma_recon", "el._fullLayout.yaxis.scaleanchor") == "x"  # one scale on both axes
        no_exception(pg)
        pg.locator(".st-key-sigma_recon").scroll_into_view_if_needed()
        pg.wait_for_timeout(500)
        pg.screenshot(path=str(SHOTS / "data_space.png"))
    finally:
        pg.close()
