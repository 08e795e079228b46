"""The traversals page in headless Chromium (issue 15, items 7 and 8): a tiny β-TCVAE on `shapes` shows traversal
rows labelled by the factors of `shapes` and a scatter that recolours by each factor; a tiny VAE on the 2-D Gaussian
mixture draws g(z) among the data instead of printing its numbers. Screenshots go to test-artifacts/browser/.

Every wait polls for its condition with a generous timeout: nothing here assumes how fast the machine is.
"""

from __future__ import annotations

import re

import pytest
from test_browser import (  # noqa: F401 - `browser` is a fixture
    CHROMIUM,
    WAIT_S,
    browser,
    new_page,
    no_exception,
    serve,
    settle,
    shot,
    train_done,
    until,
)

from vaeviz.data.images import SHAPES_FACTOR_RANGES
from vaeviz.runs import RunStore

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]
FACTORS = list(SHAPES_FACTOR_RANGES)  # shape, scale, rotation, x, y
SMALL = {"model.hidden": "64,64", "train.steps": 300, "train.eval_every": 100, "train.checkpoint_every": 300}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app over a tiny β-TCVAE run on 2,000 shapes (4 latents) and a tiny VAE on the Gaussian mixture."""
    store = RunStore(tmp_path_factory.mktemp("traversals_home"))
    tc = train_done(store, {**SMALL, "data.name": "shapes", "data.size": 2000, "objective.name": "beta_tcvae",
                            "objective.beta": 6.0, "model.latent_dim": 4}, "tc-shapes")
    mix = train_done(store, {**SMALL, "data.name": "gaussian_mixture", "objective.name": "vae",
                             "objective.decoder": "gaussian", "objective.sigma": 0.05}, "vae-mixture")
    with serve(store) as url:
        yield url, tc, mix


def chart(pg, key: str, js: str):
    """`js` evaluated on the plotly element of the chart with widget key `key` (bound to `el`); None until drawn."""
    return pg.evaluate(f"""() => {{
        const el = document.querySelector('.st-key-{key} .js-plotly-plot');
        if (!el || !el._fullData) return null;
        return {js}; }}""")


def figure_with_title(pg, title: str, js: str):
    """`js` on the first drawn plotly figure whose title holds `title` (Streamlit wraps it in <b>), bound to `el`;
    None until drawn."""
    return pg.evaluate(f"""() => {{
        const el = Array.from(document.querySelectorAll('.js-plotly-plot'))
            .find(e => e.layout && e.layout.title && (e.layout.title.text || '').includes({title!r}));
        if (!el) return null;
        return {js}; }}""")


COLOURS = """el._fullData.map(t => [t.name,
    typeof t.marker.color === 'string' ? [t.marker.color] : Array.from(t.marker.color || []).slice(0, 50),
    t.marker.colorbar && t.marker.colorbar.title ? t.marker.colorbar.title.text : null])"""  # name, colours, bar


def test_factor_labels_and_factor_colours_on_shapes(server, browser):  # noqa: F811 - the imported fixture
    url, tc, _ = server
    pg = new_page(browser)
    try:
        pg.goto(f"{url}/traversals?run={tc}")
        until(lambda: chart(pg, "latent_click", "el._fullData.length"), "the latent scatter")
        settle(pg)
        no_exception(pg)
        # the colour selectbox offers every factor of shapes; the scatter starts coloured by shape
        pg.locator(".st-key-scatter_colour input[role=combobox]").click()
        offered = [o.inner_text() for o in pg.get_by_role("option").all()]
        assert offered == FACTORS, offered
        pg.keyboard.press("Escape")
        before = chart(pg, "latent_click", COLOURS)
        assert [name for name, _, _ in before] == ["square", "ellipse", "triangle", "sliders' z"], before
        for factor in ("x", "rotation"):  # continuous factors: one trace on a colour scale titled by the factor
            pg.locator(".st-key-scatter_colour input[role=combobox]").click()
            pg.get_by_role("option", name=factor, exact=True).click()
            after = until(lambda f=factor: (c := chart(pg, "latent_click", COLOURS)) and c[0][2] == f and c,
                          f"the scatter to recolour by {factor}")
            assert after != before and len(after[0][1]) == 50, after
            before = after
        settle(pg)
        no_exception(pg)
        shot(pg, "traversals_factor_scatter")

        # the traversal grid's rows name the factor each latent predicts
        pg.locator(".st-key-tview").get_by_text("Traversal grid", exact=True).click()
        rows = until(lambda: figure_with_title(pg, "Latent traversals", "Array.from(el.layout.yaxis.ticktext)"),
                     "the traversal grid")
        settle(pg)
        no_exception(pg)
        assert len(rows) == 4, rows
        pattern = re.compile(rf"^z(\d) · ({'|'.join(FACTORS)}|inactive|no factor)( \(|$)")
        matches = [pattern.match(r) for r in rows]
        assert all(matches) and [int(m.group(1)) for m in matches] == [1, 2, 3, 4], rows
        assert any(m.group(2) in FACTORS for m in matches), rows  # at least one latent predicts a factor
        assert "held-out examples" in pg.locator("body").inner_text()
        shot(pg, "traversals_factor_grid")
    finally:
        pg.close()


def test_2d_data_draws_g_of_z_in_data_space(server, browser):  # noqa: F811 - the imported fixture
    url, _, mix = server
    pg = new_page(browser)
    try:
        pg.goto(f"{url}/traversals?run={mix}")
        names = until(lambda: chart(pg, "gz_points", "el._fullData.map(t => t.name)"), "the data-space figure of g(z)")
        settle(pg)
        no_exception(pg)
        assert names[0] == "data" and names[-1] == "g(z)", names
        assert pg.locator('[data-testid="stMetric"]').count() == 0  # no printed numbers
        star = "[el._fullData[el._fullData.length - 1].x[0], el._fullData[el._fullData.length - 1].y[0]]"
        before = chart(pg, "gz_points", star)
        slider = pg.locator(f'.st-key-z_{mix}_0 input[type="range"]')
        slider.focus()
        for _ in range(20):
            slider.press("ArrowRight")
        settle(pg)
        until(lambda: chart(pg, "gz_points", star) not in (None, before), "g(z) to move when z1 moves")
        assert chart(pg, "gz_points", "el.layout.yaxis.scaleanchor") == "x"
        no_exception(pg)
        shot(pg, "traversals_data_space")
    finally:
        pg.close()
