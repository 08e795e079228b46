"""End to end in headless Chromium: the real `streamlit run app.py`, a real worker process, a real training run.

Launch a digits run from the Train page, watch the live chart gain points, reload mid-training and find the
run still progressing, open every explore page, move a traversal slider, compare two runs. Screenshots of
every page go to test-artifacts/browser/ (gitignored).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from vaeviz.config import RunConfig
from vaeviz.runs import RunStore
from vaeviz.train import train

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TINY = {"data.name": "digits", "model.hidden": "64,64", "train.eval_every": 100, "train.checkpoint_every": 500}
EXPLORE = [("Information plane", "info_plane_chart"), ("Posterior tiling", "tiling_chart"),
           ("Holes", "holes_chart"), ("σ² evolution", "sigma_chart"), ("Latent traversals", "latent_click")]
PATHS = {"Information plane": "info_plane", "Posterior tiling": "tiling", "Holes": "holes", "σ² evolution": "sigma",
         "Latent traversals": "traversals", "Compare": "compare", "Runs": "runs"}

pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(480),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]


def open_page(pg, title: str) -> None:
    """Click a navigation link until the URL shows its page: a click that lands while the app is rerunning
    (e.g. the Train page's fragment noticing the run ended) can be dropped by the browser."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(4):
        pg.get_by_role("link", name=title).click()
        try:
            pg.wait_for_url(re.compile(rf"/{PATHS[title]}(\?|$)"), timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"the {title} link never opened its page")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("streamlit did not become healthy")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port with a fresh VAEVIZ_HOME holding one finished GECO run."""
    home = tmp_path_factory.mktemp("vaeviz_home")
    store = RunStore(home)
    cfg = RunConfig().with_overrides({**TINY, "objective.name": "geco", "objective.kappa": 0.3,
                                      "objective.alpha": 0.9, "train.steps": 300, "name": "geco-reference"})
    run_id = store.create_run(cfg, worker_pid=os.getpid())
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    port = free_port()
    env = {**os.environ, "VAEVIZ_HOME": str(home), "VAEVIZ_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = open(home / "streamlit.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url, store
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        for pid in store.live_workers():  # the worker the app started, if it is still alive
            os.kill(pid, signal.SIGTERM)
        log.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1300})
        pg.set_default_timeout(30_000)
        yield pg
        browser.close()


def settle(pg) -> None:
    """Wait until the script run has finished (the status widget says so)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


def no_exception(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0
    assert pg.locator('[data-testid="stAlertContentError"]').count() == 0, pg.locator(
        '[data-testid="stAlertContentError"]').first.inner_text()


def chart_last_step(pg, key: str) -> int:
    """The largest x (training step) the chart plots; 0 while it is being drawn. (Point counts are no
    measure of progress: past 2,000 steps the live chart thins its points to at most 2,000 steps.)"""
    return pg.evaluate(f"""() => {{
        const el = document.querySelector('.st-key-{key} .js-plotly-plot');
        if (!el || !el._fullData) return 0;
        return el._fullData.reduce((m, t) => Math.max(m, ...Array.from(t.x || [0])), 0); }}""")


def progress_step(pg) -> int:
    text = pg.locator('[data-testid="stProgress"]').first.inner_text()
    return int(re.search(r"step ([\d,]+)/", text).group(1).replace(",", ""))


def shot(pg, name: str) -> None:
    """Screenshot of the page scrolled to the top (Streamlit scrolls its main block, not the window)."""
    pg.evaluate("() => document.querySelectorAll('[data-testid=stMain], [data-testid=stAppViewContainer]')"
                ".forEach(e => e.scrollTo(0, 0))")
    pg.wait_for_timeout(300)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def set_number(pg, label: str, value) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(pg)


def test_train_watch_reload_explore_compare(server, page):
    url, store = server
    (reference,) = [r.id for r in store.list_runs()]
    pg = page
    pg.goto(url)
    settle(pg)
    no_exception(pg)

    # Train: a digits run long enough to watch and reload mid-way (~15 s); launch enqueues it, starts a worker
    set_number(pg, "steps", 12000)
    set_number(pg, "eval_every", 1200)
    pg.get_by_role("button", name="Launch").click()
    pg.wait_for_url(re.compile(r"run=(?!" + reference + ")"), timeout=30_000)  # the new run is selected
    run_id = next(r.id for r in store.list_runs() if r.id != reference)
    assert run_id in pg.url
    seen = []
    end = time.monotonic() + 90
    while len(set(seen)) < 3 and time.monotonic() < end:  # the live chart moves on at least twice
        pg.wait_for_timeout(500)
        if n := chart_last_step(pg, "live_chart"):  # 0 while the chart is being drawn
            seen.append(n)
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    shot(pg, "train")

    # reload mid-training: same run selected (from the URL), still running, still progressing
    before = store.get(run_id).step
    pg.reload()
    settle(pg)
    assert f"run={run_id}" in pg.url
    pg.wait_for_selector('[data-testid="stProgress"]')
    first = progress_step(pg)
    pg.wait_for_timeout(2500)
    assert store.get(run_id).status in ("running", "done")
    assert progress_step(pg) > first >= before or store.get(run_id).status == "done"

    # wait for the end, then every explore page shows its main chart and no exception
    end = time.monotonic() + 120
    while store.get(run_id).status == "running" and time.monotonic() < end:
        time.sleep(1)
    assert store.get(run_id).status == "done", store.get(run_id).error
    for title, key in EXPLORE:
        open_page(pg, title)
        settle(pg)
        pg.wait_for_selector(f".st-key-{key} .js-plotly-plot", timeout=60_000)
        no_exception(pg)
        shot(pg, key.removesuffix("_chart"))

    # traversal: move a slider, the decoded image changes
    img = pg.locator('[data-testid="stImage"] img').first
    before = img.screenshot()
    slider = pg.locator(f'.st-key-z_{run_id}_0 input[type="range"]')
    slider.focus()
    for _ in range(20):
        slider.press("ArrowRight")
    settle(pg)
    pg.wait_for_timeout(500)
    assert img.screenshot() != before
    shot(pg, "traversals")

    # click a point of the latent scatter: its code goes into the sliders and the image follows
    before, value = img.screenshot(), slider.get_attribute("aria-valuetext")
    pg.locator(".st-key-latent_click .scatterlayer .trace .points path").nth(5).click(force=True)
    settle(pg)
    pg.wait_for_function(f"document.querySelector('.st-key-z_{run_id}_0 input').getAttribute('aria-valuetext')"
                         f" !== '{value}'")
    pg.wait_for_timeout(500)
    assert img.screenshot() != before

    # GECO dynamics needs a GECO run: a shared link to the reference run opens it there
    pg.goto(f"{url}/geco?run={reference}")
    settle(pg)
    pg.wait_for_selector(".st-key-geco_chart .js-plotly-plot", timeout=60_000)
    no_exception(pg)
    shot(pg, "geco")

    # compare the new run with the reference run
    open_page(pg, "Compare")
    settle(pg)
    pg.wait_for_selector(".st-key-cmp_plane .js-plotly-plot")
    names = pg.evaluate("() => document.querySelector('.st-key-cmp_plane .js-plotly-plot').data.map(t => t.name)")
    assert "geco-reference" in names and any(n.startswith("vae-digits") for n in names), names
    no_exception(pg)
    shot(pg, "compare")

    open_page(pg, "Runs")
    settle(pg)
    no_exception(pg)
    shot(pg, "runs")
