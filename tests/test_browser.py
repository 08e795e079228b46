"""End to end in headless Chromium: the real `streamlit run app.py`, a real worker process, a real training run.

Launch a digits run from the Train page, watch the live chart gain points, reload mid-training and find the
run still progressing, open every explore page, move a traversal slider, compare two runs. Then a store whose
run names and error messages are markdown and HTML pointing at a local server: every page shows them as text
and the browser never requests their URLs; an uploaded .npz is validated without naming server paths.
Classroom traps (issue 15): a preset, then another objective, launched: the stored config keeps the preset's
decoder and σ, the sidebar badge counts the run without a reload, a reload keeps the form, and the header has no
Deploy button; Micro-MNIST's 7 training images appear on the tiling page.
Screenshots of every page go to test-artifacts/browser/ (gitignored).

Every wait polls for its condition with a generous timeout: nothing here assumes how fast the machine is.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vaeviz.config import RunConfig
from vaeviz.runs import RunStore
from vaeviz.train import train

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "browser"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
STEPS = 6000  # the launched run: long enough to reload mid-training here (waits poll, so any speed passes)
TINY = {"data.name": "digits", "model.hidden": "64,64", "train.eval_every": 100, "train.checkpoint_every": 500}
EXPLORE = [("Information plane", "info_plane_chart"), ("Posterior tiling", "tiling_chart"),
           ("Holes", "holes_chart"), ("σ² evolution", "sigma_chart"), ("Latent traversals", "latent_click")]
PATHS = {"Information plane": "info_plane", "Posterior tiling": "tiling", "Holes": "holes", "σ² evolution": "sigma",
         "Latent traversals": "traversals", "Compare": "compare", "Runs": "runs"}

WAIT_S = 600  # the longest any single wait polls: a slow machine takes longer, never fails for it
pytestmark = [
    pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(3 * WAIT_S),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (Debian's chromium: `make chromium`)"),
]


def until(condition, what: str, timeout: float = WAIT_S, pause: float = 0.5):
    """Poll `condition` until it returns something truthy (which is returned); fail naming `what` after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(pause)
    raise AssertionError(f"still waiting after {timeout:.0f} s for {what}")


def open_page(pg, title: str) -> None:
    """Click a navigation link until the URL shows its page: a click that lands while the app is rerunning
    (e.g. the Train page's fragment noticing the run ended) can be dropped by the browser."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def opened() -> bool:
        pg.get_by_role("link", name=title, exact=True).click()  # ("Holes" is also in a lesson's title)
        try:
            pg.wait_for_url(re.compile(rf"/{PATHS[title]}(\?|$)"), timeout=10_000)
            return True
        except PlaywrightTimeout:
            return False

    until(opened, f"the {title} link to open its page", pause=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"streamlit exited with {proc.returncode}")
    try:
        return urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok"
    except OSError:
        return False


def train_done(store: RunStore, overrides: dict, name: str | None = None) -> str:
    """A run trained in this process and marked done."""
    cfg = RunConfig().with_overrides({**TINY, **overrides})
    run_id = store.create_run(cfg, name, worker_pid=os.getpid())
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    return run_id


@contextlib.contextmanager
def serve(store: RunStore, **extra_env):
    """`streamlit run app.py` on a free port over `store` (and `extra_env`); yields its URL."""
    port = free_port()
    env = {**os.environ, "VAEVIZ_HOME": str(store.home), "VAEVIZ_OFFLINE": "1", **extra_env}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = open(store.home / "streamlit.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: healthy(url, proc), "streamlit to answer its health check")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        for pid in store.live_workers():  # the worker the app started, if it is still alive
            os.kill(pid, signal.SIGTERM)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app over a fresh VAEVIZ_HOME holding one finished GECO run."""
    store = RunStore(tmp_path_factory.mktemp("vaeviz_home"))
    train_done(store, {"objective.name": "geco", "objective.kappa": 0.3, "objective.alpha": 0.9, "train.steps": 300,
                       "name": "geco-reference"})
    with serve(store) as url:
        yield url, store


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module (Playwright's sync API allows one instance per thread)."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def new_page(browser):
    pg = browser.new_page(viewport={"width": 1400, "height": 1300})
    pg.set_default_timeout(WAIT_S * 1000 // 5)
    return pg


@pytest.fixture(scope="module")
def page(server, browser):
    pg = new_page(browser)
    yield pg
    pg.close()


def settle(pg) -> None:
    """Wait until the script run has finished (the status widget says so)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_S * 1000)


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

    # Train: a digits run long enough to watch and reload mid-way; launch enqueues it, starts a worker
    set_number(pg, "steps", STEPS)
    set_number(pg, "eval_every", STEPS // 10)
    # the form's values reach the link only once the script has run with them: launch from that form
    pg.wait_for_url(re.compile(rf"train\.steps={STEPS}.*train\.eval_every={STEPS // 10}|"
                               rf"train\.eval_every={STEPS // 10}.*train\.steps={STEPS}"), timeout=WAIT_S * 1000)
    settle(pg)
    pg.get_by_role("button", name="Launch").click()
    pg.wait_for_url(re.compile(r"run=(?!" + reference + ")"), timeout=WAIT_S * 1000)  # the new run is selected
    run_id = next(r.id for r in store.list_runs() if r.id != reference)
    assert run_id in pg.url
    seen = []

    def chart_moved_twice() -> bool:
        n = chart_last_step(pg, "live_chart")  # 0 while the chart is being drawn
        if 0 < n <= store.get(run_id).step:  # not the reference run's chart, still shown just after the launch
            seen.append(n)
        return len(set(seen)) >= 3

    until(chart_moved_twice, "the live chart to move on twice")
    assert seen == sorted(seen), seen
    shot(pg, "train")

    # reload mid-training: same run selected (from the URL), still running, still progressing
    before = store.get(run_id).step
    pg.reload()
    settle(pg)
    assert f"run={run_id}" in pg.url
    pg.wait_for_selector('[data-testid="stProgress"]')
    first = progress_step(pg)
    assert store.get(run_id).status in ("running", "done")
    until(lambda: progress_step(pg) > first >= before or store.get(run_id).status == "done",
          "the progress bar to move on after the reload")

    # wait for the end, then every explore page shows its main chart and no exception
    until(lambda: store.get(run_id).status != "running", "the run to end")
    assert store.get(run_id).status == "done", store.get(run_id).error
    for title, key in EXPLORE:
        open_page(pg, title)
        settle(pg)
        pg.wait_for_selector(f".st-key-{key} .js-plotly-plot")
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
    until(lambda: img.screenshot() != before, "the decoded image to change")
    shot(pg, "traversals")

    # click a point of the latent scatter: its code goes into the sliders and the image follows
    before, value = img.screenshot(), slider.get_attribute("aria-valuetext")
    pg.locator(".st-key-latent_click .scatterlayer .trace .points path").nth(5).click(force=True)
    settle(pg)
    pg.wait_for_function(f"document.querySelector('.st-key-z_{run_id}_0 input').getAttribute('aria-valuetext')"
                         f" !== '{value}'")
    until(lambda: img.screenshot() != before, "the decoded image to follow the clicked code")

    # GECO dynamics needs a GECO run: a shared link to the reference run opens it there
    pg.goto(f"{url}/geco?run={reference}")
    settle(pg)
    pg.wait_for_selector(".st-key-geco_chart .js-plotly-plot")
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


# -- user text is text, server paths stay on the server ----------------------------------------


@contextlib.contextmanager
def counting_server():
    """A local web server that records every request it gets: the oracle for "the browser fetched a URL
    written in a run name or an error message". Yields its port and the list of requested paths."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_POST = do_GET

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    """The app over runs named in markdown and HTML that point at a counting server: two finished runs and a
    failed one whose error message does the same."""
    with counting_server() as (port, hits):
        at = f"http://127.0.0.1:{port}"
        names = [f"![n]({at}/md.png)", f"<img src={at}/html.png onerror=alert(1)>", "**bold** [l](javascript:alert(1))"]
        error = f"diverged: ![e]({at}/error.png) <img src={at}/error2.png> :red[red]"
        store = RunStore(tmp_path_factory.mktemp("hostile_home"))
        failed = store.create_run(RunConfig().with_overrides(TINY), names[2])  # the oldest: Compare pairs the others
        store.set_status(failed, "failed", error)
        short_run = {"objective.name": "vae", "train.steps": 100, "train.eval_every": 50}
        ids = [train_done(store, short_run, name) for name in names[:2]] + [failed]
        with serve(store) as url:
            yield url, store, dict(zip(ids, names)), error, port, hits


def page_text(pg) -> str:
    """What the page shows as text (the word joiners that keep URLs from becoming links removed)."""
    return pg.locator("body").inner_text().replace("\u2060", "")


def npz_bytes(n: int = 60) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).random((n, 8, 8)).astype(np.float32), y=np.arange(n) % 3)
    return buf.getvalue()


def upload(pg, name: str, data: bytes) -> None:
    pg.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        {"name": name, "mimeType": "application/octet-stream", "buffer": data})
    settle(pg)


def test_names_and_messages_are_text_and_fetch_nothing(hostile_server, browser):
    url, store, names, error, port, hits = hostile_server
    first, second, failed = names
    with contextlib.closing(new_page(browser)) as pg:
        requests = []
        pg.on("request", lambda request: requests.append(request.url))
        for path, run_id, shown in [("", first, [names[first]]), ("runs", first, [names[first]]),
                                    ("runs", failed, [names[failed], error]),
                                    ("compare", first, [names[first], names[second]])]:
            pg.goto(f"{url}/{path}?run={run_id}")
            until(lambda want=shown: all(t in page_text(pg) for t in want), f"{shown} shown as text on /{path}")
            settle(pg)
            assert pg.locator('[data-testid="stException"]').count() == 0
            if path == "runs":
                shot(pg, f"runs_hostile_{'error' if run_id == failed else 'name'}")
        legend = "() => Array.from(document.querySelectorAll('.st-key-cmp_plane .legendtext')).map(e => e.textContent)"
        until(lambda: {names[first], names[second]} <= set(pg.evaluate(legend)), "both names in the plane's legend")
        shot(pg, "compare_hostile")

        # an uploaded .npz: refused with its own name, never the server's path; accepted once valid
        pg.goto(url)
        settle(pg)
        pg.locator(".st-key-cfg-data-name input[role=combobox]").click()
        pg.get_by_role("option", name="npz", exact=True).click()
        settle(pg)
        upload(pg, "bad <b>name</b>.npz", b"not an npz")
        alert = pg.locator('[data-testid="stAlertContentError"]').first.inner_text()
        assert "bad <b>name</b>.npz is not a valid .npz file" in alert.replace("\u2060", ""), alert
        assert str(store.home) not in page_text(pg) and "/uploads/" not in page_text(pg)
        upload(pg, "good.npz", npz_bytes())
        until(lambda: "Using good.npz: 60 examples." in page_text(pg), "the upload to be accepted")
        shot(pg, "train_upload")

        assert not [r for r in requests if f":{port}" in r], requests
    assert hits == []


# -- classroom traps (issue 15) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("switch_home"))
    with serve(store) as url:
        yield url, store


def pick(pg, key: str, option: str) -> None:
    """Choose `option` in the selectbox of widget key `key`."""
    pg.locator(f".st-key-{key} input[role=combobox]").click()
    pg.get_by_role("option", name=option, exact=True).click()
    settle(pg)


def sidebar_text(pg) -> str:
    """What the sidebar shows below the navigation (the queue badge first)."""
    return pg.locator('[data-testid="stSidebarUserContent"]').inner_text()


def test_preset_then_objective_switch_keeps_the_decoder(empty_server, browser):
    """mixture-2d (Gaussian decoder, σ = 0.05), then β-VAE, launched: the stored run keeps decoder and σ, the page
    said so, the badge counts the run at once, a reload keeps the form, and there is no Deploy button."""
    url, store = empty_server
    with contextlib.closing(new_page(browser)) as pg:
        pg.goto(url)
        settle(pg)
        until(lambda: "idle" in sidebar_text(pg), "the queue badge")
        assert pg.get_by_role("button", name="Deploy").count() == 0
        pick(pg, "preset", "mixture-2d")
        pick(pg, "cfg-objective-name", "beta_vae")
        note = "Kept from vae: objective.decoder = gaussian, objective.sigma = 0.05."
        until(lambda: note in page_text(pg), "the note on the knobs kept")
        set_number(pg, "steps", 1_000_000)  # still training when the badge is read
        pg.get_by_role("button", name="Launch").click()
        until(lambda: store.list_runs(), "the run to be created")
        (rec,) = store.list_runs()
        assert rec.config.objective.name == "beta_vae" and rec.name == "mixture-2d-beta_vae"
        assert (rec.config.objective.decoder, rec.config.objective.sigma) == ("gaussian", 0.05)
        assert rec.config.data.name == "gaussian_mixture" and rec.config.model.hidden == [64, 64]
        until(lambda: re.search(r"1 running · 0 queued|0 running · 1 queued", sidebar_text(pg)),
              "the badge to count the new run without a reload")
        shot(pg, "train_switch")
        store.request_cancel(rec.id)
        until(lambda: "idle" in sidebar_text(pg), "the badge to say idle once the run ended, without a reload")

        link = pg.url
        pg.reload()
        settle(pg)
        for key, want in [("cfg-objective-name", "beta_vae"), ("cfg-beta_vae-objective-decoder", "gaussian"),
                          ("preset", "mixture-2d")]:
            until(lambda k=key, w=want: pg.locator(f".st-key-{k} input[role=combobox]").input_value() == w
                  or w in pg.locator(f".st-key-{k}").inner_text(), f"{key} = {want} from {link}")
        for label, want in [("sigma", "0.05"), ("steps", "1000000")]:  # (a number input is drawn, then filled)
            until(lambda k=label, w=want: pg.get_by_label(k, exact=True).input_value() == w, f"{label} = {want}")


@pytest.fixture(scope="module")
def micro_server(tmp_path_factory):
    """The app over one Micro-MNIST run (preset micro-mnist-2d, shortened); skipped without the MNIST files."""
    from conftest import shared_data_dir

    data = shared_data_dir()
    if data is None or not (data / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found: set VAEVIZ_DATA_DIR or place ../shared/data/mnist beside the repo")
    from vaeviz.presets import preset_config

    store = RunStore(tmp_path_factory.mktemp("micro_home"))
    cfg = preset_config("micro-mnist-2d").with_overrides({"train.steps": 600, "train.eval_every": 200,
                                                          "train.checkpoint_every": 200})
    run_id = store.create_run(cfg, worker_pid=os.getpid())
    with pytest.MonkeyPatch.context() as env:  # the data folder for this training only, not for later tests
        env.setenv("VAEVIZ_DATA_DIR", str(data))
        train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    with serve(store, VAEVIZ_DATA_DIR=str(data)) as url:
        yield url, store, run_id


def test_micro_mnist_tiling_shows_the_seven_training_images(micro_server, browser):
    url, store, run_id = micro_server
    with contextlib.closing(new_page(browser)) as pg:
        pg.goto(f"{url}/tiling?run={run_id}")
        pg.wait_for_selector(".st-key-tiling_chart .js-plotly-plot")
        settle(pg)
        no_exception(pg)
        assert "Training split: all 7 training examples" in page_text(pg)
        assert store.get(run_id).name == "micro-mnist-2d"
        figure = "() => document.querySelector('.st-key-tiling_chart .js-plotly-plot')"
        until(lambda: pg.evaluate(f"({figure})().layout.images.length") == 7, "the 7 decoded images on the tiling")
        labels = pg.evaluate(f"({figure})().data.filter(t => t.name === 'examples')[0].text")
        assert labels == [str(i) for i in range(1, 8)]
        assert pg.locator(".st-key-tiling_chart image").count() >= 7  # drawn, not just declared
        pg.wait_for_selector(".st-key-tiling_strip .js-plotly-plot")
        shot(pg, "tiling_micro_mnist")
