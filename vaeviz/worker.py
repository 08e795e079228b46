"""Worker processes: claim queued runs from the RunStore, train each, record how it ended.

`work()` is the loop behind `vaeviz worker`; `run_together()` trains claimed runs and never lets
an exception escape (a bad run ends `failed`/`diverged` and the worker goes on with the next);
`ensure_worker()` starts a detached worker when runs are queued or orphaned and none is alive (the
app's hook). While a run trains, a thread heartbeats it every `HEARTBEAT_EVERY` s, evaluations and
checkpoints included, so readers can tell a dead worker from a busy one. Unless told not to
(`reclaim=False`, `vaeviz worker --no-reclaim`), a worker first takes back runs orphaned by a dead or
stopped worker and resumes them from their last checkpoint (a batch orphaned together as a batch).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vaeviz.control import Cancelled, Diverged
from vaeviz.runs import HEARTBEAT_EVERY, RunRecord, RunStore

_children: list[subprocess.Popen] = []  # workers started by ensure_worker, reaped when they exit


@dataclass
class Outcome:
    """How one run ended: its final status, the error message and exception, the trainer's result."""

    status: str
    error: str | None = None
    exc: BaseException | None = None
    result: Any = None
    resumed_from: int | None = None
    orphaned: bool = False  # interrupted because its worker was stopping: another worker may resume it


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types whose message is for the user as is (bad config, bad data, unknown run)."""
    from vaeviz.config import ConfigError
    from vaeviz.runs import RunNotFound, RunStateError

    errors: list[type[Exception]] = [ConfigError, RunNotFound, RunStateError]
    try:
        from vaeviz.data import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def _failure(store: RunStore, run_id: str, exc: Exception) -> Outcome:
    """A failed run: the traceback goes to error.txt, the message to the store."""
    path = store.artifact_dir(run_id) / "error.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if isinstance(exc, user_errors()):
        return Outcome("failed", str(exc), exc)
    return Outcome("failed", f"{type(exc).__name__}: {exc} (traceback in {path})", exc)


def _classify(store: RunStore, run_id: str, exc: Exception, stop: Callable[[], bool]) -> Outcome:
    """Cancelled -> cancelled (interrupted when this worker is stopping), Diverged -> diverged, else failed."""
    if isinstance(exc, Cancelled):
        return Outcome("interrupted", exc=exc, orphaned=True) if stop() else Outcome("cancelled", exc=exc)
    if isinstance(exc, Diverged):
        return Outcome("diverged", str(exc), exc)
    return _failure(store, run_id, exc)


@contextmanager
def _heartbeats(store: RunStore, recs: list[RunRecord]) -> Iterator[None]:
    """Heartbeat the runs every `HEARTBEAT_EVERY` s from a thread while the body trains them."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_EVERY):
            try:
                store.beat(recs[0].worker_pid, [r.id for r in recs])
            except sqlite3.Error:  # e.g. the database stayed locked: the next beat tries again
                pass

    thread = threading.Thread(target=beat, name="vaeviz-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _should_stop(store: RunStore, rec: RunRecord, stop: Callable[[], bool]) -> Callable[[], bool]:
    """The trainer's stop check: this worker stops, or the run is cancelled or no longer ours."""
    return lambda: stop() or store.cancel_requested(rec.id, owner=rec.worker_pid)


def _fresh_start(store: RunStore, rec: RunRecord) -> None:
    """Forget whatever an earlier attempt of the run wrote: metrics, snapshots, resume states."""
    store.truncate_metrics(rec.id, -1)
    store.drop_snapshots(rec.id, -1)
    from vaeviz.checkpoint import discard_resume_state  # torch: imported only once a run trains here

    discard_resume_state(store.artifact_dir(rec.id))


def run_one(store: RunStore, rec: RunRecord, *, progress: Callable | None = None,
            stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Train one run this process owns (status running, worker_pid = us) and record its final status."""
    return run_together(store, [rec], progress=progress, stop=stop)[0]


def run_together(store: RunStore, recs: list[RunRecord], *, progress: Callable | None = None,
                 stop: Callable[[], bool] = lambda: False) -> list[Outcome]:
    """Train claimed runs together with one `vaeviz.train.Trainer` (a solo run is a batch of one); each
    run's ending is its own. Runs that all resume (a reclaimed batch) continue from the latest step all
    of them saved. Runs that cannot share a batch (different shapes, RAE-gp/l2/sn) train one after another."""
    from vaeviz.config import ConfigError
    from vaeviz.train import Trainer

    resume = all(r.resume for r in recs)
    try:
        with _heartbeats(store, recs):
            if not resume:
                for rec in recs:
                    _fresh_start(store, rec)
            trainer = Trainer([r.config for r in recs], [store.sink(r.id) for r in recs],
                              [store.artifact_dir(r.id) for r in recs],
                              [_should_stop(store, r, stop) for r in recs], resume=resume, progress=progress)
    except ConfigError as exc:
        if len(recs) > 1:  # not batchable: one after another
            return [out for rec in recs for out in run_together(store, [rec], stop=stop)]
        return [_record(store, recs[0], _failure(store, recs[0].id, exc))]
    except Exception as exc:
        return [_record(store, rec, _failure(store, rec.id, exc)) for rec in recs]
    return _train(store, recs, trainer, stop)


def _train(store: RunStore, recs: list[RunRecord], trainer, stop: Callable[[], bool]) -> list[Outcome]:
    """Run a built Trainer and record how each of its runs ended."""
    for rec, member in zip(recs, trainer.members):
        store.set_status(rec.id, "running", device=str(member.s.device), owner=rec.worker_pid)
    try:
        with _heartbeats(store, recs):
            results = trainer.run()
    except KeyboardInterrupt:
        for rec in recs:
            store.set_status(rec.id, "interrupted", "stopped by Ctrl-C", owner=rec.worker_pid)
        raise
    except Exception as exc:  # a failure of the shared model ends every run of the batch
        results = [exc] * len(recs)
    outs = [Outcome("done", result=r) if not isinstance(r, Exception) else _classify(store, rec.id, r, stop)
            for rec, r in zip(recs, results)]
    for out in outs:
        out.resumed_from = trainer.start or None
    return [_record(store, rec, out) for rec, out in zip(recs, outs)]


def _record(store: RunStore, rec: RunRecord, out: Outcome) -> Outcome:
    if out.result is not None:
        store.heartbeat(rec.id, out.result.steps)
    store.set_status(rec.id, out.status, out.error, device=getattr(out.result, "device", None), owner=rec.worker_pid,
                     orphaned=out.orphaned)
    return out


def work(store: RunStore | None = None, *, max_jobs: int | None = None, exit_when_idle: bool = False,
         poll: float = 1.0, stop: Callable[[], bool] = lambda: False, log: Callable[[str], None] = print,
         reclaim: bool = True) -> int:
    """Claim and train runs (with `reclaim`, orphaned ones first, else queued ones) until `max_jobs` are
    done, there is nothing to claim (`exit_when_idle`) or `stop()`."""
    store = store or RunStore()
    pid = os.getpid()
    store.register_worker(pid)
    done = 0
    try:
        while (max_jobs is None or done < max_jobs) and not stop():
            for rid in store.mark_dead_interrupted():
                log(f"run {rid} interrupted (its worker is gone)")
            recs = store.claim_group(pid, reclaim=reclaim)
            if not recs:
                if exit_when_idle and _quit_when_idle(store, pid, reclaim):
                    break
                store.register_worker(pid)
                time.sleep(poll)
                continue
            _train_claimed(store, recs, stop, log)
            done += len(recs)
    finally:
        store.unregister_worker(pid)
    return done


def _train_claimed(store: RunStore, recs: list[RunRecord], stop: Callable[[], bool], log: Callable[[str], None]):
    """Train what `claim_group` gave (a batch as one model), logging each run's start and end."""
    for rec in recs:
        how = f" (resume, reclaimed {rec.reclaims}×)" if rec.reclaims else " (resume)" if rec.resume else ""
        log(f"run {rec.id} ({rec.name}) started{how}")
    outs = run_together(store, recs, stop=stop)
    for rec, out in zip(recs, outs):
        resumed = f" (resumed from step {out.resumed_from})" if out.resumed_from is not None else ""
        log(f"run {rec.id} {out.status}{resumed}" + (f": {out.error}" if out.error else ""))


def _quit_when_idle(store: RunStore, pid: int, reclaim: bool) -> bool:
    """Deregister first, then look once more, so a run queued (or orphaned) meanwhile is never stranded."""
    store.unregister_worker(pid)
    if store.count("queued") or (reclaim and store.reclaimable()):
        store.register_worker(pid)
        return False
    return True


def ensure_worker(store: RunStore) -> int | None:
    """Start a detached `vaeviz worker --exit-when-idle` when runs are queued or orphaned and no worker is alive."""
    _children[:] = [p for p in _children if p.poll() is None]
    if not (store.count("queued") or store.reclaimable()) or store.live_workers():
        return None
    env = {**os.environ, "VAEVIZ_HOME": str(store.home)}
    with open(store.home / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vaeviz", "worker", "--exit-when-idle"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    store.register_worker(proc.pid)
    _children.append(proc)
    return proc.pid
