"""Workers: every run ends with a status, bad runs never stop the worker, kills resume, claims happen once."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vaeviz.config import RunConfig
from vaeviz.runs import RunStore, pid_alive
from vaeviz.train import MemorySink, train
from vaeviz.worker import ensure_worker, work

SMALL = ["data.name=digits", "model.latent_dim=2", "model.hidden=32,32", "train.batch_size=32",
         "train.eval_every=100", "train.probe_size=200"]
ENV = {"OMP_NUM_THREADS": "1"}


def _cfg(*extra):
    return RunConfig().with_overrides(SMALL + list(extra))


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _worker_proc(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaeviz", "worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **ENV})


@pytest.fixture
def store(vaeviz_home):
    return RunStore()


def test_bad_runs_end_with_their_status_and_the_worker_goes_on(store, tmp_path):
    bad_data = store.create_run(_cfg("data.name=npz", f"data.path={tmp_path / 'missing.npz'}"))
    good = store.create_run(_cfg("train.steps=150"))
    diverging = store.create_run(_cfg("train.lr=10", "train.steps=400"))
    beside = store.create_run(_cfg("train.steps=150", "train.seed=1"))
    lines = []
    assert work(store, exit_when_idle=True, poll=0.05, log=lines.append) == 4
    failed = store.get(bad_data)
    assert failed.status == "failed" and "missing.npz" in failed.error and "Traceback" not in failed.error
    assert "Traceback" in (store.artifact_dir(bad_data) / "error.txt").read_text()
    div = store.get(diverging)
    assert div.status == "diverged" and div.error.startswith("diverged at step ") and "loss" in div.error
    for rid in (good, beside):
        rec = store.get(rid)
        assert (rec.status, rec.step, rec.device, rec.error) == ("done", 150, "cpu", None)
        assert store.metrics(rid, "train", "loss").step.tolist() == list(range(1, 151))
        assert store.snapshot_steps(rid) == [0, 100, 150]
    assert sum("started" in line for line in lines) == 4 and store.live_workers() == []


def test_cancel_stops_a_running_run_at_its_next_flush(store):
    rid = store.create_run(_cfg("train.steps=1000000"))

    def cancel_once_running():
        _wait(lambda: store.get(rid).step > 0, 60, "the first heartbeat")
        store.request_cancel(rid)

    thread = threading.Thread(target=cancel_once_running)
    thread.start()
    assert work(store, max_jobs=1) == 1
    thread.join()
    rec = store.get(rid)
    assert rec.status == "cancelled" and rec.step < 1000000
    assert (store.artifact_dir(rid) / "checkpoint.pt").exists()


def test_an_unknown_error_fails_the_run_with_its_type(store, monkeypatch):
    import vaeviz.train

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(vaeviz.train, "train", broken)
    rid = store.create_run(_cfg())
    work(store, max_jobs=1)
    rec = store.get(rid)
    assert rec.status == "failed" and rec.error.startswith("RuntimeError: boom (traceback in ")


@pytest.mark.slow
def test_sigkilled_worker_leaves_interrupted_and_resume_continues_one_stream(store):
    cfg = _cfg("train.steps=1500", "train.checkpoint_every=100", "train.eval_every=500")
    rid = store.create_run(cfg)
    proc = _worker_proc("--exit-when-idle", "--poll", "0.1")
    ckpt = store.artifact_dir(rid) / "checkpoint.pt"
    _wait(lambda: ckpt.exists() and store.get(rid).step >= 350, 90, "the worker to pass step 350")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = store.last_step(rid)
    assert store.get(rid).status == "running" and 350 <= killed_at < 1500
    assert work(store, exit_when_idle=True) == 0  # the next worker start notices the dead one
    assert store.get(rid).status == "interrupted"

    res = subprocess.run([sys.executable, "-m", "vaeviz", "resume", rid], capture_output=True, text=True,
                         env={**os.environ, **ENV}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"run: {rid}" and "status: done" in res.stdout
    resumed_from = int(res.stderr.split("resumed from step ")[1].split()[0])
    assert 100 <= resumed_from <= killed_at and resumed_from % 100 == 0
    assert store.get(rid).status == "done"

    loss = store.metrics(rid, "train", "loss")
    assert loss.step.tolist() == list(range(1, 1501))  # every step once: no gap, no duplicate
    assert store.metrics(rid, "eval", "elbo").step.tolist() == [0, 500, 1000, 1500]
    reference = MemorySink()
    train(cfg, reference)
    assert np.array_equal(loss.value.to_numpy(), reference.series("loss")[1])


@pytest.mark.slow
def test_sigterm_interrupts_the_run_so_it_can_resume(store):
    rid = store.create_run(_cfg("train.steps=1000000"))
    proc = _worker_proc()
    _wait(lambda: store.get(rid).step > 0, 90, "the first heartbeat")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert store.get(rid).status == "interrupted" and f"run {rid} interrupted" in out
    assert (store.artifact_dir(rid) / "checkpoint.pt").exists()


@pytest.mark.slow
def test_two_workers_finish_six_runs_each_exactly_once(store):
    ids = [store.create_run(_cfg("train.steps=150", f"train.seed={i}")) for i in range(6)]
    procs = [_worker_proc("--exit-when-idle", "--poll", "0.1") for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    started = [line.split("run ")[1].split()[0] for out in outs for line in out.splitlines() if "started" in line]
    assert sorted(started) == sorted(ids)
    assert all(store.get(i).status == "done" for i in ids)
    assert all(store.metrics(i, "train", "loss").step.tolist() == list(range(1, 151)) for i in ids)


@pytest.mark.slow
def test_ensure_worker_starts_one_detached_worker_only_when_needed(store):
    assert ensure_worker(store) is None  # nothing queued
    rid = store.create_run(_cfg("train.steps=100"))
    pid = ensure_worker(store)
    assert pid is not None and store.live_workers() == [pid]
    assert ensure_worker(store) is None  # one is alive already
    _wait(lambda: store.get(rid).status == "done", 90, "the background run")
    _wait(lambda: not pid_alive(pid), 30, "the idle worker to exit")
    assert ensure_worker(store) is None and store.live_workers() == []
    assert f"run {rid} done" in (store.home / "worker.log").read_text()
