"""`vaeviz eval`'s aggregate posterior and ex-post samplers end to end: the number of training posteriors in q(z)
is reported, and a deterministic encoder on MNIST (Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders", sec. 4 and Table 1) samples far from the data through N(0, I), closer through a single
full-covariance Gaussian fitted ex post to its codes E(x), closer still through a 10-component GMM; the
likelihood bounds do not apply to it."""

from __future__ import annotations

import json

import pytest

from vaeviz.analysis.aggregate import fit_aggregate
from vaeviz.analysis.evaluate import EvalSettings, evaluate_run
from vaeviz.config import RunConfig
from vaeviz.data import load_dataset
from vaeviz.presets import preset_config
from vaeviz.runs import RunStore
from vaeviz.train import train

STEPS = 3000


def test_eval_json_reports_the_components_of_q_and_three_frechet_distances(capsys):
    """Every one of digits' 1,438 training posteriors is in q(z): a small split, under the 10,000 cap."""
    from vaeviz.build import load_run
    from vaeviz.cli import main

    cfg = RunConfig().with_overrides(["data.name=digits", "model.hidden=32", "model.latent_dim=3",
                                      "train.steps=40", "train.eval_every=40"])
    store = RunStore()
    run_id = store.create_run(cfg)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    assert main(["eval", run_id, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    setup, _ = load_run(cfg, store.artifact_dir(run_id))
    assert r["n_components"] == len(setup.data.x_train) == fit_aggregate(setup.model, setup.data.x_train).n_components_
    assert all(r[k] > 0 for k in ("fd_prior", "fd_gaussian", "fd_gmm"))
    assert 0.0 <= r["hole_fraction"] <= 1.0


@pytest.mark.slow  # ~1.5 min on two shared cores: 3,000 MNIST steps, the feature classifier, 10,000 codes
def test_rae_l2_mnist_gmm_beats_one_gaussian_beats_the_prior(data_dir, monkeypatch):
    monkeypatch.setenv("VAEVIZ_DATA_DIR", str(data_dir))
    once = [f"train.steps={STEPS}", f"train.eval_every={STEPS}", f"train.checkpoint_every={STEPS}"]
    cfg = preset_config("rae-l2-mnist").with_overrides([*once, "train.probe_size=100"])
    store = RunStore()
    run_id = store.create_run(cfg)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    saved = sorted(p.name for p in (store.artifact_dir(run_id) / "samplers").iterdir())
    assert saved == [f"step_{STEPS:08d}_mean_gaussian.npz", f"step_{STEPS:08d}_mean_gmm.npz"]  # fitted on E(x)

    r = evaluate_run(store, run_id, settings=EvalSettings(n_fd=1000, classifier_steps=500))
    assert r["fd_gmm"] < r["fd_gaussian"] < r["fd_prior"]
    assert r["fd_gaussian"] < r["fd_prior"] / 5  # the prior is no sampler for an RAE
    assert r["elbo"] is None and r["iwae"] is None and r["rate"] is None  # no posterior: no bound
    n_train = len(load_dataset(cfg.data).x_train)  # 8,000 when only the t10k files are there (20% held out)
    assert r["n_components"] == min(10_000, n_train)  # every training code of a small split
    assert 0.0 <= r["hole_fraction"] <= 1.0 and r["marginal_kl"] > 0.0
