"""The `vaeviz` command line (also `python -m vaeviz`).

    vaeviz train [--config FILE] [--preset NAME] [--set key=value ...] [--background] [--name NAME]
    vaeviz sweep [--preset NAME] [--set key=value ...] --vary key=v1,v2 [--vary ...] [--background]
    vaeviz worker [--max-jobs N] [--exit-when-idle] [--poll S] [--no-reclaim]
    vaeviz runs [--json] [--status S]
    vaeviz show RUN | cancel RUN | resume RUN [--background]
    vaeviz export RUN --format csv|parquet|json [--out FILE]
    vaeviz eval RUN [--step S] [--json] [--batch N]
    vaeviz datasets | presets | lessons
    vaeviz lesson NAME [--full]
    vaeviz report RUN|LESSON --html FILE [--full]

A user error (bad key or value, unknown run, bad data file, a config that cannot train to the
end, an unreadable checkpoint) prints one `error: ...` line on stderr and exits 2; a run that
fails, diverges or is cancelled exits 1. `train`, `sweep` and `resume` run `preflight` on every
config before a run is created or queued, so such errors leave no run behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from vaeviz.config import ConfigError, RunConfig
from vaeviz.data import UnreadableFile, open_regular
from vaeviz.preflight import preflight
from vaeviz.runs import STATUSES, RunStore
from vaeviz.worker import Outcome, ensure_worker, run_one, run_together, user_errors, work

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes
MAX_SWEEP_RUNS = 256  # combinations of one sweep
# what torch.load and load_state_dict raise on a corrupt or tampered checkpoint
CHECKPOINT_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, KeyError, IndexError, ValueError, TypeError,
                     AttributeError, OSError)


class UserError(Exception):
    """A mistake on the command line; printed as `error: <message>`, exit code 2."""


def _out(line: str = "") -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- train / resume ----------------------------------------------------------------------------


def _load_config(args) -> RunConfig:
    """--config FILE or --preset NAME (not both), then every --set in order; a --set objective.name=... carries
    over the knobs that mean the same thing, with a `note:` line on stderr for each that does not."""
    if args.config and args.preset:
        raise UserError("use either --config or --preset, not both")
    if args.config:
        cfg = read_config_file(args.config)
    elif args.preset:
        from vaeviz.presets import preset_config

        try:
            cfg = preset_config(args.preset)
        except KeyError as e:
            raise UserError(str(e.args[0]) if e.args else f"unknown preset '{args.preset}'") from None
    else:
        cfg = RunConfig()
    notes = []
    cfg = cfg.with_overrides(args.set or [], notes)
    _notes(notes)
    return cfg


def _notes(notes: list) -> None:
    """Each knob that an objective switch changed or dropped, once, as a `note:` line on stderr."""
    for line in dict.fromkeys(map(str, notes)):
        _err(f"note: {line}")


def read_config_file(path: str) -> RunConfig:
    """The config in a JSON file of at most MAX_CONFIG_BYTES; UserError/ConfigError (one line) otherwise."""
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except UnreadableFile as e:
        raise UserError(f"cannot read config file {path}: it {e}") from None
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise UserError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes; a config is a small JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    return RunConfig.from_json(text)


def checked_config(args) -> RunConfig:
    """The config of `train` args (--config/--preset/--set), validated end to end by `preflight`:
    what the CLI runs before creating a run, so a bad config leaves no run behind."""
    cfg = _load_config(args)
    preflight(cfg)
    return cfg


class ProgressLine:
    """A one-line progress display on stderr: step, speed and loss, redrawn at most 4 times a second."""

    def __init__(self):
        self.t0 = self.shown = None
        self.step0 = 0

    def __call__(self, step: int, total: int, metrics: dict) -> None:
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.step0 = now, step
        if self.shown is not None and now - self.shown < 0.25 and step < total:
            return
        self.shown = now
        rate = (step - self.step0) / (now - self.t0) if now > self.t0 else 0.0
        loss = metrics.get("loss")
        tail = f"  loss {loss:.4g}" if loss is not None else ""
        sys.stderr.write(f"\r step {step}/{total}  {rate:.0f} steps/s{tail}   ")
        sys.stderr.flush()

    def end(self) -> None:
        if self.shown is not None:
            sys.stderr.write("\n")


def _run_here(store: RunStore, run_id: str) -> int:
    """Train a run this process owns, in the foreground; print the result; return the exit code."""
    progress = ProgressLine()
    try:
        out = run_one(store, store.get(run_id), progress=progress)
    except KeyboardInterrupt:
        progress.end()
        _err(f"interrupted; `vaeviz resume {run_id}` continues from the last checkpoint")
        return 130
    progress.end()
    return _report(out)


def _report(out: Outcome) -> int:
    if out.resumed_from is not None:
        _err(f"resumed from step {out.resumed_from}")
    if out.status == "done":
        final = out.result.final
        for key in ("rate", "distortion"):
            if key in final:
                _out(f"{key}: {final[key]:.6g}")
        _out(f"steps: {out.result.steps}")
        _out(f"device: {out.result.device}")
    _out(f"status: {out.status}")
    if out.error:
        _err(f"error: {out.error}")
    if out.status == "done":
        return 0
    return 2 if isinstance(out.exc, user_errors()) else 1


def cmd_train(args) -> int:
    cfg = checked_config(args)
    store = RunStore()
    name = args.name or _preset_run_name(args, cfg, store)
    if name:
        cfg = cfg.with_overrides({"name": name})
    pid = None if args.background else os.getpid()
    run_id = store.create_run(cfg, name, worker_pid=pid)
    _out(f"run: {run_id}")
    if args.background:
        return _start_worker(store)
    return _run_here(store, run_id)


def _preset_run_name(args, cfg: RunConfig, store: RunStore) -> str | None:
    """A `--preset NAME` run (not renamed by `--set name=`) is named as the app's Train page names it: the preset,
    with the objective when `--set objective.name=` switched it, and `-2`, `-3`, ... when the name is taken."""
    if not args.preset or cfg.name != args.preset:
        return None
    from vaeviz.app_state import preset_run_name

    return preset_run_name(args.preset, cfg.objective.name, [r.name for r in store.list_runs()])


def sweep_configs(base: RunConfig, vary: list[str]) -> list[RunConfig]:
    """Every combination of the `key=v1,v2,...` lists applied to `base` (later keys vary fastest)."""
    import itertools

    axes = []
    for item in vary:
        key, _, values = item.partition("=")
        axis = [(key.strip(), v.strip()) for v in values.split(",") if v.strip()]
        if not axis or not key.strip():
            raise UserError(f"--vary {item!r} is not of the form key=v1,v2,...")
        axes.append(axis)
    total = math.prod(len(axis) for axis in axes)
    if total > MAX_SWEEP_RUNS:
        raise UserError(f"--vary gives {total} combinations; a sweep has at most {MAX_SWEEP_RUNS} runs")
    notes = []
    cfgs = [base.with_overrides(dict(combo), notes) for combo in itertools.product(*axes)]
    _notes(notes)
    return cfgs


def cmd_sweep(args) -> int:
    """Queue the combinations as one batch: a worker trains them as one batched model."""
    cfgs = checked_sweep(args)
    store = RunStore()
    keys = [v.partition("=")[0].strip() for v in args.vary]
    names = sweep_names(cfgs, keys, [r.name for r in store.list_runs()])
    cfgs = [c.with_overrides({"name": n}) for c, n in zip(cfgs, names, strict=True)]
    pid = None if args.background else os.getpid()
    batch = os.urandom(4).hex()
    ids = [store.create_run(c, n, worker_pid=pid, batch=batch) for c, n in zip(cfgs, names)]
    for run_id in ids:
        _out(f"run: {run_id}")
    if args.background:
        return _start_worker(store)
    outs = run_together(store, [store.get(i) for i in ids])
    rows = [["run", "name", "status", "rate", "distortion"]]
    for run_id, name, out in zip(ids, names, outs):
        final = out.result.final if out.result else {}
        figures = [f"{final[k]:.4g}" if k in final else "-" for k in ("rate", "distortion")]
        rows.append([run_id, name, out.status, *figures])
    _table(rows)
    return 0 if all(o.status == "done" for o in outs) else 1


def checked_sweep(args) -> list[RunConfig]:
    """The configs of `sweep` args, each validated by `preflight` before any run is created."""
    cfgs = sweep_configs(_load_config(args), args.vary)
    for cfg in cfgs:
        preflight(cfg)
    return cfgs


def sweep_names(cfgs: list[RunConfig], keys: list[str], taken) -> list[str]:
    """`<base> key=value ...` for each run of a sweep, e.g. `vae-digits beta=0.5`: the base is the config's name (a
    preset's, `--set name=`), else `<data>-<objective>` without the parts that vary; when a name is `taken`, every
    run of the sweep gets one ` #n` (`app_state.unique_names`), so two sweeps never list identical names."""
    from vaeviz.app_state import unique_names

    first = cfgs[0]
    parts = [value for key, value in (("data.name", first.data.name), ("objective.name", first.objective.name))
             if key not in keys]
    base = first.name if first.name and "name" not in keys else "-".join(parts) or "sweep"
    names = [" ".join([base, *(f"{_short(k)}={_text(_get(c, k))}" for k in keys)]) for c in cfgs]
    return unique_names(names, taken)


def _text(value) -> str:
    """A config value in a run name: `0.5`, `10` (not `10.0`), `256,256`."""
    if isinstance(value, float):
        return f"{value:g}"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _short(key: str) -> str:
    """`objective.beta` -> `beta`, `objective.name` -> `objective`."""
    section, _, leaf = key.partition(".")
    return section if leaf == "name" or not leaf else leaf


def _get(cfg: RunConfig, key: str):
    section, _, leaf = key.partition(".")
    d = cfg.to_dict()
    return d[section][leaf] if leaf else d[section]


def _start_worker(store: RunStore) -> int:
    pid = ensure_worker(store)
    if pid:
        _err(f"started worker {pid} (log: {store.home / 'worker.log'})")
    else:
        _err("queued; a running worker will pick it up")
    return 0


def cmd_resume(args) -> int:
    store = RunStore()
    store.mark_dead_interrupted()
    rec = store.get(args.run)
    preflight(rec.config)
    run_id = rec.id
    store.requeue(run_id, resume=True, worker_pid=None if args.background else os.getpid())
    _out(f"run: {run_id}")
    if args.background:
        return _start_worker(store)
    return _run_here(store, run_id)


def cmd_worker(args) -> int:
    """SIGTERM stops the worker gracefully: its current run checkpoints and is left `interrupted`."""
    stopping = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if main_thread else None
    def log(line: str) -> None:
        _out(f"[{datetime.now():%H:%M:%S}] worker {os.getpid()}: {line}")

    try:
        n = work(RunStore(), max_jobs=args.max_jobs, exit_when_idle=args.exit_when_idle, poll=args.poll,
                 stop=stopping.is_set, log=log, reclaim=not args.no_reclaim)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    _out(f"worker {os.getpid()}: finished {n} run(s)")
    return 0


# -- inspecting runs ---------------------------------------------------------------------------


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_runs(args) -> int:
    runs = RunStore().list_runs(args.status)
    if args.json:
        _out(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        _out("no runs" + (f" with status {args.status}" if args.status else ""))
        return 0
    rows = [["id", "name", "status", "objective", "dataset", "step/steps"]]
    rows += [[r.id, r.name, r.status, r.objective, r.dataset, f"{r.step}/{r.total_steps}"] for r in runs]
    _table(rows)
    return 0


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def cmd_show(args) -> int:
    from vaeviz.analysis.bounds import touched_bounds

    store = RunStore()
    r = store.get(args.run)
    _out(f"run:       {r.id}  ({r.name})")
    _out(f"status:    {r.status}")
    _out(f"objective: {r.objective}   dataset: {r.dataset}   device: {r.device or '-'}")
    _out(f"step:      {r.step}/{r.total_steps}")
    _out(f"created:   {_when(r.created)}   started: {_when(r.started)}   finished: {_when(r.finished)}")
    if r.error:
        _out(f"error:     {r.error}")
    df = store.metrics(r.id)
    for hit in touched_bounds(r.config, df):  # a clamp or floor of the objective's state that the run reached
        _out(f"bound:     {hit.describe()}")
    for split in ("train", "eval"):
        part = df[df.split == split]
        if len(part):
            last = part[part.step == part.step.max()]
            _out(f"last {split} metrics (step {int(last.step.iloc[0])}):")
            for name, value in zip(last.name, last.value, strict=True):
                _out(f"  {name}: {value:.6g}")
    _out("config:")
    _out(r.config.to_json())
    return 0


def cmd_cancel(args) -> int:
    store = RunStore()
    r = store.get(args.run)
    status = store.request_cancel(r.id)
    if status == "cancelled":
        _out(f"run {r.id} cancelled")
    elif status == "running":
        _out(f"run {r.id}: cancel requested; its worker stops at the next flush")
    else:
        raise UserError(f"run {r.id} is already {status}")
    return 0


def cmd_export(args) -> int:
    store = RunStore()
    r = store.get(args.run)
    df = store.metrics(r.id)
    if args.format == "parquet":
        out = Path(args.out or f"{r.id}-metrics.parquet")
        df.to_parquet(out, index=False)
        _err(f"wrote {len(df)} rows to {out}")
        return 0
    if args.format == "csv":
        text = df.to_csv(index=False)
    else:
        text = df.to_json(orient="records", indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        _err(f"wrote {len(df)} rows to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _load_for_eval(store: RunStore, run_id: str, step: int | None):
    """(model, objective, data, step) of a run's checkpoint; a corrupt or tampered checkpoint is a UserError."""
    from vaeviz.analysis.evaluate import load_model
    from vaeviz.checkpoint import checkpoint_steps

    try:
        return load_model(store, run_id, step)
    except (*user_errors(), FileNotFoundError):
        raise
    except CHECKPOINT_ERRORS as e:
        steps = checkpoint_steps(store.artifact_dir(run_id))
        chosen = max([s for s in steps if step is None or s <= step] or steps[:1] or [0])
        path = Path(run_id) / "checkpoints" / f"step_{chosen:08d}.pt"
        raise UserError(f"checkpoint {path} is unreadable: {_checkpoint_reason(e)}") from None


def _checkpoint_reason(e: Exception) -> str:
    """The first sentence of what torch said (its messages run to many lines), at most 160 characters."""
    if isinstance(e, pickle.UnpicklingError):
        return "it is not a weights-only torch checkpoint (or it was tampered with)"
    text = " ".join(str(e).split()).split(". ")[0] or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def cmd_eval(args) -> int:
    from vaeviz.analysis.evaluate import EvalSettings, evaluate_run

    store = RunStore()
    rec = store.get(args.run)
    settings = EvalSettings() if args.batch is None else EvalSettings(batch=args.batch)
    result = evaluate_run(store, rec.id, args.step, settings, load=_load_for_eval)
    if args.json:
        _out(json.dumps(result))
    else:
        for key, value in result.items():
            _out(f"{key}: {value}")
    return 0


def cmd_datasets(args) -> int:
    from vaeviz.data import describe_datasets

    _table([["name", "description"], *[[n, d] for n, d in describe_datasets()]])
    return 0


def cmd_presets(args) -> int:
    from vaeviz.presets import PRESETS

    rows = [["name", "description"]]
    for name, p in PRESETS.items():
        rows.append([name, p.description])
    _table(rows)
    return 0


# -- lessons and reports -----------------------------------------------------------------------


def _lesson(name: str):
    from vaeviz.lessons import LESSONS

    if name not in LESSONS:
        raise UserError(f"unknown lesson {name!r} (known: {', '.join(LESSONS)})")
    return LESSONS[name]


def cmd_lessons(args) -> int:
    from vaeviz.lessons import LESSONS

    for name, lesson in LESSONS.items():
        _out(name)
        _out(f"    {lesson.title}")
    return 0


def cmd_lesson(args) -> int:
    """Train what the lesson needs (reusing finished runs), then print each check's verdict and sentence."""
    from vaeviz.lessons.runner import lesson_runs, train_here

    lesson = _lesson(args.name)
    store = RunStore()
    progress = ProgressLine()
    done = train_here(store, lesson, args.full, progress=progress)
    progress.end()
    _out(f"runs: {done.new} trained, {done.reused} reused; training took {done.seconds:.1f} s")
    runs = lesson_runs(store, lesson, args.full)
    failed = [role for role, rec in runs.records.items() if rec is None or rec.status != "done"]
    for role in failed:
        rec = runs.records[role]
        _err(f"run {role!r} {'was not created' if rec is None else 'ended ' + rec.status}")
    for check in lesson.checks:  # a claim that does not hold is a finding, not an error
        verdict = check.judge(runs)
        if verdict is None:
            _out(f"unfinished: {check.claim}")
            continue
        _out(f"{'agrees' if verdict.holds else 'differs'}: {verdict.sentence}")
    return 1 if failed else 0


def cmd_report(args) -> int:
    """One self-contained HTML file for a lesson (by name) or a run (id, id prefix or name)."""
    from vaeviz import report
    from vaeviz.lessons import LESSONS
    from vaeviz.lessons.runner import lesson_runs

    store = RunStore()
    if args.target in LESSONS:
        lesson = LESSONS[args.target]
        text = report.lesson_html(lesson, lesson_runs(store, lesson, args.full))
    else:
        text = report.run_html(store, store.get(args.target))
    Path(args.html).write_text(text, encoding="utf-8")
    _out(f"wrote {args.html}")
    return 0


# -- argument parsing --------------------------------------------------------------------------


def _whole(lo: int):
    """An argparse type: a whole number >= lo (and below 10**12)."""

    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 20 else -1
        except ValueError:
            value = -1
        if not lo <= value < 10**12:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number >= {lo}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds in (0, 3600]."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds in (0, 3600]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaeviz", description="Train VAE-family models and inspect their runs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("train", cmd_train, "train a run (in this process, or queued with --background)")
    p.add_argument("--config", metavar="FILE", help="a JSON config file")
    p.add_argument("--preset", metavar="NAME", help="start from a preset (see `vaeviz presets`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--background", action="store_true", help="queue it and return; a worker trains it")
    p.add_argument("--name", help="a name for the run")
    p = command("sweep", cmd_sweep, "train every combination of --vary values as one batched comparison")
    p.add_argument("--config", metavar="FILE", help="a JSON config file")
    p.add_argument("--preset", metavar="NAME", help="start from a preset (see `vaeviz presets`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2", help="values to sweep (repeatable)")
    p.add_argument("--background", action="store_true", help="queue the batch and return; a worker trains it")
    p = command("worker", cmd_worker, "claim and train queued runs")
    p.add_argument("--max-jobs", type=_whole(1), metavar="N", help="stop after N runs")
    p.add_argument("--exit-when-idle", action="store_true", help="stop when the queue is empty")
    p.add_argument("--no-reclaim", action="store_true", help="leave runs of dead workers interrupted")
    p.add_argument("--poll", type=_seconds, default=1.0, metavar="S", help="seconds between queue checks")
    p = command("runs", cmd_runs, "list runs, newest first")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status")
    for name, func, help in [("show", cmd_show, "a run's status, last metrics and config"),
                             ("cancel", cmd_cancel, "cancel a queued or running run")]:
        command(name, func, help).add_argument("run", metavar="RUN", help="run id, id prefix or name")
    p = command("resume", cmd_resume, "continue an interrupted, failed or cancelled run from its last checkpoint")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--background", action="store_true", help="queue it and return; a worker trains it")
    p = command("export", cmd_export, "write a run's metrics (columns step, split, name, value)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", choices=["csv", "parquet", "json"], default="csv")
    p.add_argument("--out", metavar="FILE", help="output file (default: stdout for csv/json)")
    p = command("eval", cmd_eval, "evaluate a run at a step (IWAE, holes, marginal KL, ...)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--step", type=_whole(0), help="checkpoint step (default: the last)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch", type=_whole(1), metavar="N",
                   help="examples per chunk of the ELBO and IWAE passes (default 500); it bounds memory only: "
                        "the noise is fixed per example, so the metrics do not depend on it")
    command("datasets", cmd_datasets, "list the built-in datasets")
    command("presets", cmd_presets, "list the config presets")
    command("lessons", cmd_lessons, "list the lessons (name, then title)")
    p = command("lesson", cmd_lesson, "train a lesson's runs (reusing finished ones) and print its checks")
    p.add_argument("name", metavar="NAME", help="a lesson (see `vaeviz lessons`)")
    p.add_argument("--full", action="store_true", help="the paper's settings (slower) instead of the quick ones")
    p = command("report", cmd_report, "write one self-contained HTML file for a run or a lesson")
    p.add_argument("target", metavar="RUN|LESSON", help="a lesson name, or a run id, id prefix or name")
    p.add_argument("--html", required=True, metavar="FILE", help="the HTML file to write")
    p.add_argument("--full", action="store_true", help="a lesson's full-size runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0
    except (UserError, ConfigError, OSError, *user_errors()) as e:
        _err(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        _err("\ninterrupted")
        return 130
