"""Workers: every run ends with a status, bad runs never stop the worker, kills resume, claims happen once,
dead workers' runs are reclaimed from their last checkpoint (by steps or by time) into the same stream."""

import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vaeviz.member
import vaeviz.train
from vaeviz import cli
from vaeviz.checkpoint import checkpoint_steps, resume_states
from vaeviz.config import RunConfig
from vaeviz.member import MemorySink
from vaeviz.runs import RunStore, pid_alive
from vaeviz.train import Trainer, train, train_batched
from vaeviz.worker import _heartbeats, ensure_worker, work

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

    monkeypatch.setattr(vaeviz.train.Trainer, "run", broken)
    rid = store.create_run(_cfg())
    work(store, max_jobs=1)
    rec = store.get(rid)
    assert rec.status == "failed" and rec.error.startswith("RuntimeError: boom (traceback in ")


@pytest.mark.slow
def test_sigkilled_worker_leaves_interrupted_and_resume_continues_one_stream(store):
    cfg = _cfg("train.steps=1500", "train.checkpoint_every=100", "train.eval_every=500", "train.checkpoint_seconds=0")
    rid = store.create_run(cfg)
    proc = _worker_proc("--exit-when-idle", "--poll", "0.1")
    ckpt = store.artifact_dir(rid) / "checkpoint.pt"
    _wait(lambda: ckpt.exists() and store.get(rid).step >= 350, 90, "the worker to pass step 350")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = store.last_step(rid)
    assert 350 <= killed_at < 1500
    _wait(lambda: store.get(rid).status == "interrupted", 60, "a reader to see the dead worker's run")
    assert work(store, exit_when_idle=True, reclaim=False) == 0  # the opt-out leaves it for `vaeviz resume`
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


# -- crashes, reclaims and time-based checkpoints ----------------------------------------------------------------

CRASHABLE = ["train.steps=60", "train.eval_every=20", "train.checkpoint_every=20", "train.threads=1"]
PAIR = ([], ["objective.name=beta_vae", "objective.beta=4", "train.seed=1"])  # a batch of two runs, one group


class _Crash(Exception):
    """What a SIGKILL does to a trainer, in-process: it stops mid-run, saving nothing more."""


class _CrashAt:
    """A sink that dies when handed rows of step `step` or later (those rows are lost, like unflushed ones)."""

    def __init__(self, sink, step: int):
        self.sink, self.step = sink, step

    def write(self, rows):
        if any(r[0] >= self.step for r in rows):
            raise _Crash(f"killed at step {self.step}")
        self.sink.write(rows)

    def __getattr__(self, name):
        return getattr(self.sink, name)


@pytest.fixture
def ticking(monkeypatch):
    """The trainers' checkpoint clock advances one second per reading: time-based checkpoints without sleeping."""
    ticks = itertools.count()
    monkeypatch.setattr(vaeviz.train, "clock", lambda: float(next(ticks)))


def _saves(monkeypatch) -> list[tuple[str, int, bool]]:
    """Record every checkpoint the trainers save: (run folder name, step, with weights)."""
    saves, save = [], vaeviz.member.save_checkpoint

    def recording(workdir, step, *args, weights=True, **kwargs):
        save(workdir, step, *args, weights=weights, **kwargs)
        saves.append((Path(workdir).name, step, weights))

    monkeypatch.setattr(vaeviz.member, "save_checkpoint", recording)
    return saves


def _rows(store, rid) -> list[tuple]:
    return sorted(store.metrics(rid).itertuples(index=False, name=None))


def test_time_based_checkpoints_come_between_step_checkpoints_and_change_nothing(tmp_path, ticking, monkeypatch):
    saves = _saves(monkeypatch)
    cfg = _cfg(*CRASHABLE, "train.checkpoint_seconds=7")
    with_saves = MemorySink()
    train(cfg, with_saves, workdir=tmp_path)
    timed = [step for _, step, weights in saves if not weights]
    assert timed and all(step % 20 for step in timed)  # saved by time, between the step-based ones
    assert [step for _, step, weights in saves if weights] == [20, 40, 60]
    assert checkpoint_steps(tmp_path) == [20, 40, 60]  # the explorer's weights stay on the step grid
    assert sorted(resume_states(tmp_path)) == [max(timed), 60]  # the latest resume state and the one before
    reference = MemorySink()
    train(cfg, reference)  # no workdir: no checkpoint at all
    assert with_saves.rows == reference.rows


def test_no_time_based_checkpoint_with_checkpoint_seconds_0(tmp_path, ticking, monkeypatch):
    saves = _saves(monkeypatch)
    train(_cfg(*CRASHABLE, "train.checkpoint_seconds=0"), MemorySink(), workdir=tmp_path)
    assert saves == [(tmp_path.name, 20, True), (tmp_path.name, 40, True), (tmp_path.name, 60, True)]


def test_resume_from_a_time_based_checkpoint_continues_the_identical_stream(tmp_path, ticking):
    cfg = _cfg(*CRASHABLE, "train.checkpoint_seconds=7")
    reference, crashed = MemorySink(), MemorySink()
    train(cfg, reference)
    with pytest.raises(_Crash):
        train(cfg, _CrashAt(crashed, 52), workdir=tmp_path)
    start = max(resume_states(tmp_path))
    assert 40 < start < 52  # a time-based checkpoint after the last step-based one
    train(cfg, crashed, workdir=tmp_path, resume=True)
    assert crashed.rows == reference.rows and sorted(crashed.snapshots) == sorted(reference.snapshots)


@pytest.mark.parametrize("kill", ["between boundaries", "between the runs' saves"])
def test_a_batch_resumes_whole_into_identical_streams(tmp_path, ticking, monkeypatch, kill):
    cfgs = [_cfg(*CRASHABLE, "train.checkpoint_seconds=7", *v) for v in PAIR]
    reference = [MemorySink() for _ in cfgs]
    train_batched(cfgs, reference)
    saves = _saves(monkeypatch)
    if kill == "between the runs' saves":  # the kill comes before the second run's first save from step 30 on
        save, killed = vaeviz.member.save_checkpoint, []

        def dying(workdir, step, *args, **kwargs):
            if Path(workdir).name == "b" and step >= 30 and not killed:
                killed.append(step)
                raise _Crash("killed while the batch was saving")
            save(workdir, step, *args, **kwargs)

        monkeypatch.setattr(vaeviz.member, "save_checkpoint", dying)
    sinks, workdirs = [MemorySink() for _ in cfgs], [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(_Crash):
        Trainer(cfgs, [_CrashAt(sinks[0], 52), sinks[1]], workdirs).run()
    assert any(not weights for _, _, weights in saves)  # time-based saves came too
    saved = {name: max(step for n, step, _ in saves if n == name) for name in ("a", "b")}
    trainer = Trainer(cfgs, sinks, workdirs, resume=True)
    assert trainer.start == saved["b"] and (saved["a"] > saved["b"]) == (kill != "between boundaries")
    trainer.run()
    assert [s.rows for s in sinks] == [r.rows for r in reference]


def _crashed_run(store, batch: bool) -> tuple[list[str], list[MemorySink]]:
    """Runs (one, or a batch of two) trained by a worker that died at step 52, and their reference streams."""
    cfgs = [_cfg(*CRASHABLE, *v) for v in (PAIR if batch else PAIR[:1])]
    ids = store.create_batch(cfgs) if batch else [store.create_run(cfgs[0])]
    store.claim_group(_dead_pid())
    sinks = [_CrashAt(store.sink(ids[0]), 52)] + [store.sink(i) for i in ids[1:]]
    workdirs = [store.artifact_dir(i) for i in ids]
    with pytest.raises(_Crash):
        if batch:
            Trainer(cfgs, sinks, workdirs).run()
        else:
            train(cfgs[0], sinks[0], workdir=workdirs[0])
    reference = [MemorySink() for _ in cfgs]
    train_batched(cfgs, reference) if batch else train(cfgs[0], reference[0])
    return ids, reference


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("batch", [False, True], ids=["solo", "batch"])
def test_a_worker_reclaims_a_dead_workers_runs_from_their_last_checkpoint(store, batch):
    ids, reference = _crashed_run(store, batch)
    assert [store.get(i).status for i in ids] == ["running"] * len(ids)  # until a worker looks
    lines = []
    assert work(store, exit_when_idle=True, log=lines.append) == len(ids)
    for rid, ref in zip(ids, reference):
        rec = store.get(rid)
        assert (rec.status, rec.step, rec.reclaims) == ("done", 60, 1)
        assert f"run {rid} done (resumed from step 40)" in lines
        assert _rows(store, rid) == sorted(ref.rows)
    assert sum("reclaimed 1×" in line for line in lines) == len(ids)


def test_no_reclaim_leaves_the_run_interrupted_until_a_reclaiming_worker_comes(store, capsys):
    (rid,), reference = _crashed_run(store, batch=False)
    assert work(store, exit_when_idle=True, reclaim=False) == 0
    assert cli.main(["worker", "--exit-when-idle", "--no-reclaim"]) == 0
    assert "finished 0 run(s)" in capsys.readouterr().out
    rec = store.get(rid)
    assert rec.status == "interrupted" and f"vaeviz resume {rid}" in rec.error
    assert work(store, exit_when_idle=True) == 1
    assert store.get(rid).status == "done" and _rows(store, rid) == sorted(reference[0].rows)


def test_a_run_cancelled_before_its_worker_died_is_not_reclaimed(store):
    (rid,), _ = _crashed_run(store, batch=False)
    assert store.request_cancel(rid) == "running"  # a flag its dead worker never saw
    assert store.mark_dead_interrupted() == [rid]
    assert store.get(rid).status == "cancelled" and work(store, exit_when_idle=True) == 0


def test_heartbeats_go_on_while_the_body_is_busy(store, monkeypatch):
    monkeypatch.setattr("vaeviz.worker.HEARTBEAT_EVERY", 0.01)
    rid, old = store.create_run(_cfg(), worker_pid=os.getpid()), time.time() - 30
    with store._tx() as con:
        con.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (old, rid))
    with _heartbeats(store, [store.get(rid)]):  # e.g. a long evaluation: no flush, no progress
        _wait(lambda: store.get(rid).heartbeat > old, 60, "a heartbeat from the thread")


def test_ensure_worker_also_starts_a_worker_for_orphaned_runs(store, monkeypatch):
    (rid,), _ = _crashed_run(store, batch=False)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or _FakeProc())
    monkeypatch.setattr("vaeviz.worker._children", [])
    assert store.count("queued") == 0 and store.mark_dead_interrupted() == [rid]
    assert ensure_worker(store) == _FakeProc.pid and len(started) == 1
    store.unregister_worker(_FakeProc.pid)


class _FakeProc:
    pid = 999_999

    def poll(self):
        return None


def _kill_trials():
    """benchmarks/kill_trials.py, whose trial the slow test below runs twice."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_trials.py"
    spec = importlib.util.spec_from_file_location("kill_trials", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while it is being executed
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["solo_random", "batch_during_write"])
def test_sigkill_trial_interrupted_then_reclaimed_into_the_identical_stream(tmp_path, kind):
    trial = _kill_trials().trial_of_kind(tmp_path, kind, seed=1, steps=6000)
    assert trial.interrupted and trial.reclaimed, trial
    assert trial.streams_equal and trial.integrity == "ok", trial
    assert 0 <= trial.resumed_from <= trial.killed_at_step, trial
