"""The training loop: reproducibility, divergence detection, evaluation rows, checkpoint resume."""

import numpy as np
import pytest
import torch

from vaeviz.build import load_run
from vaeviz.config import RunConfig
from vaeviz.control import Cancelled, Diverged
from vaeviz.member import MemorySink
from vaeviz.train import train

BASE = ["data.name=digits", "model.latent_dim=2", "model.hidden=64,64", "train.steps=60", "train.eval_every=20",
        "train.checkpoint_every=20", "train.batch_size=32"]


def _cfg(*extra):
    return RunConfig().with_overrides(BASE + list(extra))


def test_same_config_and_seed_give_identical_metric_streams():
    a, b = MemorySink(), MemorySink()
    train(_cfg(), a)
    train(_cfg(), b)
    assert len(a.rows) > 0 and a.rows == b.rows
    c = MemorySink()
    train(_cfg("train.seed=1"), c)
    assert c.rows != a.rows


def test_streams_hold_every_step_and_eval_rows():
    sink = MemorySink()
    result = train(_cfg(), sink)
    steps, loss = sink.series("loss")
    assert steps.tolist() == list(range(1, 61)) and np.isfinite(loss).all()
    eval_steps, elbo = sink.series("elbo", "eval")
    assert eval_steps.tolist() == [0, 20, 40, 60]
    # the loss falls; the ELBO on held-out data rises from its initial value
    assert loss[-10:].mean() < loss[:10].mean() and elbo[-1] > elbo[0]
    _, rate = sink.series("rate", "eval")
    _, dist = sink.series("distortion", "eval")
    np.testing.assert_allclose(elbo, -(rate + dist), rtol=1e-6)
    assert sorted(sink.snapshots) == [0, 20, 40, 60]
    snap = sink.snapshots[60]
    assert snap["mu"].shape == snap["logvar"].shape == (len(snap["labels"]), 2)
    assert set(result.final) >= {"loss", "rate", "distortion", "mse"}


def test_divergence_names_step_and_term():
    with pytest.raises(Diverged) as err:
        train(_cfg("train.lr=50", "train.steps=400"), MemorySink())
    assert err.value.step >= 1 and err.value.term in str(err.value) and "step" in str(err.value)


def test_cancel_writes_a_checkpoint(tmp_path):
    with pytest.raises(Cancelled):
        train(_cfg(), MemorySink(), workdir=tmp_path, should_stop=lambda: True)
    assert (tmp_path / "checkpoint.pt").exists()


def test_resume_continues_the_identical_stream(tmp_path):
    full = MemorySink()
    train(_cfg(), full)
    part = MemorySink()
    train(_cfg("train.steps=60"), part, workdir=tmp_path)  # leaves checkpoints at 20, 40, 60
    # simulate a crash after step 40: restore the step-40 training state, then resume
    (tmp_path / "checkpoint.pt").unlink()
    cut = MemorySink()
    train(_cfg("train.steps=40"), cut, workdir=tmp_path)
    train(_cfg(), cut, workdir=tmp_path, resume=True)
    assert cut.rows == full.rows


def test_load_run_restores_weights(tmp_path):
    cfg = _cfg()
    train(cfg, MemorySink(), workdir=tmp_path)
    setup, step = load_run(cfg, tmp_path)
    assert step == 60
    setup20, step20 = load_run(cfg, tmp_path, step=25)
    assert step20 == 20
    w, w20 = setup.model.decoder.out.weight, setup20.model.decoder.out.weight
    assert not torch.equal(w, w20)
