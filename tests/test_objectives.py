"""σ-VAE, GECO, RAE and β-TCVAE against closed forms, hand-computed equations and autograd oracles."""

import math

import numpy as np
import pytest
import torch

from vaeviz.config import ConfigError, ModelConfig, RunConfig
from vaeviz.distributions import LOG_2PI, Posterior
from vaeviz.nets import build_model
from vaeviz.objectives import REGISTRY, build_objective
from vaeviz.objectives.base import forward_pass
from vaeviz.objectives.beta_tcvae import kl_decomposition, log_importance_weights
from vaeviz.objectives.rae import decoder_sq_norm
from vaeviz.objectives.sigma_vae import softclip

D, L, B = 16, 3, 32


def make(name: str, latent: int = L, dim: int = D, **knobs):
    """An objective of `name` with `knobs`, and a small MLP model built for it (seeded)."""
    cfg = RunConfig().with_overrides({"objective.name": name, **{f"objective.{k}": v for k, v in knobs.items()}})
    torch.manual_seed(0)
    obj = build_objective(cfg.objective, dim)
    model = build_model(ModelConfig(latent_dim=latent, hidden=[32]), (dim,), obj.net_spec())
    return obj, model


def batch(n: int = B, dim: int = D, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def forward_and_pass(obj, model, x, step=1, seed=7):
    """The objective's Losses and the very same encode-sample-decode pass (same ε)."""
    torch.manual_seed(seed)
    losses = obj(model, x, step)
    torch.manual_seed(seed)
    with torch.no_grad():
        p = forward_pass(model, x)
    return losses, p


def test_registry_and_knob_validation():
    assert {"vae", "beta_vae", "sigma_vae", "geco", "rae", "beta_tcvae"} <= set(REGISTRY)
    bad = [["objective.name=geco", "objective.kappa=0"], ["objective.name=sigma_vae", "objective.variance=x"],
           ["objective.name=rae", "objective.variant=vq"], ["objective.name=beta_tcvae", "objective.estimator=foo"]]
    for pairs in bad:
        with pytest.raises(ConfigError, match=pairs[1].split("=")[0]):
            RunConfig().with_overrides(pairs)
    cfg = RunConfig().with_overrides(["objective.name=geco", "objective.lambda_init=10", "objective.lambda_max=5"])
    with pytest.raises(ConfigError, match="lambda_init"):
        build_objective(cfg.objective, D)


# ----------------------------------------------------------------------------- σ-VAE


def test_sigma_vae_closed_form_is_the_batch_mse_and_nll_is_eq4_by_hand():
    obj, model = make("sigma_vae", variance="global_closed_form")
    x = batch()
    losses, p = forward_and_pass(obj, model, x)
    err = (x.double() - p.x_mean.double()).pow(2)  # (B, D)
    mse = err.mean()
    assert losses.terms["sigma2"].item() == pytest.approx(mse.item(), rel=1e-5)
    # eq. 4 by hand with σ² = σ*²: d/2 log 2π + d log σ + ‖x − g(z)‖² / (2σ²), averaged over the batch
    nll = (D / 2 * math.log(2 * math.pi) + D * 0.5 * torch.log(mse) + err.sum(1) / (2 * mse)).mean()
    assert losses.terms["distortion"].item() == pytest.approx(nll.item(), rel=1e-5)
    # at the optimum the quadratic term is d/2, so D = d/2 (log 2πσ*² + 1)
    assert nll.item() == pytest.approx(D / 2 * (math.log(2 * math.pi * mse.item()) + 1), rel=1e-9)
    kl = p.q.kl().double().mean()
    assert losses.loss.item() == pytest.approx((nll + kl).item(), rel=1e-5)
    assert list(obj.parameters()) == []  # σ* is solved for, not learned
    np.testing.assert_allclose(obj.state_arrays()["sigma2"], np.full(D, mse.item()), rtol=1e-5)


@pytest.mark.parametrize("variance", ["global_learned", "per_dim"])
def test_sigma_vae_learned_sigma_descends_to_the_mse_with_a_frozen_decoder(variance):
    obj, model = make("sigma_vae", variance=variance)
    model.requires_grad_(False)
    with torch.no_grad():
        p = forward_pass(model, batch(256))  # frozen networks and a fixed sample: the target is exact
    opt = torch.optim.Adam(obj.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        obj.nll(p).mean().backward()
        opt.step()
    sigma2 = torch.exp(2 * softclip(obj.log_sigma, obj.log_min)).detach()
    err = (p.x - p.x_mean).pow(2)
    target = err.mean() if variance == "global_learned" else err.mean(0)  # σ*² per shared σ or per dimension
    np.testing.assert_allclose(sigma2.numpy(), target.numpy(), rtol=0.02)


def test_sigma_vae_soft_floor_keeps_sigma_above_sigma_min():
    s = torch.linspace(-30, 5, 50)
    out = softclip(s, math.log(0.01))
    assert (out >= math.log(0.01)).all() and torch.allclose(out[-1], s[-1], atol=1e-3)
    obj, model = make("sigma_vae", variance="global_closed_form", sigma_min=0.5)  # floor above the MSE
    losses, _ = forward_and_pass(obj, model, batch())
    assert losses.terms["sigma2"].item() == pytest.approx(0.25, rel=1e-6)


def test_sigma_vae_network_head_switches_on_after_the_warmup():
    obj, model = make("sigma_vae", variance="network", warmup_steps=2)
    head = model.decoder.log_sigma
    x = batch()
    for step in (1, 2):
        losses, p = forward_and_pass(obj, model, x, step)
        assert losses.terms["sigma2"].item() == pytest.approx(p.mse().item(), rel=1e-5)
        for name in ("sigma2_min", "sigma2_max"):
            assert losses.terms[name].item() == pytest.approx(p.mse().item(), rel=1e-5)
        losses.loss.backward()
        assert head.weight.grad is None  # the head gets no gradient during the warm-up
    assert obj.log_sigma_ref.item() == pytest.approx(0.5 * math.log(p.mse().item()), rel=1e-5)
    losses, p = forward_and_pass(obj, model, x, 3)
    losses.loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    sigma2 = torch.exp(2 * softclip(p.out.log_sigma + obj.log_sigma_ref, obj.log_min))  # (B, D)
    assert losses.terms["sigma2_min"].item() == pytest.approx(sigma2.min().item(), rel=1e-5)
    assert losses.terms["sigma2_max"].item() == pytest.approx(sigma2.max().item(), rel=1e-5)
    assert obj.state_arrays()["sigma2"].shape == (D,)
    obj.after_step(losses, 3)
    assert obj.nll(p).shape == (B,)


def test_sigma_vae_per_image_closed_form_is_each_images_mse_floored_and_nll_is_eq4_per_image():
    x = batch()
    obj, model = make("sigma_vae", variance="per_image_closed_form")
    _, p = forward_and_pass(obj, model, x)
    mse_i = (x.double() - p.x_mean.double()).pow(2).mean(1)  # (B,) each image's MSE per dimension
    floor = float(mse_i.median()) ** 0.5  # σ_min at the median image's RMSE: the hard floor binds half the batch
    obj, model = make("sigma_vae", variance="per_image_closed_form", sigma_min=floor)
    losses, p = forward_and_pass(obj, model, x)
    sigma2_i = mse_i.clamp_min(floor**2)  # σ*²_i = max(‖x_i − g(z_i)‖²/d, σ_min²)
    assert 0 < int((mse_i < floor**2).sum()) < B
    got = obj.state_arrays()["sigma2_per_image"]
    assert got.shape == (B,)
    np.testing.assert_allclose(got, sigma2_i.numpy(), rtol=1e-5)
    err = (x.double() - p.x_mean.double()).pow(2).sum(1)  # (B,) ‖x_i − g(z_i)‖²
    nll = (D / 2 * LOG_2PI + D / 2 * sigma2_i.log() + err / (2 * sigma2_i)).mean()  # eq. 4 at σ*_i
    assert losses.terms["distortion"].item() == pytest.approx(nll.item(), rel=1e-5)
    assert losses.terms["sigma2"].item() == pytest.approx(sigma2_i.mean().item(), rel=1e-5)
    assert losses.terms["sigma2_min"].item() == pytest.approx(floor**2, rel=1e-5)
    assert losses.terms["sigma2_max"].item() == pytest.approx(sigma2_i.max().item(), rel=1e-5)
    assert list(obj.parameters()) == []  # σ*_i is solved for, not learned


@pytest.mark.parametrize("variance", ["global_closed_form", "per_image_closed_form"])
def test_sigma_vae_closed_forms_score_held_out_data_at_the_calibrated_training_sigma(variance):
    obj, model = make("sigma_vae", variance=variance)
    _, p = forward_and_pass(obj, model, batch())
    with pytest.raises(RuntimeError, match="calibrate"):
        obj.nll(p)  # σ* of the training split is unknown: no σ refitted on the scored batch instead
    obj.calibrate(0.02)
    expected = D / 2 * math.log(2 * math.pi * 0.02) + (p.x - p.x_mean).double().pow(2).sum(1) / (2 * 0.02)
    np.testing.assert_allclose(obj.nll(p).numpy(), expected.numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------- GECO


def _geco_steps(obj, model, x, n):
    lams, cmas, cbatches = [obj.lam.item()], [], []
    for step in range(1, n + 1):
        losses = obj(model, x, step)
        assert losses.terms["lambda"].item() == pytest.approx(lams[-1])  # the λ this step used
        obj.after_step(losses, step)
        lams.append(obj.lam.item())
        cmas.append(losses.terms["c_ma"].item())
        cbatches.append(losses.terms["c_batch"].item())
    return np.array(lams), np.array(cmas), np.array(cbatches)


@pytest.mark.parametrize("kappa,direction", [(0.01, 1), (0.99, -1)])
def test_geco_lambda_rises_while_violated_and_falls_once_met(kappa, direction):
    obj, model = make("geco", kappa=kappa, nu=0.5, alpha=0.9)
    lams, cmas, cbatches = _geco_steps(obj, model, batch(), 6)
    assert np.sign(cmas).tolist() == [direction] * 6
    assert (np.sign(np.diff(lams)) == direction).all()  # strictly monotone
    np.testing.assert_allclose(lams[1:], lams[:-1] * np.exp(0.5 * cmas), rtol=1e-5)  # λ ← λ·exp(ν·C_ma)
    expected = [cbatches[0]]  # C_ma starts at the first batch's value
    for c in cbatches[1:]:
        expected.append(0.9 * expected[-1] + 0.1 * c)
    np.testing.assert_allclose(cmas, expected, rtol=1e-5)


def test_geco_lambda_is_clamped():
    obj, model = make("geco", kappa=0.01, nu=100.0, lambda_max=50.0)
    lams, _, _ = _geco_steps(obj, model, batch(), 3)
    assert lams[-1] == pytest.approx(50.0)


def test_geco_gradient_is_that_of_rate_plus_lambda_times_the_batch_constraint():
    obj, model = make("geco", kappa=0.1, lambda_init=3.0)
    x = batch()
    _geco_steps(obj, model, x, 2)  # C_ma now differs from the next batch's C̄
    lam, c_ma_before = obj.lam.item(), obj.c_ma.item()
    params = list(model.parameters())
    losses, p = forward_and_pass(obj, model, x, step=3)
    grads = torch.autograd.grad(losses.loss, params)
    torch.manual_seed(7)
    p = forward_pass(model, x)
    c_batch = ((p.x - p.x_mean).pow(2).mean(1) - 0.01).mean()
    reference = p.q.kl().mean() + lam * c_batch
    for g, r in zip(grads, torch.autograd.grad(reference, params)):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
    c_ma = 0.99 * c_ma_before + 0.01 * c_batch.item()
    assert losses.terms["c_ma"].item() == pytest.approx(c_ma, rel=1e-5)
    assert losses.loss.item() == pytest.approx(p.q.kl().mean().item() + lam * c_ma, rel=1e-5)  # value uses C_ma
    assert losses.terms["kappa2"].item() == pytest.approx(0.01)


# ----------------------------------------------------------------------------- RAE


def _jacobian_sq_norm_by_rows(model, z):
    """‖∂D/∂z‖²_F per example by reverse mode, one output dimension at a time (D backward passes)."""
    z = z.detach().requires_grad_(True)
    out = model.decode_mean(z)  # (B, D); example i depends on z_i only
    rows = [torch.autograd.grad(out[:, k].sum(), z, create_graph=True)[0] for k in range(out.shape[1])]
    return torch.stack(rows).pow(2).sum((0, 2))  # (B,)


def test_rae_gp_penalty_equals_the_autograd_jacobian_norm_and_its_gradient():
    obj, model = make("rae", variant="gp", beta=0.1, reg_weight=0.5)
    x = batch()
    losses, p = forward_and_pass(obj, model, x)
    reference = _jacobian_sq_norm_by_rows(model, p.z).mean()
    assert losses.terms["reg"].item() == pytest.approx(reference.item(), rel=1e-5)
    params = list(model.decoder.parameters())
    ours = torch.autograd.grad(obj.regulariser(model, p.z), params)
    for g, r in zip(ours, torch.autograd.grad(reference, params)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    sq = (p.x - p.x_mean).pow(2).sum(1).mean()
    z_term = 0.5 * p.z.pow(2).sum(1).mean()
    assert losses.loss.item() == pytest.approx((sq + 0.1 * z_term + 0.5 * reference).item(), rel=1e-5)


def test_rae_l2_ae_and_none_losses_by_hand():
    x = batch()
    for variant in ("l2", "none", "ae"):
        obj, model = make("rae", variant=variant, beta=0.1, reg_weight=1e-3)
        losses, p = forward_and_pass(obj, model, x)
        torch.testing.assert_close(p.z, model.encode(x).mu)  # deterministic encoder
        sq = (p.x - p.x_mean).pow(2).sum(1).mean().item()
        z_term = 0.5 * p.z.pow(2).sum(1).mean().item()
        theta = sum(float(w.detach().double().pow(2).sum()) for w in model.decoder.parameters())
        expected = {"l2": sq + 0.1 * z_term + 1e-3 * theta, "none": sq + 0.1 * z_term, "ae": sq}[variant]
        assert losses.loss.item() == pytest.approx(expected, rel=1e-5)
        assert losses.terms["distortion"].item() == pytest.approx(sq, rel=1e-6)
        assert losses.terms["rate"].item() == 0.0 and losses.terms["z_norm"].item() == pytest.approx(z_term, rel=1e-6)
        if variant == "l2":
            assert losses.terms["reg"].item() == pytest.approx(float(decoder_sq_norm(model).detach()), rel=1e-6)


def test_rae_sn_decoder_layers_have_top_singular_value_at_most_one():
    obj, model = make("rae", variant="sn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = batch(64)
    for step in range(1, 41):
        opt.zero_grad()
        obj(model, x, step).loss.backward()
        opt.step()
    layers = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 2 and all(hasattr(m, "parametrizations") for m in layers)
    tops = [torch.linalg.matrix_norm(m.weight.detach(), ord=2).item() for m in layers]
    assert max(tops) <= 1.01 and min(tops) > 0.9, tops


# ----------------------------------------------------------------------------- β-TCVAE


def test_mss_importance_weights():
    n, b = 1000, 6
    w = log_importance_weights(b, n, "mss").exp()
    m = b - 1
    torch.testing.assert_close(w.sum(1), torch.ones(b))  # each row sums to 1
    torch.testing.assert_close(w.diagonal(), torch.full((b,), 1 / n))
    torch.testing.assert_close(w[torch.arange(b), (torch.arange(b) + 1) % b], torch.full((b,), (n - m) / (n * m)))
    assert ((w - 1 / m).abs() < 1e-6).sum() == b * (b - 2)
    torch.testing.assert_close(log_importance_weights(b, n, "mws"), torch.full((b, b), -math.log(n * b)))


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_of_independent_gaussian_codes_is_the_estimators_constant(estimator):
    """Every example has the same factorised posterior N(m, diag s²), so q(z) = N(m, diag s²) itself and the true
    MI and TC are 0. With log q(z_i) ≈ logsumexp_j (log w_ij + log q(z_i|x_j)) and q(·|x_j) all equal,
    log q̂(z_i) = log q(z_i) + log Σ_j w_ij, and likewise log q̂(z_ik) = log q_k(z_ik) + log Σ_j w_ij for each of
    the L dimensions. So TC = log q̂(z) − Σ_k log q̂(z_k) = (1 − L)·log Σ_j w_ij and MI = −log Σ_j w_ij.
    MWS: w_ij = 1/(N·M), Σ_j w_ij = 1/N  →  TC = (L − 1)·log N, MI = log N, for every sample.
    MSS: each row of weights sums to 1  →  TC = MI = 0 exactly."""
    n, b, lat = 5000, 128, 5
    g = torch.Generator().manual_seed(0)
    m, logvar = torch.randn(lat, generator=g), torch.randn(lat, generator=g) * 0.3
    q = Posterior(m.expand(b, lat), logvar=logvar.expand(b, lat))
    z = q.rsample(generator=g)
    mi, tc, dim_kl = kl_decomposition(z, q, log_importance_weights(b, n, estimator))
    tc_const, mi_const = ((lat - 1) * math.log(n), math.log(n)) if estimator == "mws" else (0.0, 0.0)
    torch.testing.assert_close(tc, torch.full((b,), tc_const), atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(mi, torch.full((b,), mi_const), atol=2e-4, rtol=1e-5)
    one_sample_kl = q.log_prob(z) - (-0.5 * (LOG_2PI + z.pow(2))).sum(-1)
    torch.testing.assert_close(mi + tc + dim_kl, one_sample_kl, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_mi_and_tc_of_codes_apart_from_one_another_are_the_captions_figures(estimator):
    """Posteriors apart from one another in every dimension (means 50 apart, σ = 0.01): in each logsumexp only the
    sample's own example counts, log q̂(z_i) = log w_ii + log q(z_i|x_i) and log q̂(z_ik) = log w_ii + log q(z_ik|x_i).
    So MI = −log w_ii and TC = −(L − 1)·log w_ii, whatever the true MI (at most log N): log(N·M) and
    (L − 1)·log(N·M) for MWS (w_ii = 1/(N·M)), log N and (L − 1)·log N for MSS (w_ii = 1/N)."""
    n, b, lat = 5000, 64, 5
    g = torch.Generator().manual_seed(0)
    mu = torch.stack([torch.randperm(b, generator=g) * 50.0 for _ in range(lat)], 1)  # (B, L)
    q = Posterior(mu, logvar=torch.full((b, lat), math.log(1e-4)))
    z = q.rsample(generator=g)
    mi, tc, _ = kl_decomposition(z, q, log_importance_weights(b, n, estimator))
    unit = math.log(n * b) if estimator == "mws" else math.log(n)
    torch.testing.assert_close(mi, torch.full((b,), unit), atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(tc, torch.full((b,), (lat - 1) * unit), atol=2e-4, rtol=1e-5)
    assert "MI ≈ log(N·M) and TC ≈ (L−1)·log(N·M)" in REGISTRY["beta_tcvae"].chart_caption


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_mi_tc_dimkl_sum_to_the_batch_kl_within_sampling_error(covariance):
    b, lat = 1024, 4
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(b, lat, generator=g)
    if covariance == "diag":
        q = Posterior(mu, logvar=torch.rand(b, lat, generator=g) * 2 - 2)
    else:
        tril = torch.tril(torch.randn(b, lat, lat, generator=g) * 0.3, -1) + torch.diag_embed(
            torch.rand(b, lat, generator=g) * 0.5 + 0.3)
        q = Posterior(mu, scale_tril=tril)
    z = q.rsample(generator=g)
    for estimator in ("mws", "mss"):
        total = sum(kl_decomposition(z, q, log_importance_weights(b, 60000, estimator)))  # (B,)
        kl = q.kl()
        se = (total - kl).std() / math.sqrt(b)
        assert abs(total.mean() - kl.mean()) < 4 * se, (total.mean(), kl.mean(), se)


def test_beta_tcvae_loss_combines_the_terms_and_takes_the_dataset_size():
    obj, model = make("beta_tcvae", alpha=0.5, beta=6.0, gamma=2.0, estimator="mws")
    obj.set_dataset_size(1000)
    assert obj.n_data == 1000
    x = batch()
    losses, p = forward_and_pass(obj, model, x)
    mi, tc, dim_kl = (t.mean().item() for t in kl_decomposition(p.z, p.q, log_importance_weights(B, 1000, "mws")))
    t = losses.terms
    assert (t["mi"].item(), t["tc"].item(), t["dim_kl"].item()) == pytest.approx((mi, tc, dim_kl), rel=1e-5)
    expected = t["distortion"].item() + 0.5 * mi + 6.0 * tc + 2.0 * dim_kl
    assert losses.loss.item() == pytest.approx(expected, rel=1e-5)
    fixed, _ = make("beta_tcvae", dataset_size=50)
    fixed.set_dataset_size(1000)  # an explicit objective.dataset_size wins
    assert fixed.n_data == 50
