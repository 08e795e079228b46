"""RunStore: CRUD, WAL, atomic claims, cancellation, metrics, snapshots, dead-worker detection, reclaims."""

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from vaeviz.config import RunConfig
from vaeviz.runs import (
    HEARTBEAT_TIMEOUT,
    MAX_RECLAIMS,
    READ_GRACE,
    SCHEMA,
    RunNotFound,
    RunStateError,
    RunStore,
    pid_alive,
)


def _cfg(*extra):
    return RunConfig().with_overrides(["data.name=digits", *extra])


@pytest.fixture
def store(vaeviz_home):
    return RunStore()


def test_home_comes_from_the_environment_and_the_db_is_in_wal_mode(store, vaeviz_home):
    assert store.home == vaeviz_home.resolve()
    assert (vaeviz_home / "vaeviz.db").exists()
    con = sqlite3.connect(vaeviz_home / "vaeviz.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert RunStore(vaeviz_home / "other").home == (vaeviz_home / "other").resolve()


def test_create_get_list(store):
    a = store.create_run(_cfg())
    b = store.create_run(_cfg("objective.name=beta_vae", "objective.beta=4"), name="mine")
    assert len(a) == 8 and int(a, 16) >= 0 and a != b
    rec = store.get(a)
    assert (rec.status, rec.name, rec.objective, rec.dataset) == ("queued", "vae-digits-1", "vae", "digits")
    assert rec.total_steps == rec.config.train.steps and rec.step == 0 and rec.resume is False
    assert RunConfig.from_json((store.artifact_dir(a) / "config.json").read_text()) == rec.config
    assert store.get(b).config.objective.beta == 4.0 and store.get(b).name == "mine"
    assert store.get(store.create_run(_cfg())).name == "vae-digits-2"
    assert [r.id for r in store.list_runs()][1:] == [b, a]  # newest first
    assert [r.id for r in store.list_runs("queued")][1:] == [b, a] and store.list_runs("done") == []
    assert store.count("queued") == 3
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"id", "name", "status", "objective", "dataset"} <= set(d)


def test_get_accepts_a_unique_prefix_or_name_and_explains_misses(store):
    a = store.create_run(_cfg(), name="alpha")
    assert store.get(a[:3]).id == a and store.get("alpha").id == a
    with pytest.raises(RunNotFound) as err:
        store.get("zzzz")
    assert str(err.value) == "no run 'zzzz' (see `vaeviz runs`)"
    store.create_run(_cfg(), name="alpha")
    with pytest.raises(RunNotFound, match="ambiguous"):
        store.get("alpha")
    with pytest.raises(KeyError):  # RunNotFound is a KeyError
        store.get("")


def _claim_all(store, pid, out):
    while (rec := store.claim_next(pid)) is not None:
        out.append(rec.id)


def test_claims_are_atomic_across_threads(store):
    ids = [store.create_run(_cfg()) for _ in range(24)]
    claimed = [[] for _ in range(4)]
    threads = [threading.Thread(target=_claim_all, args=(store, 100 + i, claimed[i])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for c in claimed for i in c]
    assert sorted(flat) == sorted(ids)  # every run claimed exactly once
    assert all(store.get(i).status == "running" for i in ids)
    owners = {i: 100 + k for k, c in enumerate(claimed) for i in c}
    assert all(store.get(i).worker_pid == owners[i] for i in ids)


def _claim_in_child(store, conn):
    ids = []
    while (rec := store.claim_next(os.getpid())) is not None:
        ids.append(rec.id)
        time.sleep(0.02)
    conn.send(ids)


def test_claims_are_atomic_across_processes(store):
    ids = [store.create_run(_cfg()) for _ in range(6)]
    store.list_runs()  # the parent's connection is open when the children fork
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe() for _ in range(2)]
    procs = [ctx.Process(target=_claim_in_child, args=(store, child)) for _, child in pipes]
    for p in procs:
        p.start()
    outs = [parent.recv() for parent, _ in pipes]
    for p in procs:
        p.join(30)
    assert sorted(outs[0] + outs[1]) == sorted(ids)
    assert {store.get(i).worker_pid for i in outs[0]} == {procs[0].pid}
    assert store.claim_next(1) is None and len(store.list_runs("running")) == 6


def test_claim_takes_the_oldest_queued_run_first(store):
    first, second = store.create_run(_cfg()), store.create_run(_cfg())
    rec = store.claim_next(42)
    assert rec.id == first and rec.status == "running" and rec.worker_pid == 42
    assert rec.started is not None and rec.heartbeat is not None
    assert store.claim_next(42).id == second


def test_cancel_queued_at_once_and_running_by_flag(store):
    queued, running, done = (store.create_run(_cfg()) for _ in range(3))
    assert store.request_cancel(queued) == "cancelled"
    assert store.get(queued).status == "cancelled" and store.get(queued).finished is not None
    store.claim_next(os.getpid())  # takes `running`
    assert store.get(running).status == "running" and not store.cancel_requested(running)
    assert store.request_cancel(running) == "running" and store.cancel_requested(running)
    store.claim_next(os.getpid())
    store.set_status(done, "done")
    assert store.request_cancel(done) == "done" and store.get(done).status == "done"
    with pytest.raises(RunNotFound):
        store.request_cancel("nope")


def test_cancel_requested_when_the_run_is_no_longer_ours(store):
    rid = store.create_run(_cfg(), worker_pid=os.getpid())
    assert store.get(rid).status == "running" and not store.cancel_requested(rid)
    store.set_status(rid, "interrupted")
    assert store.cancel_requested(rid)
    assert store.cancel_requested("deleted-or-unknown")


def test_set_status_with_owner_only_while_owned(store):
    rid = store.create_run(_cfg(), worker_pid=7)
    assert not store.set_status(rid, "done", owner=8)
    assert store.set_status(rid, "diverged", "diverged at step 3: loss = nan", device="cpu", owner=7)
    rec = store.get(rid)
    assert (rec.status, rec.error, rec.device) == ("diverged", "diverged at step 3: loss = nan", "cpu")
    assert not store.set_status(rid, "done", owner=7)  # no longer running
    with pytest.raises(ValueError, match="unknown status"):
        store.set_status(rid, "exploded")


def test_heartbeat_records_step_and_total(store):
    rid = store.create_run(_cfg("train.steps=50"), worker_pid=1)
    before = store.get(rid).heartbeat
    time.sleep(0.01)
    store.heartbeat(rid, 17, 50)
    rec = store.get(rid)
    assert rec.step == 17 and rec.total_steps == 50 and rec.heartbeat > before


def test_metrics_round_trip_filters_and_truncate(store):
    rid = store.create_run(_cfg())
    rows = [(s, "train", n, float(s * 10 + k)) for s in range(1, 6) for k, n in enumerate(["loss", "rate"])]
    rows += [(0, "eval", "elbo", -5.0), (5, "eval", "elbo", -2.5)]
    store.add_metrics(rid, rows)
    df = store.metrics(rid)
    assert list(df.columns) == ["step", "split", "name", "value"] and len(df) == len(rows)
    assert df.step.is_monotonic_increasing and df.step.dtype == np.int64 and df.value.dtype == np.float64
    assert sorted(map(tuple, df.itertuples(index=False))) == sorted(rows)
    loss = store.metrics(rid, split="train", names="loss")
    assert loss.step.tolist() == [1, 2, 3, 4, 5] and loss.value.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert store.metrics(rid, names=["rate", "elbo"], since_step=4).values.tolist() == [
        [5, "eval", "elbo", -2.5], [5, "train", "rate", 51.0]]
    assert store.last_step(rid) == 5
    store.truncate_metrics(rid, 2)
    assert store.last_step(rid) == 2 and store.metrics(rid).step.max() == 2
    assert store.last_step("other") is None and store.metrics("other").empty


def test_a_repeated_metric_key_keeps_one_row_with_the_new_value(store):
    rid = store.create_run(_cfg())
    store.add_metrics(rid, [(3, "train", "loss", 1.0), (3, "train", "loss", np.float32(2.0))])
    assert store.metrics(rid).values.tolist() == [[3, "train", "loss", 2.0]]


def test_nan_and_inf_survive_the_round_trip(store):
    rid = store.create_run(_cfg())
    store.add_metrics(rid, [(1, "train", "a", float("nan")), (1, "train", "b", float("inf"))])
    values = store.metrics(rid).value.tolist()
    assert np.isnan(values[0]) and values[1] == np.inf


def test_snapshot_round_trip_is_exact(store):
    rid = store.create_run(_cfg())
    rng = np.random.default_rng(0)
    arrays = {"mu": rng.normal(size=(50, 2)).astype(np.float32), "logvar": rng.normal(size=(50, 2)),
              "labels": rng.integers(0, 10, 50)}
    store.save_snapshot(rid, 1200, arrays)
    store.save_snapshot(rid, 0, arrays)
    assert store.snapshot_steps(rid) == [0, 1200]
    assert (store.artifact_dir(rid) / "snapshots" / "step_00001200.npz").exists()
    back = store.load_snapshot(rid, 1200)
    assert set(back) == set(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype and np.array_equal(back[k], arrays[k])
    with pytest.raises(RunNotFound, match="no snapshot at step 7"):
        store.load_snapshot(rid, 7)
    store.drop_snapshots(rid, 100)
    assert store.snapshot_steps(rid) == [0]


def test_sink_writes_heartbeats_and_truncates_on_resume(store):
    rid = store.create_run(_cfg(), worker_pid=os.getpid())
    sink = store.sink(rid)
    sink.write([(s, "train", "loss", 1.0 / s) for s in range(1, 11)])
    sink.snapshot(5, {"mu": np.zeros((3, 2))})
    sink.snapshot(10, {"mu": np.ones((3, 2))})
    sink.progress(10, 100)
    assert store.get(rid).step == 10 and store.last_step(rid) == 10
    sink.truncate(5)
    assert store.last_step(rid) == 5 and store.snapshot_steps(rid) == [5]


def test_delete_removes_row_metrics_and_folder(store):
    rid = store.create_run(_cfg())
    store.add_metrics(rid, [(1, "train", "loss", 1.0)])
    store.save_snapshot(rid, 1, {"a": np.zeros(2)})
    store.delete(rid)
    assert not store.artifact_dir(rid).exists() and store.metrics(rid).empty
    with pytest.raises(RunNotFound):
        store.get(rid)
    with pytest.raises(RunNotFound):
        store.delete(rid)
    running = store.create_run(_cfg(), worker_pid=os.getpid())
    with pytest.raises(RunStateError, match="cancel it first"):
        store.delete(running)
    store.delete(running, force=True)
    assert store.list_runs() == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_of_dead_or_silent_workers_become_interrupted(store):
    dead = store.create_run(_cfg(), worker_pid=_dead_pid())
    alive = store.create_run(_cfg(), worker_pid=os.getpid())
    silent = store.create_run(_cfg(), worker_pid=os.getpid())
    queued = store.create_run(_cfg())
    with store._tx() as con:
        con.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (time.time() - 3600, silent))
    assert sorted(store.mark_dead_interrupted()) == sorted([dead, silent])
    assert [store.get(r).status for r in (dead, alive, silent, queued)] == [
        "interrupted", "running", "interrupted", "queued"]
    assert f"vaeviz resume {dead}" in store.get(dead).error
    assert store.mark_dead_interrupted() == []


def test_requeue_only_from_resumable_states(store):
    rid = store.create_run(_cfg(), worker_pid=1)
    with pytest.raises(RunStateError, match="is running"):
        store.requeue(rid)
    store.set_status(rid, "interrupted", "worker died")
    store.requeue(rid)
    rec = store.get(rid)
    assert (rec.status, rec.resume, rec.error, rec.finished) == ("queued", True, None, None)
    assert store.claim_next(5).id == rid
    store.request_cancel(rid)
    store.set_status(rid, "cancelled")
    store.requeue(rid, resume=False, worker_pid=os.getpid())
    rec = store.get(rid)
    assert (rec.status, rec.resume, rec.worker_pid) == ("running", False, os.getpid())
    assert not store.cancel_requested(rid)  # the old cancel flag is cleared
    store.set_status(rid, "done")
    with pytest.raises(RunStateError, match="only interrupted, failed, cancelled"):
        store.requeue(rid)


def test_worker_registry_forgets_dead_workers(store):
    store.register_worker(os.getpid())
    store.register_worker(_dead_pid())
    assert store.live_workers() == [os.getpid()]
    store.unregister_worker(os.getpid())
    assert store.live_workers() == []


def test_pid_alive():
    assert pid_alive(os.getpid()) and not pid_alive(_dead_pid()) and not pid_alive(None)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # wait for the exit without reaping it
    assert not pid_alive(zombie.pid)
    zombie.wait()


def _set(store, run_id, **columns):
    """Set columns of a run's row directly (a worker's state that tests cannot wait for)."""
    with store._tx() as con:
        for column, value in columns.items():
            con.execute(f"UPDATE runs SET {column} = ? WHERE id = ?", (value, run_id))


def test_a_dead_workers_run_shows_interrupted_wherever_it_is_listed(store):
    readers = {"get": lambda rid: store.get(rid).status,
               "list_runs": lambda rid: {r.id: r.status for r in store.list_runs()}[rid],
               "count": lambda rid: "interrupted" if store.count("running") == 0 else "running"}
    for read in readers.values():
        rid = store.create_run(_cfg(), worker_pid=_dead_pid())
        assert read(rid) == "running"  # a fresh heartbeat: not yet taken for dead
        _set(store, rid, heartbeat=time.time() - READ_GRACE - 1)
        assert read(rid) == "interrupted"
        rec = store.get(rid)
        assert rec.finished is not None and "a worker resumes it" in rec.error and f"vaeviz resume {rid}" in rec.error
    alive = store.create_run(_cfg(), worker_pid=os.getpid())
    _set(store, alive, heartbeat=time.time() - READ_GRACE - 1)
    assert store.get(alive).status == "running"  # its pid lives: a slow heartbeat alone is not death
    assert store.reclaimable() == len(readers)


def test_a_run_on_another_host_is_dead_only_after_the_heartbeat_timeout(store):
    quiet, silent = (store.create_run(_cfg(), worker_pid=_dead_pid()) for _ in range(2))
    _set(store, quiet, worker_host="elsewhere", heartbeat=time.time() - HEARTBEAT_TIMEOUT / 2)
    _set(store, silent, worker_host="elsewhere", heartbeat=time.time() - HEARTBEAT_TIMEOUT - 1)
    assert [store.get(r).status for r in (quiet, silent)] == ["running", "interrupted"]


def test_beat_refreshes_only_the_runs_the_worker_still_owns(store):
    pid, old = os.getpid(), time.time() - 30
    mine, elsewhere = store.create_run(_cfg(), worker_pid=pid), store.create_run(_cfg(), worker_pid=pid)
    _set(store, mine, heartbeat=old)
    _set(store, elsewhere, heartbeat=old, worker_host="elsewhere")
    store.register_worker(pid)
    store.beat(pid, [mine, elsewhere])
    assert store.get(mine).heartbeat > old and store.get(elsewhere).heartbeat == old
    store.beat(4242, [])  # a process with no workers row (a foreground `vaeviz train`) gets none
    assert store.live_workers() == [pid]


def test_only_runs_orphaned_by_their_worker_are_reclaimed(store):
    crashed = store.create_run(_cfg(), worker_pid=_dead_pid())
    ctrl_c = store.create_run(_cfg(), worker_pid=os.getpid())
    store.set_status(ctrl_c, "interrupted", "stopped by Ctrl-C")
    cancelled = store.create_run(_cfg())
    store.request_cancel(cancelled)
    stopped = store.create_run(_cfg(), worker_pid=os.getpid())
    store.set_status(stopped, "interrupted", orphaned=True)  # its worker was told to stop (SIGTERM)
    queued = store.create_run(_cfg())
    assert store.mark_dead_interrupted() == [crashed]
    assert [r.id for r in store.claim_group(1, reclaim=False)] == [queued]  # the opt-out leaves orphans alone
    claimed = [store.claim_group(5, reclaim=True) for _ in range(3)]
    assert [[r.id for r in c] for c in claimed] == [[crashed], [stopped], []]
    assert all(c[0].resume and c[0].reclaims == 1 and c[0].status == "running" for c in claimed[:2])
    assert [store.get(r).status for r in (ctrl_c, cancelled)] == ["interrupted", "cancelled"]


def test_a_batch_orphaned_together_is_reclaimed_together(store):
    batch = store.create_batch([_cfg(), _cfg("train.seed=1")])
    lone = store.create_run(_cfg())
    dead = _dead_pid()
    assert [r.id for r in store.claim_group(dead)] == batch and [r.id for r in store.claim_group(dead)] == [lone]
    assert sorted(store.mark_dead_interrupted()) == sorted([*batch, lone])
    assert [r.id for r in store.claim_group(9, reclaim=True)] == batch
    assert [r.id for r in store.claim_group(9, reclaim=True)] == [lone]


def _reclaim_all(store, pid, out):
    while recs := store.claim_group(pid, reclaim=True):
        out.extend(r.id for r in recs)


def test_reclaims_are_atomic_across_threads(store):
    dead = _dead_pid()
    ids = [store.create_run(_cfg(), worker_pid=dead) for _ in range(16)]
    assert len(store.mark_dead_interrupted()) == 16
    claimed = [[] for _ in range(4)]
    threads = [threading.Thread(target=_reclaim_all, args=(store, 100 + i, claimed[i])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i for c in claimed for i in c) == sorted(ids)  # every orphan taken back exactly once


def test_a_run_whose_workers_keep_dying_is_reclaimed_at_most_max_reclaims_times(store):
    rid = store.create_run(_cfg(), worker_pid=_dead_pid())
    for attempt in range(1, MAX_RECLAIMS + 1):
        assert store.mark_dead_interrupted() == [rid]
        (rec,) = store.claim_group(_dead_pid(), reclaim=True)  # ... and this worker dies too
        assert (rec.id, rec.resume, rec.reclaims) == (rid, True, attempt)
    assert store.mark_dead_interrupted() == [rid]
    assert store.claim_group(7, reclaim=True) == [] and store.reclaimable() == 0
    rec = store.get(rid)
    assert rec.status == "interrupted" and f"died {MAX_RECLAIMS + 1} times" in rec.error
    assert f"vaeviz resume {rid}" in rec.error
    store.requeue(rid)  # the user's resume starts the count afresh
    assert (store.get(rid).status, store.get(rid).reclaims) == ("queued", 0)


def test_a_version_2_database_gains_the_reclaim_columns(tmp_path):
    home = tmp_path / "old"
    home.mkdir()
    old = SCHEMA.replace(",\n    orphaned INTEGER NOT NULL DEFAULT 0,\n    reclaims INTEGER NOT NULL DEFAULT 0", "")
    assert "reclaims" not in old
    con = sqlite3.connect(home / "vaeviz.db")
    con.executescript(old)
    con.execute("INSERT INTO runs (id, name, status, config, objective, dataset, created) VALUES (?,?,?,?,?,?,?)",
                ("abcd1234", "old", "done", _cfg().to_json(), "vae", "digits", time.time()))
    con.execute("PRAGMA user_version=2")
    con.commit()
    con.close()
    store = RunStore(home)
    assert store.get("abcd1234").reclaims == 0 and store.reclaimable() == 0
    assert store.get(store.create_run(_cfg())).status == "queued"
