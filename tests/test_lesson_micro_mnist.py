"""The Micro-MNIST lesson (`vaeviz.lessons.micro_mnist`, Taming VAEs Fig. 8): its checks agree with the paper's claims
(ELBO islands, GECO tiling the prior within its constraint, κ setting the patch size), its figures draw the 7 images,
and a second run reuses every run. Needs the real MNIST files; skipped with the reason without them."""

from __future__ import annotations

import dataclasses
import math

import pytest

from vaeviz.lessons import LESSONS, micro_mnist
from vaeviz.lessons.runner import lesson_runs, train_here
from vaeviz.runs import RunStore

STEPS = 3000  # the lesson trains 4,000; GECO's capped λ has settled by ~1,000 (~35 s of CPU for the 3 runs)
SHORT = dataclasses.replace(micro_mnist.LESSON, configs=lambda full: micro_mnist.configs(full, STEPS))


def test_the_lesson_is_registered_and_needs_mnist():
    assert LESSONS["micro-mnist"] is micro_mnist.LESSON and micro_mnist.LESSON.needs == ("mnist",)
    cfgs = micro_mnist.configs(False)
    assert {c.data.n for c in cfgs.values()} == {7} and {c.train.batch_size for c in cfgs.values()} == {7}
    assert [c.objective.name for c in cfgs.values()] == ["vae", "geco", "geco"]
    assert [c.objective.kappa for c in list(cfgs.values())[1:]] == [0.1, 0.2]
    assert {c.train.steps for c in cfgs.values()} == {micro_mnist.STEPS}


def test_checks_wait_for_the_runs(tmp_path):
    runs = lesson_runs(RunStore(tmp_path), SHORT)
    assert [check.judge(runs) for check in SHORT.checks] == [None, None, None]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import shared_data_dir

    data = shared_data_dir()
    if data is None or not (data / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found: set VAEVIZ_DATA_DIR or place ../shared/data/mnist beside the repo")
    store = RunStore(tmp_path_factory.mktemp("micro_lesson"))
    with pytest.MonkeyPatch.context() as env:  # the data folder for this module only
        env.setenv("VAEVIZ_DATA_DIR", str(data))
        first = train_here(store, SHORT)
        second = train_here(store, SHORT)
        runs = lesson_runs(store, SHORT)
        verdicts = {check.judge.__name__: check.judge(runs) for check in SHORT.checks}
        figures = {spec.title: spec.build(runs) for spec in SHORT.figures}
    return first, second, verdicts, figures, runs


@pytest.mark.slow
def test_trains_once_then_reuses_every_run(trained):
    first, second, *_ = trained
    assert (first.new, first.reused) == (3, 0) and (second.new, second.reused) == (0, 3)


@pytest.mark.slow
@pytest.mark.parametrize("check", ["vae_islands", "geco_tiles", "kappa_sets_patch"])
def test_the_paper_claim_holds(trained, check):
    verdict = trained[2][check]
    assert verdict is not None and verdict.holds, verdict.sentence


@pytest.mark.slow
def test_the_vae_rate_exceeds_what_seven_images_need(trained):
    runs = trained[4]
    assert runs.last(micro_mnist.VAE, "rate", "train") > math.log(7)  # sharper than telling 7 images apart needs


@pytest.mark.slow
def test_tilings_show_the_seven_decoded_images(trained):
    figures = trained[3]
    assert all(f is not None for f in figures.values())
    for role in micro_mnist.ROLES:
        fig = figures[f"Posteriors under {'the ELBO' if role == micro_mnist.VAE else role.replace('GECO ', 'GECO, ')}"]
        assert len(fig.layout.images) == 7
        assert [t for t in fig.data if t.name == "examples"][0].text == tuple(str(i) for i in range(1, 8))
    holes = figures["Holes under the ELBO"]
    assert "hole fraction" in holes.layout.title.text
