"""RunStore: every run, its metrics and the job queue in one SQLite file, plus an artifact folder per run.

Layout under the home folder (`$VAEVIZ_HOME`, default `~/.vaeviz`):

    vaeviz.db                       runs, metrics and workers tables (WAL mode, busy timeout)
    runs/<id>/config.json           the run's config
    runs/<id>/checkpoint.pt         written by the trainer (resume state)
    runs/<id>/snapshots/step_*.npz  probe-set posteriors over training
    runs/<id>/error.txt             traceback of a failed run

Each thread (and each forked process) keeps its own connection, so one store can be shared
by Streamlit's threads; a connection stays open because closing the last one checkpoints the
WAL with an fsync. Every write is one small `BEGIN IMMEDIATE` transaction, so a killed process
loses at most the rows it had not yet handed over. The queue is the `runs` table itself:
`claim_next` moves the oldest queued run to `running` atomically.

Crashes: a worker heartbeats its runs at least every `HEARTBEAT_EVERY` s (`beat`). Every read of
the runs table (`get`, `list_runs`, `count`) first marks `interrupted` the running runs whose worker
is gone: its pid no longer exists on this host and it has been silent for `READ_GRACE` s, or it has
been silent for `HEARTBEAT_TIMEOUT` s anywhere. Such a run is *orphaned*, and a worker's
`claim_group(reclaim=True)` takes it back from its last checkpoint, at most `MAX_RECLAIMS` times
(`vaeviz resume` starts the count afresh); runs stopped by the user (cancel, Ctrl-C) stay as they are.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vaeviz.config import RunConfig

STATUSES = ("queued", "running", "done", "failed", "diverged", "cancelled", "interrupted")
FINISHED = ("done", "failed", "diverged", "cancelled", "interrupted")
RESUMABLE = ("interrupted", "failed", "cancelled")
HEARTBEAT_EVERY = 1.0  # seconds between a worker's heartbeats, also while it evaluates or checkpoints
READ_GRACE = 5.0  # a run whose local worker pid is gone counts as dead once silent this long
HEARTBEAT_TIMEOUT = 60.0  # seconds without a heartbeat before a run counts as dead wherever its worker is
MAX_RECLAIMS = 3  # automatic resumes of a run whose worker keeps dying
SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    objective TEXT NOT NULL,
    dataset TEXT NOT NULL,
    device TEXT,
    created REAL NOT NULL,
    queued REAL,
    started REAL,
    finished REAL,
    error TEXT,
    worker_pid INTEGER,
    worker_host TEXT,
    heartbeat REAL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    resume INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    batch TEXT,
    orphaned INTEGER NOT NULL DEFAULT 0,
    reclaims INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, queued);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    split TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, step, split, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (host, pid)
);
"""
MIGRATIONS = {  # from schema version v to v + 1
    1: ["ALTER TABLE runs ADD COLUMN batch TEXT"],
    2: ["ALTER TABLE runs ADD COLUMN orphaned INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN reclaims INTEGER NOT NULL DEFAULT 0"],
}

RECORD_FIELDS = ("id", "name", "status", "config", "device", "created", "started", "finished", "error",
                 "worker_pid", "heartbeat", "step", "total_steps", "resume", "batch", "reclaims")
RECORD_COLUMNS = ", ".join(RECORD_FIELDS)
HOST = socket.gethostname()
_inherited: list[sqlite3.Connection] = []  # connections of a parent process: never used, never closed


class RunNotFound(KeyError):
    """No run (or no snapshot) matches; the message says what was looked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"


class RunStateError(ValueError):
    """The run's status does not allow the operation (e.g. resuming a run that is done)."""


@dataclass
class RunRecord:
    """One row of the runs table, with its config parsed."""

    id: str
    name: str
    status: str
    config: RunConfig
    device: str | None
    created: float
    started: float | None
    finished: float | None
    error: str | None
    worker_pid: int | None
    heartbeat: float | None
    step: int
    total_steps: int | None
    resume: bool
    batch: str | None = None  # runs queued together share it and train as one batched model
    reclaims: int = 0  # automatic resumes after its worker died

    @property
    def objective(self) -> str:
        return self.config.objective.name

    @property
    def dataset(self) -> str:
        return self.config.data.name

    def to_dict(self) -> dict:
        """JSON-safe: the fields, objective and dataset, and the config as a nested dict."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "config"}
        out.update(objective=self.objective, dataset=self.dataset, config=self.config.to_dict())
        return out


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this machine and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust os.kill
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class StoreSink:
    """What the trainer writes through: metric rows, snapshots, progress (the heartbeat), truncation."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id

    def write(self, rows) -> None:
        self.store.add_metrics(self.run_id, rows)

    def snapshot(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        self.store.save_snapshot(self.run_id, step, arrays)

    def progress(self, step: int, total: int) -> None:
        self.store.heartbeat(self.run_id, step, total)

    def truncate(self, after_step: int) -> None:
        """On resume: forget metrics and snapshots written after the checkpoint's step."""
        self.store.truncate_metrics(self.run_id, after_step)
        self.store.drop_snapshots(self.run_id, after_step)


class RunStore:
    """Runs, metrics, artifacts and the job queue under one home folder."""

    def __init__(self, home: str | Path | None = None):
        home = home or os.environ.get("VAEVIZ_HOME") or "~/.vaeviz"
        self.home = Path(home).expanduser().resolve()
        (self.home / "runs").mkdir(parents=True, exist_ok=True)
        self.db_path = self.home / "vaeviz.db"
        self._local = threading.local()
        con = self._conn()
        con.execute("PRAGMA journal_mode=WAL")
        if con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            self._migrate()

    def _migrate(self) -> None:
        """Create the tables, or bring an older database's up to date (once, under the write lock)."""
        with self._tx() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            for v in range(version or SCHEMA_VERSION, SCHEMA_VERSION):  # a new database needs none
                for statement in MIGRATIONS[v]:
                    con.execute(statement)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def __repr__(self) -> str:
        return f"RunStore({str(self.home)!r})"

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; transactions are explicit)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if getattr(local, "con", None) is not None:
                _inherited.append(local.con)
            local.con = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None, check_same_thread=False)
            local.con.execute("PRAGMA synchronous=NORMAL")
            local.pid = os.getpid()
        return local.con

    @contextmanager
    def _tx(self):
        """One write transaction, taking the write lock up front so read-then-write is atomic."""
        con = self._conn()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[tuple]:
        return self._conn().execute(sql, args).fetchall()

    # -- runs ----------------------------------------------------------------------------------

    def create_run(self, cfg: RunConfig, name: str | None = None, *, worker_pid: int | None = None,
                   batch: str | None = None) -> str:
        """Add a run as `queued` (or, with `worker_pid`, as `running` owned by that process); returns its id."""
        now = time.time()
        obj, data = cfg.objective.name, cfg.data.name
        with self._tx() as con:
            run_id = secrets.token_hex(4)
            while con.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                run_id = secrets.token_hex(4)
            if not (name or cfg.name):
                sql = "SELECT COUNT(*) FROM runs WHERE objective = ? AND dataset = ?"
                (n,) = con.execute(sql, (obj, data)).fetchone()
                name = f"{obj}-{data}-{n + 1}"
            folder = self.artifact_dir(run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(cfg.to_json())
            status = "queued" if worker_pid is None else "running"
            con.execute(
                "INSERT INTO runs (id, name, status, config, objective, dataset, created, queued, started,"
                " worker_pid, worker_host, heartbeat, total_steps, batch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, name or cfg.name, status, cfg.to_json(), obj, data, now, now,
                 None if worker_pid is None else now, worker_pid, None if worker_pid is None else HOST,
                 None if worker_pid is None else now, cfg.train.steps, batch),
            )
        return run_id

    def _record(self, row: tuple) -> RunRecord:
        d = dict(zip(RECORD_FIELDS, row, strict=True))
        d["config"], d["resume"] = RunConfig.from_json(d["config"]), bool(d["resume"])
        return RunRecord(**d)

    def get(self, run_id: str) -> RunRecord:
        """The run with this id, or else the one run whose id starts with it or whose name equals it."""
        self._reap()
        run_id = str(run_id).strip()
        rows = self._query(f"SELECT {RECORD_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows and run_id:
            rows = self._query(
                f"SELECT {RECORD_COLUMNS} FROM runs WHERE substr(id, 1, length(?1)) = ?1 OR name = ?1 "
                "ORDER BY created DESC", (run_id,))
        if not rows:
            raise RunNotFound(f"no run '{run_id}' (see `vaeviz runs`)")
        if len(rows) > 1:
            raise RunNotFound(f"'{run_id}' is ambiguous: it matches runs {', '.join(r[0] for r in rows)}")
        return self._record(rows[0])

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """All runs (or those with one status), newest first."""
        self._reap()
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._query(f"SELECT {RECORD_COLUMNS} FROM runs {where} ORDER BY created DESC, rowid DESC", args)
        return [self._record(r) for r in rows]

    def count(self, status: str) -> int:
        self._reap()
        return self._query("SELECT COUNT(*) FROM runs WHERE status = ?", (status,))[0][0]

    def set_status(self, run_id: str, status: str, error: str | None = None, *, device: str | None = None,
                   owner: int | None = None, orphaned: bool = False) -> bool:
        """Set a run's status (and error, device). With `owner`, only while that pid still runs it.
        `orphaned` marks an interrupted run that a worker may reclaim (its worker stopped, not the user)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r} (allowed: {', '.join(STATUSES)})")
        finished = time.time() if status in FINISHED else None
        guard, args = ("", ()) if owner is None else (" AND status = 'running' AND worker_pid = ?", (owner,))
        sql = ("UPDATE runs SET status = ?, error = ?, finished = ?, device = COALESCE(?, device), orphaned = ?"
               " WHERE id = ?")
        with self._tx() as con:
            cur = con.execute(sql + guard, (status, error, finished, device, int(orphaned), run_id, *args))
        return cur.rowcount > 0

    def heartbeat(self, run_id: str, step: int, total: int | None = None) -> None:
        with self._tx() as con:
            con.execute("UPDATE runs SET heartbeat = ?, step = ?, total_steps = COALESCE(?, total_steps) WHERE id = ?",
                        (time.time(), int(step), total, run_id))

    def beat(self, worker_pid: int, run_ids=()) -> None:
        """A training process's heartbeat: its `workers` row (if it has one) and the runs it still owns."""
        now = time.time()
        with self._tx() as con:
            con.execute("UPDATE workers SET heartbeat = ? WHERE pid = ? AND host = ?", (now, worker_pid, HOST))
            con.executemany("UPDATE runs SET heartbeat = ? WHERE id = ? AND status = 'running' AND worker_pid = ?"
                            " AND worker_host = ?", [(now, rid, worker_pid, HOST) for rid in run_ids])

    # -- queue ---------------------------------------------------------------------------------

    def create_batch(self, cfgs: list[RunConfig], names: list[str | None] | None = None) -> list[str]:
        """Queue runs that a worker claims together and trains as one batched model (fresh runs only)."""
        batch = secrets.token_hex(4)
        return [self.create_run(cfg, name, batch=batch) for cfg, name in zip(cfgs, names or [None] * len(cfgs))]

    def claim_next(self, worker_pid: int) -> RunRecord | None:
        """Atomically move the oldest queued run to `running`, owned by `worker_pid`."""
        claimed = self.claim_group(worker_pid)
        return claimed[0] if claimed else None

    def claim_group(self, worker_pid: int, *, reclaim: bool = False) -> list[RunRecord]:
        """Atomically claim work for `worker_pid`: with `reclaim`, an orphaned run first (to resume from its
        last checkpoint, with the members of its batch orphaned with it); else the oldest queued run and,
        for a fresh batch member, the rest of its batch."""
        now = time.time()
        with self._tx() as con:
            ids = _orphans(con) if reclaim else []
            if ids:
                con.executemany("UPDATE runs SET resume = 1, orphaned = 0, reclaims = reclaims + 1, cancel = 0"
                                " WHERE id = ?", [(i,) for i in ids])
            else:
                ids = _next_queued(con)
            con.executemany(
                "UPDATE runs SET status = 'running', worker_pid = ?, worker_host = ?, started = ?, heartbeat = ?,"
                " finished = NULL, error = NULL WHERE id = ?", [(worker_pid, HOST, now, now, i) for i in ids])
        return [self.get(i) for i in ids]

    def reclaimable(self) -> int:
        """How many orphaned runs a reclaiming worker would take back now."""
        self._reap()
        sql = "SELECT COUNT(*) FROM runs WHERE status = 'interrupted' AND orphaned = 1 AND reclaims < ?"
        return self._query(sql, (MAX_RECLAIMS,))[0][0]

    def request_cancel(self, run_id: str) -> str:
        """Queued/interrupted -> cancelled at once; running -> flag the worker sees. Returns the status."""
        with self._tx() as con:
            row = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run '{run_id}'")
            if row[0] in ("queued", "interrupted"):
                con.execute("UPDATE runs SET status = 'cancelled', finished = ? WHERE id = ?", (time.time(), run_id))
                return "cancelled"
            if row[0] == "running":
                con.execute("UPDATE runs SET cancel = 1 WHERE id = ?", (run_id,))
            return row[0]

    def cancel_requested(self, run_id: str, owner: int | None = None) -> bool:
        """True when the run was cancelled, deleted, or taken from its worker (marked interrupted, or
        with `owner`, now running under another worker)."""
        rows = self._query("SELECT cancel, status, worker_pid, worker_host FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return True
        cancel, status, pid, host = rows[0]
        return bool(cancel) or status != "running" or (owner is not None and (pid, host) != (owner, HOST))

    def requeue(self, run_id: str, resume: bool = True, *, worker_pid: int | None = None) -> None:
        """Interrupted/failed/cancelled -> queued (or running, owned by `worker_pid`), resuming if asked."""
        now = time.time()
        status = "queued" if worker_pid is None else "running"
        with self._tx() as con:
            row = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run '{run_id}'")
            if row[0] not in RESUMABLE:
                raise RunStateError(f"run {run_id} is {row[0]}; only {', '.join(RESUMABLE)} runs can be resumed")
            con.execute(
                "UPDATE runs SET status = ?, resume = ?, cancel = 0, error = NULL, finished = NULL, queued = ?,"
                " started = ?, worker_pid = ?, worker_host = ?, heartbeat = ?, orphaned = 0, reclaims = 0 WHERE id = ?",
                (status, int(resume), now, None if worker_pid is None else now, worker_pid,
                 None if worker_pid is None else HOST, None if worker_pid is None else now, run_id))

    def mark_dead_interrupted(self, timeout: float = HEARTBEAT_TIMEOUT, grace: float = 0.0) -> list[str]:
        """Running runs whose worker is gone -> interrupted and orphaned (cancelled, if the user had asked
        for that); returns their ids. Gone: silent for `timeout` s, or its pid no longer exists on this
        host and it has been silent for `grace` s."""
        if not _dead(self._query(DEAD_SQL), timeout, grace):  # a read first: no write lock while all is well
            return []
        now = time.time()
        with self._tx() as con:
            dead = _dead(con.execute(DEAD_SQL).fetchall(), timeout, grace)
            rows = [(now, _lost_message(rid, pid, reclaims), rid) for rid, pid, reclaims in dead]
            con.executemany(LOST_SQL, rows)
        return [rid for rid, _, _ in dead]

    def _reap(self) -> None:
        """What every read does first: runs of dead workers show as interrupted (cheap while none is)."""
        self.mark_dead_interrupted(grace=READ_GRACE)

    def delete(self, run_id: str, force: bool = False) -> None:
        """Remove the run's row, metrics and artifact folder (a running run only with `force`)."""
        with self._tx() as con:
            row = con.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(f"no run '{run_id}'")
            if row[0] == "running" and not force:
                raise RunStateError(f"run {run_id} is running; cancel it first")
            con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            con.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
        shutil.rmtree(self.artifact_dir(run_id), ignore_errors=True)

    # -- workers -------------------------------------------------------------------------------

    def register_worker(self, pid: int) -> None:
        """Record (or refresh the heartbeat of) a worker process on this host."""
        now = time.time()
        with self._tx() as con:
            con.execute("INSERT INTO workers VALUES (?, ?, ?, ?) ON CONFLICT (host, pid) DO UPDATE SET heartbeat = ?",
                        (pid, HOST, now, now, now))

    def unregister_worker(self, pid: int) -> None:
        with self._tx() as con:
            con.execute("DELETE FROM workers WHERE pid = ? AND host = ?", (pid, HOST))

    def live_workers(self, timeout: float = HEARTBEAT_TIMEOUT) -> list[int]:
        """Pids of registered workers still alive; rows of dead local workers are removed."""
        rows = self._query("SELECT pid, host, heartbeat FROM workers")
        dead = [pid for pid, host, _ in rows if host == HOST and not pid_alive(pid)]
        if dead:
            with self._tx() as con:
                con.executemany("DELETE FROM workers WHERE pid = ? AND host = ?", [(p, HOST) for p in dead])
        now = time.time()
        return [pid for pid, host, beat in rows if pid not in dead and (host == HOST or now - beat < timeout)]

    # -- metrics -------------------------------------------------------------------------------

    def add_metrics(self, run_id: str, rows) -> None:
        """Store (step, split, name, value) rows in one transaction; a repeated key replaces the value."""
        data = [(run_id, int(s), str(sp), str(n), float(v)) for s, sp, n, v in rows]
        if data:
            with self._tx() as con:
                con.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?)", data)

    def metrics(self, run_id: str, split: str | None = None, names=None, since_step: int | None = None) -> pd.DataFrame:
        """Columns step, split, name, value sorted by step; `since_step` keeps rows with step > since_step."""
        sql, args = "SELECT step, split, name, value FROM metrics WHERE run_id = ?", [run_id]
        if split is not None:
            sql, args = sql + " AND split = ?", args + [split]
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            sql, args = sql + f" AND name IN ({','.join('?' * len(names))})", args + names
        if since_step is not None:
            sql, args = sql + " AND step > ?", args + [int(since_step)]
        rows = self._query(sql + " ORDER BY step, split, name", args)
        df = pd.DataFrame(rows, columns=["step", "split", "name", "value"])
        return df.astype({"step": "int64", "split": "str", "name": "str", "value": "float64"})

    def last_step(self, run_id: str) -> int | None:
        return self._query("SELECT MAX(step) FROM metrics WHERE run_id = ?", (run_id,))[0][0]

    def truncate_metrics(self, run_id: str, after_step: int) -> None:
        """Delete the run's metric rows with step > after_step."""
        with self._tx() as con:
            con.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, int(after_step)))

    def sink(self, run_id: str) -> StoreSink:
        return StoreSink(self, run_id)

    # -- artifacts -----------------------------------------------------------------------------

    def artifact_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

    def _snapshot_path(self, run_id: str, step: int) -> Path:
        return self.artifact_dir(run_id) / "snapshots" / f"step_{int(step):08d}.npz"

    def save_snapshot(self, run_id: str, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write arrays to snapshots/step_{step:08d}.npz atomically (readers never see half a file)."""
        path = self._snapshot_path(run_id, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)

    def snapshot_steps(self, run_id: str) -> list[int]:
        folder = self.artifact_dir(run_id) / "snapshots"
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.npz"))

    def load_snapshot(self, run_id: str, step: int) -> dict[str, np.ndarray]:
        path = self._snapshot_path(run_id, step)
        if not path.exists():
            have = ", ".join(map(str, self.snapshot_steps(run_id))) or "none"
            raise RunNotFound(f"run {run_id} has no snapshot at step {step} (steps: {have})")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def drop_snapshots(self, run_id: str, after_step: int) -> None:
        """Delete snapshots with step > after_step."""
        for step in self.snapshot_steps(run_id):
            if step > after_step:
                self._snapshot_path(run_id, step).unlink(missing_ok=True)


DEAD_SQL = "SELECT id, worker_pid, worker_host, heartbeat, reclaims FROM runs WHERE status = 'running'"
LOST_SQL = ("UPDATE runs SET status = CASE cancel WHEN 0 THEN 'interrupted' ELSE 'cancelled' END,"
            " orphaned = 1 - cancel, finished = ?, error = CASE cancel WHEN 0 THEN ? END WHERE id = ?")


def _dead(rows, timeout: float, grace: float) -> list[tuple[str, int | None, int]]:
    """(id, pid, reclaims) of the `DEAD_SQL` rows whose worker is gone (see `mark_dead_interrupted`)."""
    now = time.time()
    out = []
    for rid, pid, host, beat, reclaims in rows:
        silent = now - (beat or 0)
        if silent > timeout or (host == HOST and silent > grace and not pid_alive(pid)):
            out.append((rid, pid, reclaims))
    return out


def _lost_message(run_id: str, pid: int | None, reclaims: int) -> str:
    """The error of a run whose worker died: whether a worker will take it back, and how to resume it."""
    if reclaims >= MAX_RECLAIMS:
        return (f"worker {pid} stopped; its workers died {reclaims + 1} times, so no worker resumes it again by"
                f" itself; `vaeviz resume {run_id}` continues from the last checkpoint")
    return f"worker {pid} stopped; a worker resumes it from the last checkpoint (or `vaeviz resume {run_id}`)"


def _orphans(con: sqlite3.Connection) -> list[str]:
    """The oldest orphaned run still to reclaim and the members of its batch orphaned with it."""
    sql = "SELECT id, batch FROM runs WHERE status = 'interrupted' AND orphaned = 1 AND reclaims < ?"
    row = con.execute(sql + " ORDER BY queued, rowid LIMIT 1", (MAX_RECLAIMS,)).fetchone()
    if row is None or row[1] is None:
        return [] if row is None else [row[0]]
    return [r[0] for r in con.execute(sql + " AND batch = ? ORDER BY rowid", (MAX_RECLAIMS, row[1]))]


def _next_queued(con: sqlite3.Connection) -> list[str]:
    """The oldest queued run and, for a fresh batch member, the rest of its batch."""
    row = con.execute("SELECT id, batch, resume FROM runs WHERE status = 'queued' ORDER BY queued, rowid "
                      "LIMIT 1").fetchone()
    if row is None:
        return []
    if row[1] is None or row[2]:
        return [row[0]]
    return [r[0] for r in con.execute("SELECT id FROM runs WHERE status = 'queued' AND batch = ? AND "
                                      "resume = 0 ORDER BY rowid", (row[1],))]
