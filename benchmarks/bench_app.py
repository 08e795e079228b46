"""App responsiveness: the traversal slider's rerun and the worker-to-live-chart latency (printed, not timed tests).

1. traversal_rerun_ms: a finished digits run (latent 8) is open on the Latent traversals page in AppTest;
   each repeat moves slider z0 and reruns. AppTest reruns the whole page (sidebar, scrubber, the scatter and
   the slider fragment), so this is an upper bound of the fragment-only rerun a browser triggers. Also printed:
   the fragment's own work (decode one code and encode the PNG), traversal_decode_ms.
2. live_chart_latency_s: `streamlit run app.py` in headless Chromium shows the Train page of a running run
   owned by this process; each repeat writes one metric step to the store, as a worker does, and measures the
   time until the live chart in the browser has that point. The fragment polls every POLL_SECONDS (1 s), so
   the expected mean is about half a poll plus the redraw. Skipped without /usr/bin/chromium.

Target (issue 5): traversal rerun <= 150 ms median; a metric on the live chart within 2 s.
Usage: python benchmarks/bench_app.py [--repeats 15]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
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


if __name__ == "__main__":
    main()
