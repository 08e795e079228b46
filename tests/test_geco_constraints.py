"""GECO's constraints of Rezende & Viola 2018 ("Taming VAEs", Table 1) beside RE: FRE (classifier features) and
CLA (classifier probability of the true label), against direct computations with the cached classifier, their
gradient into the decoder, the refusal of unlabelled data, and λ's dynamics (Algorithm 1) on digits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from vaeviz import plots
from vaeviz.analysis.quality import SampleClassifier, classifier_key, classifier_path
from vaeviz.app_state import plain
from vaeviz.build import build, feature_classifier, load_run
from vaeviz.config import ConfigError, RunConfig
from vaeviz.member import MemorySink
from vaeviz.objectives.base import forward_pass
from vaeviz.output_grads import output_grads
from vaeviz.preflight import preflight
from vaeviz.presets import preset_config
from vaeviz.runs import RunStore
from vaeviz.train import Trainer, train, train_batched

SHORT = ["train.steps=4", "train.eval_every=4", "train.probe_size=20"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The digits classifier, fitted once for this module (as `vaeviz eval` fits it): its cache file."""
    home = tmp_path_factory.mktemp("classifier_home")
    data_cfg = preset_config("geco-fre-digits").data
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEVIZ_HOME", str(home))
        feature_classifier(data_cfg)
    return classifier_path(classifier_key(data_cfg), home)


@pytest.fixture(autouse=True)
def cached_classifier(fitted, vaeviz_home):
    """Each test's fresh VAEVIZ_HOME holds the fitted classifier, as after a first `vaeviz eval`."""
    target = vaeviz_home / "classifiers" / fitted.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(fitted, target)
    return SampleClassifier.load(target)


def _pass(setup, n: int = 64, seed: int = 0):
    """An encode-sample-decode pass of the setup's untrained model over n training digits, with their labels."""
    idx = np.random.default_rng(seed).choice(len(setup.data.x_train), n, replace=False)
    x = torch.as_tensor(setup.data.x_train[idx])
    torch.manual_seed(seed)
    p = forward_pass(setup.model, x)
    p.y = torch.as_tensor(setup.data.y_train[idx])
    return p


def test_fre_is_the_squared_feature_distance_per_feature_dimension_minus_kappa2(cached_classifier):
    setup = build(preset_config("geco-fre-digits"))
    p = _pass(setup)
    with torch.no_grad():
        got = setup.objective.constraint(p).numpy()
        f_x = cached_classifier.features(p.x.numpy())  # (B, 128), the classifier's own features
        f_g = cached_classifier.features(p.x_mean.numpy())
    assert f_x.shape == (64, 128)
    np.testing.assert_allclose(got, ((f_x - f_g) ** 2).mean(1) - 0.5**2, rtol=1e-5, atol=1e-6)
    terms = setup.objective.loss(p, 1).terms
    assert terms["c_batch"].item() == pytest.approx(got.mean(), rel=1e-5)
    assert terms["kappa2"].item() == pytest.approx(0.25)


def test_cla_is_kappa_minus_the_classifier_probability_of_the_true_label(cached_classifier):
    setup = build(preset_config("geco-cla-digits"))
    p = _pass(setup)
    with torch.no_grad():
        got = setup.objective.constraint(p).numpy()
        prob = cached_classifier.net_(p.x_mean).softmax(-1).numpy()  # (B, 10)
    np.testing.assert_allclose(got, 0.9 - prob[np.arange(64), p.y.numpy()], rtol=1e-5, atol=1e-6)
    assert setup.objective.loss(p, 1).terms["kappa2"].item() == pytest.approx(0.9)  # the tolerance term, κ


@pytest.mark.parametrize("preset", ["geco-fre-digits", "geco-cla-digits"])
def test_the_gradient_reaches_the_decoder_through_the_frozen_classifier(preset, cached_classifier):
    """FRE: the gradient of R + λ·C̄. CLA: C's value is κ − p, its gradient that of log κ − log p (geco.py)."""
    setup = build(preset_config(preset).with_overrides({"objective.lambda_init": 3.0}))
    objective, decoder = setup.objective, list(setup.model.decoder.parameters())
    assert list(objective.parameters()) == [] and set(objective.state_dict()) == {"lam", "c_ma", "log_sigma_fit"}
    p = _pass(setup)
    grads = torch.autograd.grad(objective.loss(p, 1).loss, decoder, retain_graph=True)
    net = cached_classifier.net_.requires_grad_(False)
    if objective.params.constraint == "fre":
        c = (net[:-1](p.x_mean) - net[:-1](p.x)).pow(2).mean(1) - 0.25
    else:
        c = -net(p.x_mean).log_softmax(-1).gather(1, p.y[:, None]).squeeze(1)
    reference = torch.autograd.grad(p.q.kl().mean() + 3.0 * c.mean(), decoder)
    for g, r in zip(grads, reference):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in grads)
    assert not any(b.requires_grad for b in objective.judge.buffers())


@pytest.mark.parametrize("constraint", ["cla", "fre"])
def test_unlabelled_data_is_refused_before_training(constraint, tmp_path):
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.random.default_rng(0).random((40, 6), dtype=np.float32))
    cfg = RunConfig().with_overrides(SHORT + ["data.name=npz", f"data.path={path}", "objective.name=geco",
                                              f"objective.constraint={constraint}"])
    why = rf"'objective.constraint': '{constraint}' .* dataset 'npz' has no labels y"
    with pytest.raises(ConfigError, match=why):
        preflight(cfg)
    sink = MemorySink()
    with pytest.raises(ConfigError, match=why):
        train(cfg, sink)
    with pytest.raises(ConfigError, match=why):  # a batch refuses it as it builds its runs
        train_batched([cfg], [sink])
    assert sink.rows == []
    preflight(cfg.with_overrides({"objective.constraint": "re"}))  # RE needs no labels


def test_fre_and_cla_train_with_autograd_and_the_loss_sees_the_labels():
    """The hand-derived gradient of `output_grads` is RE's: fre and cla runs take autograd. A CLA run batched
    with a VAE gets its own labels (its rows of the stacked batch) and follows its solo run."""
    cfgs = {c: preset_config("geco-digits").with_overrides(SHORT + [f"objective.constraint={c}"])
            for c in ("re", "fre", "cla")}
    for c, cfg in cfgs.items():
        trainer = Trainer([cfg], [MemorySink()])
        assert trainer.analytic is (c == "re")
        assert (output_grads(trainer.members[0].s.objective) is None) is (c != "re")
    vae = cfgs["cla"].with_overrides({"objective.name": "vae"})
    solo, pair = MemorySink(), [MemorySink(), MemorySink()]
    train(cfgs["cla"], solo)
    assert all(isinstance(r.steps, int) for r in train_batched([vae, cfgs["cla"]], pair))
    np.testing.assert_allclose(pair[1].series("c_batch")[1], solo.series("c_batch")[1], rtol=1e-4, atol=1e-6)


def _run(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train `cfg`; its steps, logged λ (the λ each step used) and C_ma."""
    sink = MemorySink()
    train(cfg, sink)
    steps, lam = sink.series("lambda")
    _, c_ma = sink.series("c_ma")
    assert (steps == np.arange(1, len(steps) + 1)).all()
    return steps, lam, c_ma


@pytest.mark.slow
@pytest.mark.parametrize("preset,nu", [("geco-fre-digits", 0.01), ("geco-cla-digits", 0.05)])
def test_lambda_rises_until_the_constraint_holds_then_falls(preset, nu):
    """Algorithm 1 on digits for 3,000 steps: λ_{t+1} = λ_t·exp(ν·C_ma,t) (inside its clamps), so λ rises while
    C_ma > 0, peaks at the step t₀ where C_ma first turns ≤ 0 and falls from there; the constraint holds on
    average from t₀ on (CLA: C_ma then hovers at 0, the GECO equilibrium), and FRE still holds at the end."""
    cfg = preset_config(preset).with_overrides({"train.steps": 3000, "train.eval_every": 3000})
    assert cfg.objective.params.nu == nu
    steps, lam, c_ma = _run(cfg)
    np.testing.assert_allclose(lam[1:], lam[:-1] * np.exp(nu * c_ma[:-1]), rtol=1e-4)  # no clamp reached
    t0 = int(np.argmax(c_ma <= 0))  # index of the first step with C_ma ≤ 0
    assert c_ma[t0] <= 0 and (c_ma[:t0] > 0).all() and 100 < steps[t0] < 1000
    rise = np.diff(lam[: t0 + 1])  # 0 only where ν·C_ma is below float32 resolution, just before t₀
    assert (rise >= 0).all() and (rise[c_ma[:t0] > 1e-4] > 0).all() and lam[t0 + 1] < lam[t0]
    assert lam.max() == lam[t0] and lam[-1] < lam[t0] / 10  # the peak, then a fall by more than 10×
    assert c_ma[t0:].mean() < 0
    if preset == "geco-fre-digits":
        assert c_ma[-1] < 0



def test_the_geco_page_names_the_constraint_its_units_and_a_clamp_hit(vaeviz_home, monkeypatch):
    """A CLA run with ν = 1: λ reaches λ_max within a few dozen steps (C starts ≈ 0.8), and the page says so."""
    from test_app import app, make_run, page, problems

    store = RunStore(vaeviz_home)
    run = make_run(store, {"objective.name": "geco", "objective.constraint": "cla", "objective.kappa": 0.9,
                           "objective.nu": 1.0, "train.steps": 60, "train.eval_every": 60})
    lam = plots.wide(store.metrics(run, split="train"))["lambda"]
    reached = int(lam.index[lam >= 1e8][0])
    at = page(app(store, monkeypatch, run=run), "geco")
    assert not problems(at)
    assert any(plain("classification (CLA), C in probability of the true label") in c.value for c in at.caption)
    assert [w.value for w in at.warning] == [plain(
        f"λ reached its clamp during the run (λ_max = 1e+08 at step {reached}). While λ sits at a clamp it stops "
        "following exp(ν·C_ma), and Adam's memory of the huge or tiny gradients of those steps can stall the rate "
        "for hundreds of steps; a smaller ν keeps λ inside its clamps.")]
    figure = plots.geco_constraint_dynamics(store.metrics(run, split="train"), "classification (CLA)",
                                            "probability of the true label", bounds_mse=False)
    assert figure.layout.annotations[1].text == "constraint C and its moving average"
    assert figure.layout.yaxis2.title.text == "C: probability of the true<br>label"  # the constraint's own units
    assert not any(t.name.startswith("κ²") for t in figure.data)


def test_a_saved_fre_run_resumes_and_loads_without_the_classifier_in_its_checkpoint(tmp_path):
    cfg = preset_config("geco-fre-digits").with_overrides(SHORT + ["train.dtype=float64"])
    train(cfg, MemorySink(), workdir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(saved["objective"]) == {"lam", "c_ma", "log_sigma_fit"}
    setup, step = load_run(cfg, tmp_path)
    assert step == 4 and setup.objective.judge.weight0.dtype == torch.float64
    assert setup.objective.lam.item() == pytest.approx(saved["objective"]["lam"].item())
    longer = cfg.with_overrides({"train.steps": 6})
    assert train(longer, MemorySink(), workdir=tmp_path, resume=True).steps == 6
