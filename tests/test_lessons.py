"""The lesson framework: which runs a lesson reuses, how it queues the others, its CLI and its HTML report.

A tiny lesson of two toy runs stands in for the real ones (their checks are tested in test_lesson_*.py)."""

from __future__ import annotations

import html.parser
import json

import pytest

from vaeviz import report
from vaeviz.cli import main
from vaeviz.config import ConfigError
from vaeviz.lessons import LESSONS
from vaeviz.lessons.common import base
from vaeviz.lessons.lesson import Check, Figure, Lesson, Variation, Verdict
from vaeviz.lessons.runner import identity, launch, lesson_runs, reusable, train_here
from vaeviz.plots import information_plane
from vaeviz.runs import RunStore

TOY = {"data.name": "gaussian_mixture", "model.hidden": [16], "model.latent_dim": 2, "objective.decoder": "gaussian",
       "objective.sigma": 0.1}


def toy_configs(full: bool) -> dict:
    steps = 60 if full else 30
    return {"VAE <b>": base({**TOY, "objective.name": "vae"}, steps, 10),
            "β = 4": base({**TOY, "objective.name": "beta_vae", "objective.beta": 4.0}, steps, 10)}


def rate_order(runs) -> Verdict | None:
    if not runs.done():
        return None
    r1, r4 = runs.last("VAE <b>", "rate"), runs.last("β = 4", "rate")
    return Verdict(r4 < r1, f"rate {r1:.3g} at β = 1, {r4:.3g} at β = 4 <script>")


TINY = Lesson(name="tiny", title="Tiny <i>lesson</i>", paper="Nobody 2026", figure="Fig. 0",
              look_for="Look & see", configs=toy_configs,
              figures=(Figure("Plane", lambda runs: information_plane(runs.paths()) if runs.started() else None),),
              checks=(Check("β lowers the rate", rate_order),),
              variations=(Variation("seed 1", {"train.seed": 1}),))


def test_identity_ignores_the_name_only():
    a = toy_configs(False)["β = 4"]
    assert identity(a) == identity(a.with_overrides({"name": "other"}))
    assert identity(a) != identity(a.with_overrides({"objective.beta": 4.5}))


def test_launch_queues_one_batch_per_shared_network_and_reuses_the_rest(tmp_path):
    store = RunStore(tmp_path)
    ids = launch(store, TINY)
    recs = [store.get(i) for i in ids]
    assert len(ids) == 2 and len({r.batch for r in recs}) == 1 and all(r.status == "queued" for r in recs)
    assert sorted(r.name for r in recs) == ["tiny · VAE <b>", "tiny · β = 4"]
    assert launch(store, TINY) == []  # queued runs are on their way: nothing queued twice
    store.set_status(ids[0], "cancelled")
    again = launch(store, TINY)  # a cancelled run is trained again, the queued one reused
    assert len(again) == 1 and store.get(again[0]).config.to_dict() == recs[0].config.to_dict()
    full = launch(store, TINY, full=True)  # other steps: other configs
    assert len(full) == 2
    varied = launch(store, TINY, variation=TINY.variations[0])
    assert [store.get(i).config.train.seed for i in varied] == [1, 1]
    assert store.get(varied[0]).name.endswith("· seed 1")


def test_reusable_prefers_a_finished_run(tmp_path):
    store = RunStore(tmp_path)
    cfg = toy_configs(False)["β = 4"]
    old = store.create_run(cfg, "old")
    store.set_status(old, "done")
    store.create_run(cfg, "newer, queued")
    assert reusable(store, {"r": cfg})["r"].id == old


def test_launch_checks_every_config_before_creating_any_run(tmp_path):
    store = RunStore(tmp_path)
    bad = Lesson(name="bad", title="", paper="", figure="", look_for="", figures=(), checks=(),
                 configs=lambda full: {**toy_configs(full),
                                       "too big": base({"data.name": "digits", "model.hidden": [8192] * 8}, 10)})
    with pytest.raises(ConfigError):
        launch(store, bad)
    assert store.list_runs() == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("tiny_lesson"))
    first = train_here(store, TINY)
    second = train_here(store, TINY)
    return store, first, second


def test_train_here_trains_once_then_reuses(trained):
    store, first, second = trained
    assert (first.new, first.reused) == (2, 0) and (second.new, second.reused) == (0, 2)
    runs = lesson_runs(store, TINY)
    assert runs.done() and {r.status for r in runs.records.values()} == {"done"}
    assert runs.last("β = 4", "rate") == pytest.approx(
        float(store.metrics(runs.records["β = 4"].id, "eval", ["rate"]).value.iloc[-1]))


class _Text(html.parser.HTMLParser):
    """The visible text of an HTML page and the tags it uses."""

    def __init__(self):
        super().__init__()
        self.text, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_report_escapes_user_strings_and_holds_plotly_once(trained):
    store, *_ = trained
    page = report.lesson_html(TINY, lesson_runs(store, TINY))
    parsed = _Text()
    parsed.feed(page)
    text = "".join(parsed.text)
    assert "Tiny <i>lesson</i>" in text and "VAE <b>" in text  # names shown as text, not markup:
    assert "i" not in parsed.tags and "Tiny &lt;i&gt;lesson&lt;/i&gt;" in page and "VAE &lt;b&gt;" in page
    assert page.count("plotly.js v") == 1  # the library inline once, no CDN
    assert "<script src" not in page and "<link" not in page  # nothing loaded from elsewhere
    assert "β lowers the rate" in text and ("agrees with the paper" in text or "differs from the paper" in text)


def test_cli_lessons_lists_names_then_titles(capsys):
    assert main(["lessons"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == list(LESSONS) and [t.strip() for t in lines[1::2]] == [x.title for x in LESSONS.values()]


def test_cli_lesson_unknown_name_is_a_user_error(capsys):
    assert main(["lesson", "no-such-lesson"]) == 2
    assert "unknown lesson 'no-such-lesson'" in capsys.readouterr().err


def test_cli_report_of_a_run(trained, tmp_path, monkeypatch, capsys):
    store, *_ = trained
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))
    rec = lesson_runs(store, TINY).records["VAE <b>"]
    out = tmp_path / "run.html"
    assert main(["report", rec.id, "--html", str(out)]) == 0
    page = out.read_text()
    assert "VAE &lt;b&gt;" in page and json.loads(page.split("<pre>")[1].split("</pre>")[0].replace("&quot;", '"'))


def _lesson_page(name: str) -> None:
    from views.lesson import render

    render(name)


@pytest.mark.parametrize("name", list(LESSONS))
def test_every_lesson_page_renders_before_any_run(name, vaeviz_home):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_lesson_page, args=(name,), default_timeout=60).run()
    assert not at.exception and not at.error, [e.message for e in at.exception] + [e.value for e in at.error]
    lesson = LESSONS[name]
    assert at.title[0].value == lesson.title
    assert [b.label for b in at.button] == ["Run this lesson", *(f"Try: {v.label}" for v in lesson.variations)]
    assert sum("not run yet" in c.value for c in at.caption) == len(lesson.configs(False))


def test_a_run_report_names_no_folder_of_this_machine(tmp_path):
    store = RunStore(tmp_path / "home")
    secret = tmp_path / "private" / "faces.npz"
    cfg = toy_configs(False)["β = 4"].with_overrides({"data.name": "npz", "data.path": str(secret)})
    rec = store.get(store.create_run(cfg, "mine"))
    page = report.run_html(store, rec)
    assert "faces.npz" in page and str(secret.parent) not in page and str(tmp_path) not in page
