"""`evaluate_run` on real short runs stored in a RunStore: every eval key, consistent values."""

from __future__ import annotations

import math

import pytest

from vaeviz.analysis.evaluate import KEYS, EvalSettings, evaluate_run
from vaeviz.config import RunConfig
from vaeviz.runs import RunStore
from vaeviz.samplers import GaussianSampler, GMMSampler
from vaeviz.train import train

FAST = EvalSettings(k=50, n_samples=3000, n_fd=300, classifier_steps=200)
BASE = ["model.latent_dim=2", "model.hidden=64,64", "train.steps=150", "train.eval_every=50",
        "train.checkpoint_every=50", "train.batch_size=64"]


def _run(store: RunStore, *overrides: str) -> str:
    cfg = RunConfig().with_overrides(BASE + list(overrides))
    run_id = store.create_run(cfg)
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    return run_id


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Train three tiny runs once (digits VAE, digits RAE, shapes VAE) and evaluate each."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEVIZ_HOME", str(tmp_path_factory.mktemp("home")))
        store = RunStore()
        vae = _run(store, "data.name=digits")
        rae = _run(store, "data.name=digits", "objective.name=rae")
        shapes = _run(store, "data.name=shapes", "data.size=600", "model.latent_dim=4", "train.steps=50")
        out = {name: evaluate_run(store, rid, settings=FAST) for name, rid in
               [("vae", vae), ("rae", rae), ("shapes", shapes)]}
        out["vae_step50"] = evaluate_run(store, vae, step=50, settings=FAST)
        out["trainer"] = store.metrics(vae, split="eval")
        out["store"], out["vae_id"] = store, vae
        return out


def test_every_key_and_json_safe_floats(results):
    r = results["vae"]
    assert tuple(r) == KEYS
    counts = {"active_units", "n_components"}  # whole numbers; the rest are finite floats
    assert all(isinstance(r[k], int) for k in counts)
    assert all(isinstance(v, float) and math.isfinite(v) for k, v in r.items() if k not in counts | {"mig"})
    assert r["mig"] is None  # digits has no ground-truth factors


def test_bounds_and_identities(results):
    r = results["vae"]
    assert r["elbo"] == pytest.approx(-(r["rate"] + r["distortion"]))
    assert r["elbo"] < r["iwae"] < 0.0
    assert 0.0 <= r["hole_fraction"] <= 1.0 and r["marginal_kl"] > -0.05
    assert 0 <= r["active_units"] <= 2 and r["fd_prior"] > 0 and r["fd_gmm"] > 0


def test_matches_the_trainers_last_eval(results):
    df = results["trainer"]
    last = df[df.step == df.step.max()].set_index("name")["value"]
    r = results["vae"]
    assert r["rate"] == pytest.approx(last["rate"], rel=1e-4)  # closed form: no sampling noise
    assert r["nll_sigma_free"] == pytest.approx(last["nll_sigma_free"], rel=0.02)
    assert r["active_units"] == last["active_units"]


def test_an_earlier_step_is_a_worse_model(results):
    assert results["vae_step50"]["elbo"] < results["vae"]["elbo"]


def test_deterministic_encoder_has_no_iwae_but_holes(results):
    r = results["rae"]
    assert r["iwae"] is None and r["rate"] is None and r["elbo"] is None  # no q(z|x): no rate, no bound
    assert r["distortion"] > 0.0 and math.isfinite(r["nll_sigma_free"])
    assert 0.0 <= r["hole_fraction"] <= 1.0 and math.isfinite(r["marginal_kl"])


def test_shapes_run_has_a_mig(results):
    assert 0.0 <= results["shapes"]["mig"] <= 1.0


def _no_refit(self, latents):
    raise AssertionError("a saved sampler was fitted again")


def test_eval_reads_the_runs_saved_samplers(results, monkeypatch):
    """Training saved the final step's samplers and the first eval of step 50 saved that step's: no refit."""
    store, vae = results["store"], results["vae_id"]
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))  # the feature classifier the fixture trained
    saved = {p.name for p in (store.artifact_dir(vae) / "samplers").iterdir()}
    assert saved == {f"step_{s:08d}_sample_{k}.npz" for s in (50, 150) for k in ("gaussian", "gmm")}
    for cls in (GaussianSampler, GMMSampler):
        monkeypatch.setattr(cls, "fit", _no_refit)
    assert evaluate_run(store, vae, settings=FAST)["fd_gmm"] == pytest.approx(results["vae"]["fd_gmm"], rel=1e-5)
    again = evaluate_run(store, vae, step=50, settings=FAST)
    assert again["fd_gmm"] == pytest.approx(results["vae_step50"]["fd_gmm"], rel=1e-5)
