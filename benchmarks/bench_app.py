"""App responsiveness and idleness: the traversal slider's rerun, the worker-to-live-chart latency and the idle
app's CPU share per page (printed, not timed tests).

1. traversal_rerun_ms: a finished digits run (latent 8) is open on the Latent traversals page in AppTest;
   each repeat moves slider z0 and reruns. AppTest reruns the whole page (sidebar, scrubber, the scatter and
   the slider fragment), so this is an upper bound of the fragment-only rerun a browser triggers. Also printed:
   the fragment's own work (decode one code and encode the PNG), traversal_decode_ms.
2. live_chart_latency_s: `streamlit run app.py` in headless Chromium shows the Train page of a running run
   owned by this process; each repeat writes one metric step to the store, as a worker does, and measures the
   time until the live chart in the browser has that point. The fragment polls every POLL_SECONDS (1 s), so
   the expected mean is about half a poll plus the redraw. Skipped without /usr/bin/chromium.
3. idle_cpu_pct[page]: a store of 50 finished runs (--idle-runs), nothing queued or running; `streamlit run
   app.py` started as `make run` starts it (in the repository, so .streamlit/config.toml applies) with one
   Chromium tab that visits every page in turn through the sidebar; on each page, once its script run has
   finished (the process below 5% of a core for 2 s, at most 180 s: the first visit imports torch), the app
   process's CPU time (user + system, /proc/<pid>/stat) over --idle-seconds (60) of wall time, as a share of
   one core. `--file-watcher auto` measures Streamlit's default file watcher instead, which the repository's
   config turns off (it watches the whole repository, .venv included, and any writes below it cost the idle
   app CPU). Skipped without /usr/bin/chromium.

Targets: traversal rerun <= 150 ms median (issue 5); a metric on the live chart within 2 s; an idle app below 2%
of a core on every page (issue 15).
Usage: python benchmarks/bench_app.py [--repeats 15] [--idle-seconds 60] [--idle-runs 50] [--only idle|latency]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaeviz import app_state  # noqa: E402
from vaeviz.analysis.batching import decode_batched  # noqa: E402
from vaeviz.build import load_run  # noqa: E402
from vaeviz.config import RunConfig  # noqa: E402
from vaeviz.lessons import LESSONS  # noqa: E402
from vaeviz.runs import RunStore  # noqa: E402
from vaeviz.train import train  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CFG = {"data.name": "digits", "model.hidden": "64,64", "model.latent_dim": 8, "train.steps": 300,
       "train.eval_every": 100, "train.probe_size": 500}


def finished_run(store: RunStore) -> str:
    cfg = RunConfig().with_overrides(CFG)
    run_id = store.create_run(cfg, worker_pid=os.getpid())
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    return run_id


def traversal_rerun(store: RunStore, run_id: str, repeats: int) -> tuple[list[float], list[float]]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("views/traversals.py").run()
    slider = f"z_{run_id}_0"
    at.slider(key=slider).set_value(0.5).run()  # warm: model, probe codes and scatter cached
    times = []
    for i in range(repeats):
        value = round(-2.5 + 5.0 * i / max(1, repeats - 1), 2)
        t = time.perf_counter()
        at.slider(key=slider).set_value(value).run()
        times.append(time.perf_counter() - t)
        assert not at.exception, at.exception
    setup, _ = load_run(store.get(run_id).config, store.artifact_dir(run_id))
    decode = []
    for i in range(repeats):
        z = np.full((1, setup.model.latent_dim), i / repeats, np.float32)
        t = time.perf_counter()
        img = app_state.as_images(decode_batched(setup.model, z), setup.data.shape)[0]
        app_state.png_bytes(app_state.upscale(img, 25))
        decode.append(time.perf_counter() - t)
    return times, decode


def live_latency(store: RunStore, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    cfg = RunConfig().with_overrides({**CFG, "train.steps": 100_000, "name": "live"})
    run_id = store.create_run(cfg, worker_pid=os.getpid())  # running, owned by this (live) process
    store.add_metrics(run_id, [(1, "train", n, 1.0) for n in ("loss", "rate", "distortion")])
    store.heartbeat(run_id, 1)
    port = 8700 + os.getpid() % 200
    env = {**os.environ, "VAEVIZ_HOME": str(store.home), "VAEVIZ_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    count = "() => { const e = document.querySelector('.st-key-live_chart .js-plotly-plot');" \
            " return e && e._fullData && e._fullData.length ? e._fullData[0]._length : 0; }"
    latencies = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for _ in range(60):
                try:
                    page.goto(f"http://127.0.0.1:{port}/?run={run_id}")
                    break
                except Exception:  # noqa: BLE001 - the server is still starting
                    time.sleep(1)
            page.wait_for_function(f"({count})() >= 1", timeout=60_000)
            for step in range(2, repeats + 2):
                time.sleep(0.37 * (step % 3))  # land at different phases of the poll
                store.add_metrics(run_id, [(step, "train", n, 1.0 / step) for n in ("loss", "rate", "distortion")])
                store.heartbeat(run_id, step)
                t = time.perf_counter()
                page.wait_for_function(f"({count})() >= {step}", timeout=30_000, polling=20)
                latencies.append(time.perf_counter() - t)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return latencies


IDLE_PAGES = ["", "info_plane", "tiling", "holes", "sigma", "geco", "traversals", "compare", "beta", "runs",
              *(f"lesson-{name}" for name in LESSONS)]  # url paths
IDLE_MIX = [{"objective.name": "vae"}, {"objective.name": "beta_vae", "model.latent_dim": 8},
            {"objective.name": "rae"}, {"objective.name": "beta_tcvae", "model.latent_dim": 4},
            {"objective.name": "vae", "data.name": "gaussian_mixture", "objective.decoder": "gaussian"}]


def idle_store(store: RunStore, n: int) -> None:
    """`n` small finished runs of several objectives, data sets and latent sizes."""
    for i in range(n):
        cfg = RunConfig().with_overrides({**CFG, "model.hidden": "32,32", "train.steps": 200,
                                          "train.checkpoint_every": 100, **IDLE_MIX[i % len(IDLE_MIX)]})
        run_id = store.create_run(cfg, worker_pid=os.getpid())
        train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
        store.set_status(run_id, "done", device="cpu")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_app(store: RunStore, port: int, watcher: str | None) -> subprocess.Popen:
    """`streamlit run app.py` in the repository as `make run` starts it (its .streamlit/config.toml applies)."""
    extra = ["--server.fileWatcherType", watcher] if watcher else []
    env = {**os.environ, "VAEVIZ_HOME": str(store.home), "VAEVIZ_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1", *extra],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def settled(page, pid: int, quiet: float = 5.0, limit: float = 180.0) -> None:
    """The page's script run has finished: no status widget, then the app process under `quiet` % of a core over
    a 2 s window (the first visit imports torch and plots for seconds). A page that keeps polling never gets
    quiet: after `limit` s it is measured as it is."""
    page.wait_for_timeout(1500)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=600_000)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        before = cpu_seconds(pid)
        time.sleep(2.0)
        if 100 * (cpu_seconds(pid) - before) / 2.0 < quiet:
            return


def idle_cpu(store: RunStore, seconds: float, watcher: str | None) -> dict[str, float]:
    """The app process's CPU share (% of one core) over `seconds` on each page, visited in turn in one tab."""
    from playwright.sync_api import sync_playwright

    port = 8900 + os.getpid() % 90
    proc, shares = start_app(store, port, watcher), {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            goto_when_up(page, f"http://127.0.0.1:{port}/")
            for path in IDLE_PAGES:
                if path:
                    page.locator(f'[data-testid="stSidebarNav"] a[href$="/{path}"]').first.click()
                settled(page, proc.pid)
                before, t = cpu_seconds(proc.pid), time.monotonic()
                time.sleep(seconds)
                shares[path or "train"] = 100 * (cpu_seconds(proc.pid) - before) / (time.monotonic() - t)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    return shares


def goto_when_up(page, url: str) -> None:
    for _ in range(120):
        try:
            page.goto(url)
            return
        except Exception:  # noqa: BLE001 - the server is still starting
            time.sleep(1)
    page.goto(url)


def report_idle(args) -> None:
    if not Path(CHROMIUM).exists():
        print("idle_cpu_pct: skipped (no /usr/bin/chromium)")
        return
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        idle_store(store, args.idle_runs)
        assert not store.count("queued") and not store.count("running")
        shares = idle_cpu(store, args.idle_seconds, args.file_watcher)
    watcher = args.file_watcher or "as configured (none)"
    print(f"idle_cpu: {args.idle_runs} finished runs, {args.idle_seconds:g} s per page, file watcher {watcher}")
    for page, share in shares.items():
        print(f"idle_cpu_pct[{page}]: {share:.2f}")
    print(f"idle_cpu_pct_max: {max(shares.values()):.2f} (goal < 2)")


def report_latency(args) -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["VAEVIZ_HOME"] = home
        store = RunStore(home)
        run_id = finished_run(store)
        reruns, decode = traversal_rerun(store, run_id, args.repeats)
        print(f"traversal_rerun_ms_median: {1000 * statistics.median(reruns):.1f}")
        print(f"traversal_rerun_ms_max: {1000 * max(reruns):.1f}")
        print(f"traversal_decode_ms_median: {1000 * statistics.median(decode):.2f}")
        if Path(CHROMIUM).exists():
            lat = live_latency(store, args.repeats)
            print(f"live_chart_latency_s_median: {statistics.median(lat):.2f}")
            print(f"live_chart_latency_s_max: {max(lat):.2f}")
        else:
            print("live_chart_latency_s: skipped (no /usr/bin/chromium)")
        print(f"ratio_traversal_rerun_to_150ms_budget: {statistics.median(reruns) / 0.150:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--idle-runs", type=int, default=50)
    parser.add_argument("--file-watcher", choices=["auto", "watchdog", "poll", "none"], default=None,
                        help="override the repository's server.fileWatcherType (default: as configured)")
    parser.add_argument("--only", choices=["latency", "idle"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only != "idle":
        report_latency(args)
    if args.only != "latency":
        report_idle(args)


if __name__ == "__main__":
    main()
