"""SIGKILL trials (issue 12): kill `python -m vaeviz worker` at random moments and check what a crash costs.

Each trial queues a small digits run (solo, or a batch of two trained as one model) in a fresh
$VAEVIZ_HOME, starts `python -m vaeviz worker --exit-when-idle`, SIGKILLs it at a moment its kind picks,
and then checks:

- every run shows `interrupted` to a reader (`RunStore.get`, as `vaeviz runs`/`show` and the app read it)
  within HEARTBEAT_TIMEOUT: `to_interrupted_s`, from the kill;
- a second `vaeviz worker --exit-when-idle` reclaims the runs by itself and finishes them;
- each run's metric stream equals the stream of the same runs trained uninterrupted in this process
  (no workdir, so no checkpoint at all), row for row and value for value, and so do its posterior snapshots;
- `PRAGMA integrity_check` says ok;
- the training lost is at most MAX_LOST_S: `lost_s` is the wall time from the save of the resume state the
  reclaim started from (its file's mtime; the step-0 snapshot's when none was saved yet) to the kill, and
  `lost_steps_s` the steps retrained after the resume (last step flushed before the kill minus the resume
  step) at the uninterrupted run's steps/s.

Kinds: `random` (a uniform moment of training), `after_checkpoint` (as soon as a resume state's mtime
changes), `during_write` (as soon as a checkpoint.tmp appears, so the kill lands inside the save or its
renames); `solo_*` one run, `batch_*` a batch of two (VAE and β-VAE, one stacked model). `killed_mid_write`
counts the kills that left a checkpoint.tmp behind. The runs checkpoint every 10,000 steps and every
CHECKPOINT_SECONDS (2 s rather than the default 30, so time-based checkpoints happen within short runs).

Usage: python benchmarks/kill_trials.py [--trials 20] [--seed 0] [--steps 16000]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


from vaeviz.checkpoint import resume_states  # noqa: E402
from vaeviz.config import RunConfig  # noqa: E402
from vaeviz.member import MemorySink  # noqa: E402
from vaeviz.runs import HEARTBEAT_TIMEOUT, RunStore  # noqa: E402
from vaeviz.train import train, train_batched  # noqa: E402

CHECKPOINT_SECONDS = 2.0
CHECKPOINT_EVERY = 10_000
MAX_LOST_S = 30.0
BASE = ["data.name=digits", "model.latent_dim=2", "model.hidden=64,64", "train.batch_size=32",
        "train.eval_every=1000", "train.probe_size=200", "train.threads=1",
        f"train.checkpoint_every={CHECKPOINT_EVERY}", f"train.checkpoint_seconds={CHECKPOINT_SECONDS}"]
MEMBERS = ([], ["objective.name=beta_vae", "objective.beta=4", "train.seed=1"])
PLAN = {"solo_random": 6, "solo_after_checkpoint": 4, "solo_during_write": 4, "batch_random": 3,
        "batch_during_write": 3}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
_references: dict[tuple, tuple[list[MemorySink], float]] = {}


@dataclass
class Trial:
    """What one kill cost and whether everything held."""

    kind: str
    killed_at_step: int = -1
    resumed_from: int = -1
    killed_mid_write: bool = False
    finished_first: bool = False  # the runs ended before the kill came (the trial is then redone)
    interrupted: bool = False
    to_interrupted_s: float = math.inf
    reclaimed: bool = False
    streams_equal: bool = False
    integrity: str = ""
    lost_s: float = math.inf
    lost_steps_s: float = math.inf

    @property
    def ok(self) -> bool:
        return (self.interrupted and self.to_interrupted_s <= HEARTBEAT_TIMEOUT and self.reclaimed
                and self.streams_equal and self.integrity == "ok" and max(self.lost_s, self.lost_steps_s) <= MAX_LOST_S)


def configs(kind: str, steps: int) -> list[RunConfig]:
    members = MEMBERS if kind.startswith("batch") else MEMBERS[:1]
    return [RunConfig().with_overrides([*BASE, f"train.steps={steps}", *m]) for m in members]


def reference(cfgs: list[RunConfig]) -> tuple[list[MemorySink], float]:
    """The runs' uninterrupted streams, trained here without a workdir (no checkpoint), and their steps/s."""
    key = tuple(c.to_json() for c in cfgs)
    if key not in _references:
        sinks = [MemorySink() for _ in cfgs]
        results = [train(cfgs[0], sinks[0])] if len(cfgs) == 1 else train_batched(cfgs, sinks)
        _references[key] = sinks, cfgs[0].train.steps / results[0].seconds
    return _references[key]


def _wait(cond, timeout: float, pause: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


def _worker(home: Path) -> subprocess.Popen:
    log = open(home / "worker-killed.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "vaeviz", "worker", "--exit-when-idle", "--poll", "0.1"],
                            cwd=REPO, env={**ENV, "VAEVIZ_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT)


def _spin(cond, timeout: float) -> None:
    """Busy-wait for `cond` (no sleep: a checkpoint write lasts about a millisecond), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        pass


def _mtime(path: Path) -> int:
    """A file's mtime in ns, 0 while it does not exist (checkpoint.pt is briefly absent while it is replaced)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _mtimes(workdirs: list[Path]) -> list[int]:
    return [_mtime(wd / "checkpoint.pt") for wd in workdirs]


def kill_moment(kind: str, workdirs: list[Path], rng: random.Random, train_s: float) -> None:
    """Return at the moment to kill: a random one, or the first save (or write) after a random delay."""
    moment = kind.split("_", 1)[1]
    time.sleep(rng.uniform(0.0, (0.8 if moment == "random" else 0.6) * train_s))
    if moment == "after_checkpoint":
        before = _mtimes(workdirs)
        _spin(lambda: _mtimes(workdirs) != before, 3 * CHECKPOINT_SECONDS)
    elif moment == "during_write":
        tmps = [str(wd / "checkpoint.tmp") for wd in workdirs]
        _spin(lambda: any(map(os.path.exists, tmps)), 3 * CHECKPOINT_SECONDS)


def _saves(workdirs: list[Path]) -> dict[int, float]:
    """Steps every run has a resume state for, with the earliest save time (file mtime) among the runs;
    step 0 (a fresh start) at the step-0 snapshot's write, just before the first step."""
    per_run = [{step: path.stat().st_mtime for step, path in resume_states(wd).items()} for wd in workdirs]
    for wd, saved in zip(workdirs, per_run):
        saved.setdefault(0, (wd / "snapshots" / "step_00000000.npz").stat().st_mtime)
    common = set.intersection(*(set(s) for s in per_run))
    return {step: min(s[step] for s in per_run) for step in common}


def _same_stream(store: RunStore, run_id: str, ref: MemorySink) -> bool:
    """Row for row, value for value, and every posterior snapshot array for array."""
    if sorted(store.metrics(run_id).itertuples(index=False, name=None)) != sorted(ref.rows):
        return False
    if store.snapshot_steps(run_id) != sorted(ref.snapshots):
        return False
    for step, arrays in ref.snapshots.items():
        back = store.load_snapshot(run_id, step)
        if set(back) != set(arrays) or not all(np.array_equal(back[k], arrays[k]) for k in arrays):
            return False
    return True


def _integrity(store: RunStore) -> str:
    con = sqlite3.connect(store.db_path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def _kill(store: RunStore, ids: list[str], kind: str, seed: int, train_s: float) -> tuple[float, float]:
    """Start a worker on the queued runs and SIGKILL it: the kill's wall and monotonic times."""
    workdirs = [store.artifact_dir(i) for i in ids]
    proc = _worker(store.home)
    try:
        if not _wait(lambda: store.get(ids[0]).step > 0, 300):
            raise RuntimeError(f"the worker never started training (see {store.home / 'worker-killed.log'})")
        kill_moment(kind, workdirs, random.Random(seed), train_s)
        os.kill(proc.pid, signal.SIGKILL)
        killed, killed_mono = time.time(), time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    return killed, killed_mono


def run_trial(home: Path, kind: str, seed: int, steps: int = 16000) -> Trial:
    """One kill of a worker training fresh runs in `home`, and everything checked after it."""
    cfgs = configs(kind, steps)
    refs, rate = reference(cfgs)
    store = RunStore(home)
    ids = store.create_batch(cfgs) if len(cfgs) > 1 else [store.create_run(cfgs[0])]
    workdirs, trial = [store.artifact_dir(i) for i in ids], Trial(kind)
    killed, killed_mono = _kill(store, ids, kind, seed, steps / rate)
    trial.killed_mid_write = any((wd / "checkpoint.tmp").exists() for wd in workdirs)
    trial.killed_at_step = max(store.last_step(i) or 0 for i in ids)
    _wait(lambda: all(store.get(i).status != "running" for i in ids), HEARTBEAT_TIMEOUT + 30)
    trial.to_interrupted_s = time.monotonic() - killed_mono
    statuses = {store.get(i).status for i in ids}
    trial.finished_first, trial.interrupted = statuses == {"done"}, statuses == {"interrupted"}
    if not trial.interrupted:
        return trial
    saves = _saves(workdirs)
    out = subprocess.run([sys.executable, "-m", "vaeviz", "worker", "--exit-when-idle", "--poll", "0.1"], cwd=REPO,
                         env={**ENV, "VAEVIZ_HOME": str(home)}, capture_output=True, text=True, timeout=900).stdout
    resumed = [re.search(rf"run {i} done(?: \(resumed from step (\d+)\))?$", out, re.M) for i in ids]
    trial.reclaimed = all(resumed) and all(store.get(i).status == "done" for i in ids) and "reclaimed 1×" in out
    if resumed[0]:  # no resume step: no state was saved before the kill, the run started afresh
        trial.resumed_from = int(resumed[0].group(1) or 0)
        trial.lost_s = killed - saves.get(trial.resumed_from, -math.inf)
        trial.lost_steps_s = (trial.killed_at_step - trial.resumed_from) / rate
    trial.streams_equal = all(_same_stream(store, i, ref) for i, ref in zip(ids, refs))
    trial.integrity = _integrity(store)
    return trial


def trial_of_kind(root: Path, kind: str, seed: int, steps: int = 16000, tries: int = 3) -> Trial:
    """A trial in a fresh home under `root`, redone (new seed, new home) while its runs end before the kill."""
    for attempt in range(tries):
        trial = run_trial(root / f"{kind}_{seed}_{attempt}", kind, seed * 100 + attempt, steps)
        if not trial.finished_first:
            break
    return trial


def run_plan(root: Path, plan: dict[str, int], seed: int, steps: int) -> list[Trial]:
    """Every trial of the plan, each in its own home."""
    trials = []
    for kind, count in plan.items():
        for _ in range(count):
            trial = trial_of_kind(root, kind, seed * 1000 + len(trials), steps)
            trials.append(trial)
            print(f"trial_{len(trials):02d}: {kind} killed_at_step={trial.killed_at_step} "
                  f"resumed_from={trial.resumed_from} mid_write={trial.killed_mid_write} "
                  f"to_interrupted_s={trial.to_interrupted_s:.2f} lost_s={trial.lost_s:.2f} "
                  f"lost_steps_s={trial.lost_steps_s:.2f} streams_equal={trial.streams_equal} "
                  f"integrity={trial.integrity} ok={trial.ok}", flush=True)
    return trials


def report(trials: list[Trial], steps: int) -> None:
    for kind in dict.fromkeys(t.kind for t in trials):
        mine = [t for t in trials if t.kind == kind]
        print(f"kind_{kind}: {sum(t.ok for t in mine)}/{len(mine)}")
    timed = sum(t.resumed_from > 0 and t.resumed_from % CHECKPOINT_EVERY != 0 for t in trials)
    print(f"killed_mid_write: {sum(t.killed_mid_write for t in trials)}")
    print(f"resumed_from_time_checkpoint: {timed}")
    print(f"resumed_from_scratch: {sum(t.resumed_from == 0 for t in trials)}")
    to_int = [t.to_interrupted_s for t in trials]
    print(f"max_to_interrupted_s: {max(to_int):.2f}")
    print(f"median_to_interrupted_s: {statistics.median(to_int):.2f}")
    print(f"max_lost_s: {max(t.lost_s for t in trials):.2f}")
    print(f"median_lost_s: {statistics.median(t.lost_s for t in trials):.2f}")
    print(f"max_lost_steps_s: {max(t.lost_steps_s for t in trials):.2f}")
    for k, name in ((1, "solo"), (2, "batch")):
        cfgs = configs("batch" if k == 2 else "solo", steps)
        print(f"steps_per_s_{name}: {reference(cfgs)[1]:.0f}")
    print(f"trials_ok: {sum(t.ok for t in trials)}/{len(trials)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials in all, spread over the kinds as in PLAN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=16000, help="steps of each run")
    args = parser.parse_args()
    scale = args.trials / sum(PLAN.values())
    plan = {kind: max(1, round(n * scale)) for kind, n in PLAN.items()}
    with tempfile.TemporaryDirectory(prefix="vaeviz-kills-") as root:
        trials = run_plan(Path(root), plan, args.seed, args.steps)
    report(trials, args.steps)


if __name__ == "__main__":
    main()
