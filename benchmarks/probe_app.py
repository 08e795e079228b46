"""The app's part of the hostile-input probe (`probe_inputs.py`): hostile run names and error messages,
and hostile `?run=` / `?step=` query parameters, rendered by the real pages through Streamlit's AppTest.

A case fails when a page raises (a Python error replaces the page) or when a hostile string reaches
a text element unescaped (markdown would render it: an image that fetches a URL, a link). Run alone
with `python benchmarks/probe_app.py`; prints `name: value` lines.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vaeviz.config import RunConfig  # noqa: E402
from vaeviz.runs import RunStore  # noqa: E402
from vaeviz.train import train  # noqa: E402

PAGES = ["train", "info_plane", "tiling", "holes", "sigma", "geco", "traversals", "compare", "runs"]
NAMES = ["![n](http://127.0.0.1:9/x.png)", "<img src=x onerror=alert(1)>", "[l](javascript:alert(1))",
         "**bold** _it_ `code`", ":red[red] $$\\frac{1}{0}$$", "<script>alert(1)</script>",
         "\u202eevil\u202c", "a" * 190, "http://127.0.0.1:9/bare"]
STEPS = ["9" * 5000, "²", "-1", "1e400", "nan", " ", "٣", "0x10", "1_000", "12abc", "%00", "<b>1</b>"]
RUNS = ["nope", "../../etc/passwd", "' OR 1=1 --", "![n](http://127.0.0.1:9/q.png)", "x" * 5000, "", "%00"]
TEXT_ELEMENTS = ("markdown", "caption", "subheader", "header", "title", "info", "warning", "error", "success",
                 "toast")


def hostile_store(home: Path) -> tuple[RunStore, list[str]]:
    """A store with two tiny finished runs and a failed one, all with hostile names and messages."""
    store = RunStore(home)
    cfg = RunConfig().with_overrides({"data.name": "digits", "model.hidden": "16", "train.steps": 20,
                                      "train.eval_every": 10, "train.checkpoint_every": 10, "train.probe_size": 100})
    ids = []
    for name in NAMES[:2]:
        run_id = store.create_run(cfg, name, worker_pid=os.getpid())
        train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
        store.set_status(run_id, "done", device="cpu")
        ids.append(run_id)
    for name in NAMES[2:]:
        run_id = store.create_run(cfg, name, worker_pid=os.getpid())
        store.set_status(run_id, "failed", f"{name} {NAMES[0]} <b>x</b>")
        ids.append(run_id)
    return store, ids


def render(page: str, query: dict[str, str]):
    """One page of the real app with these query parameters."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    return at if page == "train" else at.switch_page(f"views/{page}.py").run()


def unescaped(at) -> int:
    """How many text elements show a hostile name or message raw (it would render as markdown/HTML)."""
    raw = [n for n in NAMES if any(c in n for c in "![<*:`$")]
    values = [str(getattr(el, "value", "")) for kind in TEXT_ELEMENTS for el in getattr(at, kind, [])]
    return sum(any(n in v for n in raw) for v in values)


def cases(ids: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Every page with a hostile-named run selected, then hostile ?step= and ?run= values on three pages."""
    out = [(page, {"run": run_id}) for page in PAGES for run_id in ids[:2]]
    out += [(page, {"run": ids[0], "step": step}) for step in STEPS for page in ("tiling", "holes", "traversals")]
    out += [(page, {"run": run}) for run in RUNS for page in ("train", "tiling", "runs")]
    return out


def run_app_cases(home: Path, stats: dict) -> int:
    """Render every case; count exceptions (as tracebacks) and unescaped hostile strings. Returns the case count."""
    os.environ["VAEVIZ_HOME"] = str(home)
    _, ids = hostile_store(home)
    todo = cases(ids)
    for page, query in todo:
        try:
            at = render(page, query)
        except Exception as exc:  # noqa: BLE001 - the probe counts whatever escapes
            stats["tracebacks"] += 1
            print(f"  {page} {str(query)[:80]}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        if at.exception:
            stats["tracebacks"] += 1
            print(f"  {page} {str(query)[:80]}: {at.exception[0].value[:200]}", file=sys.stderr)
        stats["app_unescaped"] = stats.get("app_unescaped", 0) + unescaped(at)
    return len(todo)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vaeviz-probe-app-") as tmp:
        stats = {"tracebacks": 0, "app_unescaped": 0}
        n = run_app_cases(Path(tmp) / "home", stats)
        print(f"app_cases: {n}")
        for name, value in stats.items():
            print(f"{name}: {value}")
        ok = stats["tracebacks"] == 0 and stats["app_unescaped"] == 0
        print(f"ok: {ok}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
