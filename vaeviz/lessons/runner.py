"""Running a lesson: find the runs it can reuse, queue the others as batches, train them here or by the worker.

A run is reused when the store holds one of exactly the same config (names aside) that is finished
(`done`, or `diverged`: the same config would diverge again) or on its way there (`queued`, `running`,
`interrupted`, which a worker resumes); a `failed` or `cancelled` run is trained again. The missing runs
are grouped by what a batch must share (`vaeviz.stacking.shared_values`: data, network, schedule) and each
group is queued as one batch, which one worker trains as one batched model.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass

from vaeviz.config import RunConfig
from vaeviz.lessons.lesson import Lesson, LessonRuns, Variation
from vaeviz.preflight import preflight
from vaeviz.runs import RunRecord, RunStore
from vaeviz.stacking import shared_values

REUSABLE = ("done", "diverged", "queued", "running", "interrupted")
ACTIVE = ("queued", "running", "interrupted")


def identity(cfg: RunConfig) -> str:
    """The config as canonical JSON without its name: two runs of equal identity train the same model."""
    d = cfg.to_dict()
    d.pop("name")
    return json.dumps(d, sort_keys=True)


def reusable(store: RunStore, cfgs: dict[str, RunConfig]) -> dict[str, RunRecord | None]:
    """{role: the newest reusable run of that config, finished ones first}, None where there is none."""
    order = {status: i for i, status in enumerate(REUSABLE)}
    by_identity: dict[str, RunRecord] = {}
    for rec in store.list_runs():  # newest first
        if rec.status not in order:
            continue
        key = identity(rec.config)
        best = by_identity.get(key)
        if best is None or order[rec.status] < order[best.status]:
            by_identity[key] = rec
    return {role: by_identity.get(identity(cfg)) for role, cfg in cfgs.items()}


def lesson_runs(store: RunStore, lesson: Lesson, full: bool = False, variation: Variation | None = None) -> LessonRuns:
    """The lesson's runs as they stand in the store."""
    return LessonRuns(store, reusable(store, lesson.runs_for(full, variation)))


def run_name(lesson: Lesson, role: str, variation: Variation | None) -> str:
    return f"{lesson.name} · {role}" + (f" · {variation.label}" if variation else "")


def launch(store: RunStore, lesson: Lesson, full: bool = False, variation: Variation | None = None,
           worker_pid: int | None = None) -> list[str]:
    """Queue the runs the lesson cannot reuse, one batch per group that shares data and network; returns
    their ids. Every config passes `preflight` before any run is created. With `worker_pid`, the runs are
    created as that process's (it trains them, see `train_here`) instead of queued for the worker."""
    cfgs = lesson.runs_for(full, variation)
    have = reusable(store, cfgs)
    missing = {role: cfg for role, cfg in cfgs.items() if have[role] is None}
    for cfg in missing.values():
        preflight(cfg)
    groups: dict[tuple, list[str]] = {}
    for role, cfg in missing.items():
        groups.setdefault(shared_values(cfg), []).append(role)
    ids = []
    for roles in groups.values():
        batch = secrets.token_hex(4)
        ids += [store.create_run(missing[r], run_name(lesson, r, variation), worker_pid=worker_pid, batch=batch)
                for r in roles]
    return ids


@dataclass
class Trained:
    new: int  # runs trained now
    reused: int  # runs found in the store
    seconds: float  # wall time of the training done now


def train_here(store: RunStore, lesson: Lesson, full: bool = False, variation: Variation | None = None,
               progress=None) -> Trained:
    """Train what the lesson needs in this process, batch by batch, and wait for reused runs still in flight."""
    from vaeviz.worker import run_together

    total = len(lesson.runs_for(full, variation))
    start = time.monotonic()
    ids = launch(store, lesson, full, variation, worker_pid=os.getpid())
    batches: dict[str, list[RunRecord]] = {}
    for run_id in ids:
        rec = store.get(run_id)
        batches.setdefault(rec.batch, []).append(rec)
    for recs in batches.values():
        run_together(store, recs, progress=progress)
    _wait_for_active(store, lesson, full, variation)
    return Trained(len(ids), total - len(ids), time.monotonic() - start)


def _wait_for_active(store: RunStore, lesson: Lesson, full: bool, variation: Variation | None,
                     poll: float = 1.0) -> None:
    """Reused runs another worker is still training: wait for them to end."""
    from vaeviz.worker import ensure_worker

    def active() -> bool:
        return any(r is not None and r.status in ACTIVE
                   for r in lesson_runs(store, lesson, full, variation).records.values())

    while active():
        store.mark_dead_interrupted()
        if store.count("queued") or store.reclaimable():
            ensure_worker(store)
        time.sleep(poll)
