"""HFVAE (Esmaeili et al. 2019): its loss against its terms and the VAE, its estimator against an enumerated oracle,
the group check before training, and a short run on shapes."""

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeviz.config import ConfigError, ModelConfig, RunConfig
from vaeviz.distributions import Posterior
from vaeviz.member import MemorySink
from vaeviz.nets import build_model
from vaeviz.objectives import REGISTRY, build_objective, latent_groups
from vaeviz.objectives.base import forward_pass
from vaeviz.objectives.beta_tcvae import batch_decomposition, decompose, kl_decomposition, log_importance_weights
from vaeviz.preflight import preflight
from vaeviz.presets import preset_config
from vaeviz.train import train

D, L, B = 16, 4, 32


def make(name: str, **knobs):
    """An objective of `name` with `knobs` and a small float64 MLP model (seeded), for latent dimension L."""
    cfg = RunConfig().with_overrides({"objective.name": name, **{f"objective.{k}": v for k, v in knobs.items()}})
    torch.manual_seed(0)
    obj = build_objective(cfg.objective, D)
    model = build_model(ModelConfig(latent_dim=L, hidden=[32]), (D,), obj.net_spec()).double()
    return obj, model


def one_pass(model, seed: int = 3):
    """One encode-sample-decode pass of a float64 batch (B, D)."""
    x = torch.rand(B, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.manual_seed(seed)
    return forward_pass(model, x)


WEIGHTS = {"alpha": 0.5, "beta": 6.0, "gamma": 2.5, "delta": 1.5}


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_its_terms_sum_to_the_loss(estimator):
    """loss = D + R + (α−1)·MI + (β−1)·TC_between + (γ−1)·TC_within + (δ−1)·dimKL, from the logged terms."""
    obj, model = make("hfvae", groups="1,3", estimator=estimator, dataset_size=1000, **WEIGHTS)
    out = obj.loss(one_pass(model), step=1)
    t = {k: v.item() for k, v in out.terms.items()}
    expected = (t["distortion"] + t["rate"] + (0.5 - 1) * t["mi"] + (6.0 - 1) * t["tc_between"]
                + (2.5 - 1) * t["tc_within"] + (1.5 - 1) * t["dim_kl"])
    assert abs(out.loss.item() - expected) < 1e-6 and t["loss"] == out.loss.item()
    assert abs(t["tc_within"]) > 1e-6  # a group of three dimensions: the term is really there


def test_its_terms_are_the_shared_estimator_and_sum_to_the_one_sample_kl():
    obj, model = make("hfvae", groups="2,2", dataset_size=500, **WEIGHTS)
    p = one_pass(model)
    t = obj.loss(p, step=1).terms
    ref = batch_decomposition(p.z, p.q, log_importance_weights(B, 500, "mws"), [2, 2])
    for name, value in (("mi", ref.mi), ("tc_between", ref.tc_between), ("dim_kl", ref.dim_kl),
                        ("tc_within", ref.tc_within.sum(-1))):
        assert abs(t[name].item() - value.mean().item()) < 1e-12, name
    one_sample_kl = p.q.log_prob(p.z) + 0.5 * (math.log(2 * math.pi) + p.z.pow(2)).sum(-1)  # log q(z|x) − log p(z)
    total = t["mi"] + t["tc_between"] + t["tc_within"] + t["dim_kl"]
    assert abs(total.item() - one_sample_kl.mean().item()) < 1e-10


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_with_every_weight_one_it_is_the_vae_loss(decoder):
    obj, model = make("hfvae", groups="3,1", alpha=1, beta=1, gamma=1, delta=1, decoder=decoder)
    vae, _ = make("vae", decoder=decoder)
    p = one_pass(model)
    mine, theirs = obj.loss(p, step=1), vae.loss(p, step=1)
    assert abs(mine.loss.item() - theirs.loss.item()) < 1e-6
    for name in ("rate", "distortion", "mse"):
        assert abs(mine.terms[name].item() - theirs.terms[name].item()) < 1e-12


def test_one_dimension_per_group_is_beta_tcvae():
    obj, model = make("hfvae", dataset_size=800)  # groups default: one dimension per group
    p = one_pass(model)
    t = obj.loss(p, step=1).terms
    mi, tc, dim_kl = kl_decomposition(p.z, p.q, log_importance_weights(B, 800, "mws"))
    assert t["tc_within"].item() == 0.0
    assert (t["mi"].item(), t["tc_between"].item(), t["dim_kl"].item()) == (
        mi.mean().item(), tc.mean().item(), dim_kl.mean().item())


# -- the estimator against enumeration ------------------------------------------------------------


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) of two tables of the same shape, in nats."""
    return float((p * np.log(p / q)).sum())


def outer(*tables: np.ndarray) -> np.ndarray:
    """The product distribution of independent tables: shape = the tables' shapes concatenated."""
    out = np.ones(())
    for t in tables:
        out = np.multiply.outer(out, t)
    return out


def enumerated(probs: np.ndarray, prior: np.ndarray, groups: list[int]) -> dict[str, float]:
    """Brute force on the joint table q(x, z) = 1/N Π_d Bernoulli(z_d; π_nd) of N examples, L binary z_d."""
    n, lat = probs.shape
    joint = np.stack([outer(*[np.array([1 - p, p]) for p in row]) for row in probs]) / n  # (N, 2, ..., 2)
    qz = joint.sum(0)  # (2,)*L
    axes = list(range(lat))
    dims = [qz.sum(axis=tuple(a for a in axes if a != d)) for d in axes]  # q(z_d), each (2,)
    bounds = list(itertools.accumulate([0, *groups]))
    members = [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    qg = [qz.sum(axis=tuple(a for a in axes if a not in g)) for g in members]  # q(z_g), (2,)*|g|
    mi = kl(joint, outer(np.full(n, 1 / n), qz))
    within = [kl(qg[k], outer(*[dims[d] for d in g])) for k, g in enumerate(members)]
    return {"mi": mi, "tc_between": kl(qz, outer(*qg)), "tc_within": within, "tc": kl(qz, outer(*dims)),
            "dim_kl": sum(kl(dims[d], np.array([1 - prior[d], prior[d]])) for d in axes)}


def tables(probs: np.ndarray, prior: np.ndarray):
    """`decompose`'s inputs for every pair (x_n, z) as a sample, with the probability q(x_n, z) of each: the exact
    aggregate posterior with weights w_sj = 1/N for every component j."""
    n, lat = probs.shape
    codes = np.array(list(itertools.product([0, 1], repeat=lat)))  # (2^L, L)
    log_dim = np.log(np.where(codes[None, :, :] == 1, probs[:, None, :], 1 - probs[:, None, :]))  # (N, 2^L, L)
    marg = np.repeat(log_dim.transpose(1, 0, 2)[None], n, 0).reshape(n * len(codes), n, lat)  # (S, N, L)
    own = np.repeat(np.arange(n), len(codes))  # (S,) the example each sample came from
    pair = marg.sum(-1)  # (S, N)
    log_qzx = pair[np.arange(len(own)), own]  # (S,)
    log_pz = np.log(np.where(codes == 1, prior, 1 - prior)).sum(-1)  # (2^L,)
    log_w = np.full(pair.shape, -math.log(n))  # (S, N)
    mass = np.exp(log_qzx) / n  # (S,) q(x_n, z)
    out = (torch.tensor(a, dtype=torch.float64) for a in (log_qzx, pair, marg, log_w, np.tile(log_pz, n)))
    return *out, mass


@pytest.mark.parametrize("groups", [[2, 2], [1, 3], [3, 2]])
def test_decomposition_matches_enumeration(groups):
    """E_q(x,z) of each estimated term, with the exact aggregate posterior, is the KL it stands for:
    MI = KL(q(x,z) ‖ q(x)q(z)), TC_between = KL(q(z) ‖ Π_g q(z_g)), TC_within of group g =
    KL(q(z_g) ‖ Π_{d∈g} q(z_d)), dimKL = Σ_d KL(q(z_d) ‖ p(z_d)); and the two TCs add up to KL(q(z) ‖ Π_d q(z_d))."""
    rng = np.random.default_rng(sum(groups) * 10 + groups[0])
    lat = sum(groups)
    probs = rng.uniform(0.05, 0.95, (3, lat))  # 3 examples, factorised Bernoulli posteriors
    prior = rng.uniform(0.2, 0.8, lat)  # a factorised prior p(z) = Π_d Bernoulli(ρ_d)
    log_qzx, pair, marg, log_w, log_pz, mass = tables(probs, prior)
    assert mass.sum() == pytest.approx(1.0, abs=1e-12)
    terms = decompose(log_qzx, pair, marg, log_w, log_pz, groups)
    got = {name: mass @ getattr(terms, name).numpy() for name in ("mi", "tc_between", "tc_within", "dim_kl")}
    want = enumerated(probs, prior, groups)
    for name in ("mi", "tc_between", "dim_kl"):
        assert got[name] == pytest.approx(want[name], abs=1e-12), name
    np.testing.assert_allclose(got["tc_within"], want["tc_within"], atol=1e-12)
    assert want["tc_between"] + sum(want["tc_within"]) == pytest.approx(want["tc"], abs=1e-12)
    assert want["tc_between"] > 1e-3  # both splits are really there
    assert all(w > 1e-3 for w, size in zip(want["tc_within"], groups) if size > 1)


# -- the caption's offsets ---------------------------------------------------------------------------


@pytest.mark.parametrize("apart", [False, True])
def test_mws_offsets_of_the_caption(apart):
    """MWS on a batch whose posteriors all coincide (true MI = TCs = 0): MI = log N, TC_between = (G−1)·log N,
    TC_within = (L−G)·log N; posteriors apart from one another in every dimension: the same with log(N·M)."""
    b, n, groups = 16, 1000, [2, 1, 3]
    lat, g = sum(groups), torch.Generator().manual_seed(0)
    if apart:  # means 50 apart in every dimension, σ = 0.01
        mu = torch.stack([torch.randperm(b, generator=g) * 50.0 for _ in range(lat)], 1).double()
        q = Posterior(mu, logvar=torch.full((b, lat), math.log(1e-4), dtype=torch.float64))
    else:
        q = Posterior(torch.randn(lat, generator=g).double().expand(b, lat),
                      logvar=torch.zeros(b, lat, dtype=torch.float64))
    z = q.rsample(generator=g)
    t = batch_decomposition(z, q, log_importance_weights(b, n, "mws"), groups)
    unit = math.log(n * b) if apart else math.log(n)
    for value, want in ((t.mi, unit), (t.tc_between, (len(groups) - 1) * unit), (t.tc_within.sum(-1), 3 * unit)):
        torch.testing.assert_close(value, torch.full((b,), want, dtype=torch.float64), atol=0, rtol=1e-6)  # float32 w


# -- groups before training, and a short run --------------------------------------------------------


def test_groups_must_add_up_to_the_latent_dimension():
    cfg = RunConfig().with_overrides(["objective.name=hfvae", "objective.groups=2,2", "model.latent_dim=6",
                                      "model.hidden=16", "train.steps=3"])
    message = r"^invalid value for 'objective\.groups': 2,2 adds up to 4, but model\.latent_dim is 6"
    with pytest.raises(ConfigError, match=message):
        preflight(cfg)
    with pytest.raises(ConfigError, match=message):
        train(cfg, MemorySink())
    with pytest.raises(ConfigError, match="objective.groups"):
        RunConfig().with_overrides(["objective.name=hfvae", "objective.groups=2,0"])  # sizes are at least 1
    fits = cfg.with_overrides(["objective.groups=1,2,3"])
    assert latent_groups(fits.objective, 6) == [range(0, 1), range(1, 3), range(3, 6)]
    assert latent_groups(cfg.with_overrides(["objective.groups=none"]).objective, 3) == [range(i, i + 1)
                                                                                         for i in range(3)]
    assert latent_groups(RunConfig().objective, 6) is None  # the VAE has no groups


def test_hfvae_trains_on_shapes_and_logs_finite_terms():
    cfg = preset_config("hfvae-shapes").with_overrides(["train.steps=20", "data.size=600", "train.eval_every=1000",
                                                        "train.probe_size=100", "train.checkpoint_every=1000"])
    sink = MemorySink()
    train(cfg, sink)
    for name in ("loss", "rate", "distortion", "mi", "tc_between", "tc_within", "dim_kl"):
        steps, values = sink.series(name)
        assert len(values) == 20 and np.isfinite(values).all(), name


# -- the app ------------------------------------------------------------------------------------------


def test_pages_show_an_hfvae_run_and_its_traversals_group_by_group(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from vaeviz.runs import RunStore

    monkeypatch.setattr("vaeviz.worker.ensure_worker", lambda store: None)
    store = RunStore(tmp_path / "hf")
    cfg = RunConfig().with_overrides(
        {"data.name": "digits", "model.hidden": "32", "model.latent_dim": 4, "objective.name": "hfvae",
         "objective.groups": "2,2", "train.steps": 40, "train.eval_every": 20, "train.checkpoint_every": 20,
         "train.probe_size": 100})
    run_id = store.create_run(cfg, "hf")
    train(cfg, store.sink(run_id), workdir=store.artifact_dir(run_id))
    store.set_status(run_id, "done", device="cpu")
    monkeypatch.setenv("VAEVIZ_HOME", str(store.home))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at = at.run()
    for name in ["train", "info_plane", "tiling", "holes", "compare", "runs", "traversals"]:
        at = at.switch_page(f"views/{name}.py").run()
        assert not [e.message for e in at.exception] + [e.value for e in at.error], name
        if name == "train":  # the run's live charts of its four terms, and how to read them
            assert REGISTRY["hfvae"].chart_caption in [c.value for c in at.caption]
    captions = [c.value for c in at.caption]
    assert "group 1: z1, z2" in captions and "group 2: z3, z4" in captions  # above each group's sliders
    at.segmented_control(key="tview").set_value("Traversal grid").run()
    assert [m.value for m in at.markdown if m.value.startswith("**group")] == ["**group 1: z1, z2**",
                                                                              "**group 2: z3, z4**"]
    at.selectbox(key="manifold_group").set_value(1).run()
    assert not at.exception and any("manifold over z3 and z4" in c.value for c in at.caption)
