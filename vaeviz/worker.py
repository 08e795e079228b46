"""Worker processes: claim queued runs from the RunStore, train each, record how it ended.

`work()` is the loop behind `vaeviz worker`; `run_one()` trains one claimed run and never lets
an exception escape (a bad run ends `failed`/`diverged` and the worker goes on with the next);
`ensure_worker()` starts a detached worker when runs are queued and none is alive (the app's hook).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vaeviz.runs import RunRecord, RunStore

_children: list[subprocess.Popen] = []  # workers started by ensure_worker, reaped when they exit


@dataclass
class Outcome:
    """How one run ended: its final status, the error message and exception, the trainer's result."""

    status: str
    error: str | None = None
    exc: BaseException | None = None
    result: Any = None
    resumed_from: int | None = None


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
    trainer = sys.modules.get("vaeviz.train")
    if trainer is not None and isinstance(exc, trainer.Cancelled):
        return Outcome("interrupted" if stop() else "cancelled", exc=exc)
    if trainer is not None and isinstance(exc, trainer.Diverged):
        return Outcome("diverged", str(exc), exc)
    return _failure(store, run_id, exc)


def run_one(store: RunStore, rec: RunRecord, *, progress: Callable | None = None,
            stop: Callable[[], bool] = lambda: False) -> Outcome:
    """Train a run this process owns (status running, worker_pid = us) and record its final status."""
    sink = store.sink(rec.id)
    workdir = store.artifact_dir(rec.id)
    resume = rec.resume and (workdir / "checkpoint.pt").exists()
    if not resume:  # a fresh start: forget whatever an earlier attempt wrote
        store.truncate_metrics(rec.id, -1)
        store.drop_snapshots(rec.id, -1)
    try:
        from vaeviz.runtime import pick_device
        from vaeviz.train import train

        store.set_status(rec.id, "running", device=str(pick_device(rec.config.train.device)), owner=rec.worker_pid)
        result = train(rec.config, sink, workdir=workdir, resume=resume, progress=progress,
                       should_stop=lambda: stop() or store.cancel_requested(rec.id))
        out = Outcome("done", result=result)
    except KeyboardInterrupt:
        store.set_status(rec.id, "interrupted", "stopped by Ctrl-C", owner=rec.worker_pid)
        raise
    except Exception as exc:
        out = _classify(store, rec.id, exc, stop)
    out.resumed_from = sink.resumed_from
    return _record(store, rec, out)


def run_batch(store: RunStore, recs: list[RunRecord], *, stop: Callable[[], bool] = lambda: False) -> list[Outcome]:
    """Train claimed runs of one batch as a single batched model; each run's ending is its own.
    Runs that cannot share a batch (different shapes, RAE-gp/l2/sn) train one after another instead."""
    from vaeviz.batched import BatchedTrainer, check_batchable
    from vaeviz.config import ConfigError

    try:
        check_batchable([r.config for r in recs])
        for rec in recs:
            store.truncate_metrics(rec.id, -1)
            store.drop_snapshots(rec.id, -1)
        trainer = BatchedTrainer([r.config for r in recs], [store.sink(r.id) for r in recs],
                                 [store.artifact_dir(r.id) for r in recs],
                                 [lambda i=r.id: stop() or store.cancel_requested(i) for r in recs])
    except ConfigError:
        return [run_one(store, rec, stop=stop) for rec in recs]
    except Exception as exc:
        outs = [_failure(store, rec.id, exc) for rec in recs]
        return [_record(store, rec, out) for rec, out in zip(recs, outs)]
    device = str(trainer.loops[0].s.device)
    for rec in recs:
        store.set_status(rec.id, "running", device=device, owner=rec.worker_pid)
    try:
        results = trainer.run()
    except Exception as exc:  # a failure of the shared model ends every run of the batch
        results = [exc] * len(recs)
    outs = [Outcome("done", result=r) if not isinstance(r, Exception) else _classify(store, rec.id, r, stop)
            for rec, r in zip(recs, results)]
    return [_record(store, rec, out) for rec, out in zip(recs, outs)]


def _record(store: RunStore, rec: RunRecord, out: Outcome) -> Outcome:
    if out.result is not None:
        store.heartbeat(rec.id, out.result.steps)
    store.set_status(rec.id, out.status, out.error, device=getattr(out.result, "device", None), owner=rec.worker_pid)
    return out


def work(store: RunStore | None = None, *, max_jobs: int | None = None, exit_when_idle: bool = False,
         poll: float = 1.0, stop: Callable[[], bool] = lambda: False, log: Callable[[str], None] = print) -> int:
    """Claim and train queued runs until `max_jobs` are done, the queue is empty (`exit_when_idle`) or `stop()`."""
    store = store or RunStore()
    pid = os.getpid()
    store.register_worker(pid)
    done = 0
    try:
        while (max_jobs is None or done < max_jobs) and not stop():
            for rid in store.mark_dead_interrupted():
                log(f"run {rid} interrupted (its worker is gone)")
            recs = store.claim_group(pid)
            if not recs:
                if exit_when_idle and _quit_when_idle(store, pid):
                    break
                store.register_worker(pid)
                time.sleep(poll)
                continue
            for rec in recs:
                log(f"run {rec.id} ({rec.name}) started" + (" (resume)" if rec.resume else ""))
            outs = run_batch(store, recs, stop=stop) if len(recs) > 1 else [run_one(store, recs[0], stop=stop)]
            for rec, out in zip(recs, outs):
                log(f"run {rec.id} {out.status}" + (f": {out.error}" if out.error else ""))
            done += len(recs)
    finally:
        store.unregister_worker(pid)
    return done


def _quit_when_idle(store: RunStore, pid: int) -> bool:
    """Deregister first, then look once more, so a run queued meanwhile is never stranded."""
    store.unregister_worker(pid)
    if store.count("queued"):
        store.register_worker(pid)
        return False
    return True


def ensure_worker(store: RunStore) -> int | None:
    """Start a detached `vaeviz worker --exit-when-idle` when runs are queued and no worker is alive."""
    _children[:] = [p for p in _children if p.poll() is None]
    if not store.count("queued") or store.live_workers():
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
