"""Held-out evaluation of one fixed model: σ* measured on the training split, posterior noise fixed per example,
the σ-independent NLL at the training σ*, and no rate or ELBO for a deterministic encoder."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vaeviz import plots
from vaeviz.analysis.likelihood import (
    NOISE_BLOCK,
    TRAIN_MSE_EXAMPLES,
    ExampleNoise,
    calibrate,
    elbo_terms,
    iwae_per_example,
    sigma_free_nll,
    train_mse,
)
from vaeviz.config import RunConfig
from vaeviz.distributions import Posterior, kl_diag_std_normal
from vaeviz.heldout import evaluate
from vaeviz.member import MemorySink
from vaeviz.nets import DecoderOut
from vaeviz.objective_params import GECOParams, SigmaVAEParams
from vaeviz.objectives import GECO, SigmaVAE
from vaeviz.runs import RunStore
from vaeviz.train import Trainer

BASE = ["data.name=digits", "model.hidden=64,64", "model.latent_dim=4", "train.batch_size=64",
        "train.eval_every=100", "train.checkpoint_every=1000"]
FIXED_SIGMA = {"sigma_vae": ["objective.name=sigma_vae", "objective.variance=global_closed_form"],
               "geco": ["objective.name=geco", "objective.kappa=0.2"]}


def _trained(overrides, steps=200):
    """A run trained in memory: (its member, its sink)."""
    sink = MemorySink()
    trainer = Trainer([RunConfig().with_overrides([*BASE, f"train.steps={steps}", *overrides])], [sink])
    trainer.run()
    return trainer.members[0], sink


@pytest.fixture(scope="module")
def fixed_sigma_runs():
    return {name: _trained(overrides) for name, overrides in FIXED_SIGMA.items()}


@pytest.mark.parametrize("name", list(FIXED_SIGMA))
def test_heldout_elbo_distortion_and_iwae_do_not_depend_on_the_chunk_size(fixed_sigma_runs, name):
    """Chunks of 1, 7, 500 examples and the whole split give the same figures to 1e-6 relative: before this,
    σ* was refitted per chunk and the noise followed the chunking (several nats apart on sigma-vae-digits)."""
    member, _ = fixed_sigma_runs[name]
    model, objective, x, x_train = member.s.model, member.s.objective, member.x_eval, member.x
    rng = torch.get_rng_state()
    got = {}
    for batch in (1, 7, 500, len(x)):
        mse = calibrate(model, objective, x_train, seed=3, batch=batch)
        terms = elbo_terms(model, objective, x, batch=batch, seed=3, train_mse=mse)
        iwae = iwae_per_example(model, objective, x, k=10, seed=3, batch=batch)
        got[batch] = {**terms, "train_mse": mse, "iwae": float(iwae.mean()), "per_example": iwae}
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG stream is left alone
    whole = got[len(x)]
    for batch, r in got.items():
        for key in ("elbo", "distortion", "rate", "nll_sigma_free", "train_mse", "iwae"):
            assert r[key] == pytest.approx(whole[key], rel=1e-6), (batch, key)
        # per example, float32 log-weights of a few hundred nats keep ~1e-4 nats of matmul rounding
        np.testing.assert_allclose(r["per_example"], whole["per_example"], rtol=1e-6, atol=2e-4)
    assert whole["elbo"] < whole["iwae"]


@pytest.mark.parametrize("name", list(FIXED_SIGMA))
def test_the_trainers_heldout_metrics_are_those_of_the_calibrated_model(fixed_sigma_runs, name):
    """The trainer's last eval row is `calibrate` on the training split then `elbo_terms` under its seed."""
    member, sink = fixed_sigma_runs[name]
    seed = member.cfg.train.seed * 1_000_003 + member.cfg.train.steps
    mse = calibrate(member.s.model, member.s.objective, member.x, seed)
    assert float(member.s.objective.log_sigma_fit) == pytest.approx(0.5 * math.log(mse), rel=1e-6)  # a float32 buffer
    expected = elbo_terms(member.s.model, member.s.objective, member.x_eval, seed=seed, train_mse=mse)
    for key in ("elbo", "rate", "distortion", "mse", "nll_sigma_free"):
        assert sink.series(key, "eval")[1][-1] == pytest.approx(expected[key], rel=1e-6), key


class ConstantDecoder(nn.Module):
    """A diagonal-Gaussian encoder and a decoder whose mean is the constant c whatever z: every MSE is the closed
    form mean (x − c)², whatever the posterior noise. Its float64 parameters make the evaluation float64."""

    dim, latent_dim = 6, 2

    def __init__(self, c: float):
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(math.log(c / (1 - c)), dtype=torch.float64))
        self.w = nn.Parameter(torch.linspace(-1, 1, 12, dtype=torch.float64).view(6, 2))

    def encode(self, x):
        mu = x @ self.w  # (B, 2)
        return Posterior(mu, logvar=torch.full_like(mu, -1.0))

    def decode(self, z):
        return DecoderOut(self.logit.expand(len(z), 6))


def _splits():
    """Training and eval splits whose MSEs around 0.5 differ (0.04 against 0.09 in expectation)."""
    g = torch.Generator().manual_seed(0)
    x_train = (0.5 + 0.2 * torch.randn(700, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    x_eval = (0.5 + 0.3 * torch.randn(300, 6, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x_train, x_eval


def test_sigma_free_nll_uses_the_training_sigma_on_the_eval_split_float64():
    """NLL* = d/2 · log 2πσ*² + SSE_eval / (2σ*² n) = d/2 (log 2πσ*² + r), σ*² = MSE_train, r = MSE_eval/MSE_train."""
    model, (x_train, x_eval) = ConstantDecoder(0.5), _splits()
    mse_train, mse_eval = float((x_train - 0.5).pow(2).mean()), float((x_eval - 0.5).pow(2).mean())
    assert mse_eval > 1.5 * mse_train
    d, n = 6, len(x_eval)
    expected = d / 2 * math.log(2 * math.pi * mse_train) + float((x_eval - 0.5).pow(2).sum()) / (2 * mse_train * n)
    assert expected == pytest.approx(d / 2 * (math.log(2 * math.pi * mse_train) + mse_eval / mse_train), rel=1e-12)
    assert train_mse(model, x_train, batch=33) == pytest.approx(mse_train, rel=1e-12)
    got = sigma_free_nll(model, None, x_eval, batch=33, x_train=x_train)
    assert got == pytest.approx(expected, rel=1e-9)
    own = d / 2 * (math.log(2 * math.pi * mse_eval) + 1.0)  # σ* refitted on the eval split: lower
    assert sigma_free_nll(model, None, x_eval) == pytest.approx(own, rel=1e-9) and own < got


@pytest.mark.parametrize("objective", [SigmaVAE(SigmaVAEParams(variance="global_closed_form"), 6),
                                       SigmaVAE(SigmaVAEParams(variance="per_image_closed_form"), 6),
                                       GECO(GECOParams(), 6)], ids=["sigma_vae", "sigma_vae_per_image", "geco"])
def test_every_heldout_metric_uses_the_one_sigma_of_the_training_split_float64(objective):
    """After `calibrate`, D of the eval split is eq. 4 at σ*² = MSE_train, which is NLL*; R is the closed-form KL."""
    model, (x_train, x_eval) = ConstantDecoder(0.5), _splits()
    objective.double()
    with pytest.raises(RuntimeError, match="calibrate"):
        elbo_terms(model, objective, x_eval)
    mse = calibrate(model, objective, x_train, seed=5, batch=7)
    assert mse == pytest.approx(float((x_train - 0.5).pow(2).mean()), rel=1e-12)
    terms = elbo_terms(model, objective, x_eval, batch=7, seed=5, train_mse=mse)
    assert terms["distortion"] == pytest.approx(terms["nll_sigma_free"], rel=1e-9)
    with torch.no_grad():
        q = model.encode(x_eval)
    assert terms["rate"] == pytest.approx(float(kl_diag_std_normal(q.mu, q.logvar).mean()), rel=1e-9)
    assert terms["elbo"] == pytest.approx(-(terms["rate"] + terms["distortion"]), rel=1e-12)


def test_nll_star_of_a_float64_run_is_the_closed_form_at_its_training_mse():
    member, sink = _trained(["objective.name=vae", "train.dtype=float64"], steps=100)
    model, x, x_train = member.s.model, member.x_eval, member.x
    assert next(model.parameters()).dtype == torch.float64
    mse_train = train_mse(model, x_train, seed=11)
    terms = elbo_terms(model, member.s.objective, x, seed=11, train_mse=mse_train)
    expected = model.dim / 2 * (math.log(2 * math.pi * mse_train) + terms["mse"] / mse_train)
    assert terms["nll_sigma_free"] == pytest.approx(expected, rel=1e-9)
    refitted = model.dim / 2 * (math.log(2 * math.pi * terms["mse"]) + 1.0)  # σ*² fitted on the eval split itself
    assert expected > refitted  # that σ* minimises the eval NLL: the training σ* scores above it unless r = 1
    assert sigma_free_nll(model, member.s.objective, x, seed=11, x_train=x_train) == pytest.approx(
        terms["nll_sigma_free"], rel=1e-12)


def test_example_noise_is_fixed_by_seed_and_example_index():
    like = torch.zeros((), dtype=torch.float32)
    whole = ExampleNoise(4, 1, (3,), like).take(0, 3 * NOISE_BLOCK + 5)  # (N, 3)
    noise, edges = ExampleNoise(4, 1, (3,), like), [0, 1, 8, NOISE_BLOCK, NOISE_BLOCK + 1, 3 * NOISE_BLOCK + 5]
    parts = [noise.take(a, b) for a, b in zip(edges, edges[1:])]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(ExampleNoise(4, 1, (3,), like).take(NOISE_BLOCK - 2, NOISE_BLOCK + 2),
                       whole[NOISE_BLOCK - 2:NOISE_BLOCK + 2])
    assert not torch.equal(ExampleNoise(5, 1, (3,), like).take(0, 8), whole[:8])  # another seed
    assert not torch.equal(ExampleNoise(4, 2, (3,), like).take(0, 8), whole[:8])  # another stream
    assert abs(float(whole.mean())) < 0.1 and abs(float(whole.std()) - 1) < 0.1
    big = ExampleNoise(4, 2, (300, 70), like)  # k·L = 21,000 normals per example: blocks of fewer examples
    assert big.rows == 49 and big.take(0, 100).shape == (100, 300, 70)
    again = ExampleNoise(4, 2, (300, 70), like)
    assert torch.equal(torch.cat([big.take(0, 30), big.take(30, 100)]), again.take(0, 100))


def test_train_mse_reads_the_first_10000_training_examples():
    model = ConstantDecoder(0.5)
    x = torch.cat([torch.full((TRAIN_MSE_EXAMPLES, 6), 0.4, dtype=torch.float64),
                   torch.full((50, 6), 1.0, dtype=torch.float64)])  # the last 50 lie beyond the limit
    assert train_mse(model, x) == pytest.approx(0.01, rel=1e-12)
    assert train_mse(model, x[-60:]) == pytest.approx((10 * 0.01 + 50 * 0.25) / 60, rel=1e-12)  # a small split: all


def test_a_deterministic_encoder_logs_no_rate_or_elbo_but_its_code_norm():
    member, sink = _trained(["objective.name=rae"], steps=20)
    names = {n for _, split, n, _ in sink.rows if split == "eval"}
    assert {"distortion", "nll_sigma_free", "mse", "active_units", "z_norm"} <= names
    assert not names & {"elbo", "rate"}  # absent, not 0: there is no q(z|x)
    with torch.no_grad():
        mu = member.s.model.encode(member.x_eval).mu.double()  # (N, L)
    assert sink.series("z_norm", "eval")[1][-1] == pytest.approx(float(0.5 * mu.pow(2).sum(1).mean()), rel=1e-6)
    again = evaluate(member.s.model, member.s.objective, member.x_eval, member.x, seed=0)
    assert "rate" not in again and "elbo" not in again and again["z_norm"] > 0


# ----------------------------------------------------------------------------- pages and figures


def test_code_plane_and_sigma_spread_figures():
    rows = [(s, sp, n, v) for s in (0, 50, 100) for sp, n, v in
            [("eval", "z_norm", 3.0 - s / 50), ("eval", "distortion", 9.0 - s / 25), ("train", "rate", 0.0)]]
    df = pd.DataFrame(rows, columns=["step", "split", "name", "value"])
    fig = plots.code_plane({"rae <b>": df, "empty": df.iloc[:0]})
    assert len(fig.data) == 1 and fig.data[0].name == "rae &lt;b&gt; (D vs ½‖z‖²)"
    assert list(fig.data[0].x) == [3.0, 2.0, 1.0] and list(fig.data[0].y) == [9.0, 7.0, 5.0]
    assert "½‖z‖²" in fig.layout.xaxis.title.text and "no rate" in fig.layout.xaxis.title.text
    sigma2 = np.array([0.01, 0.04, 0.04, 0.09])
    fig = plots.sigma_spread(sigma2, step=100, sigma_min=0.1)
    np.testing.assert_allclose(fig.data[0].x, [0.1, 0.2, 0.2, 0.3])
    lines = [s.x0 for s in fig.layout.shapes]
    assert lines == pytest.approx([math.sqrt(0.045), 0.1])  # the shared σ* = √(mean σ*²ᵢ), then the floor


def _chart_specs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def test_pages_draw_rae_on_the_code_norm_and_the_per_image_sigma_spread(monkeypatch):
    from test_app import app, make_run, page, problems

    store = RunStore()
    rae = make_run(store, {"objective.name": "rae", "model.latent_dim": 2}, name="rae run")
    vae = make_run(store, {"objective.name": "vae", "model.latent_dim": 2}, name="vae run")
    per_image = make_run(store, {"objective.name": "sigma_vae", "objective.variance": "per_image_closed_form",
                                 "model.latent_dim": 2}, name="per-image run")
    assert {"elbo", "rate"}.isdisjoint(store.metrics(rae, split="eval").name) and \
        "elbo" in set(store.metrics(vae, split="eval").name)
    at = page(app(store, monkeypatch, run=rae), "info_plane")
    assert not problems(at)
    titles = [spec["layout"]["xaxis"]["title"]["text"] for spec in _chart_specs(at)]
    assert any("½‖z‖²" in t for t in titles) and any(t.startswith("rate R") for t in titles)  # VAE on R, RAE on ½‖z‖²
    names = [trace["name"] for spec in _chart_specs(at) for trace in spec["data"]]
    assert "rae run (D vs ½‖z‖²)" in names and "vae run" in names
    at = page(app(store, monkeypatch, run=per_image), "sigma")
    assert not problems(at)
    spread = [spec for spec in _chart_specs(at) if spec["data"][0]["type"] == "histogram"]
    x = spread[0]["data"][0]["x"] if len(spread) == 1 else None  # plotly's binary array: {"dtype", "bdata"}
    assert np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]).shape == (64,)  # one σ*ᵢ per image of the batch
