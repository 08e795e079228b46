"""Peer check: pythae computes the same β-VAE, β-TCVAE (MWS and MSS) and RAE-L2 losses as ours.

Both sides get the same networks (pythae wraps ours, so the weights are identical), the same batch
and the same ε (the RNG is reseeded before each forward; both draw one standard normal of shape (B, L)).
Convention differences, each undone in the comparison:
1. Decoder output: ours returns logits and decodes the mean as sigmoid(logits); pythae's decoder
   returns the mean, so the wrapper applies the sigmoid. Its BCE on probabilities equals our BCE on
   logits (pythae clamps log at −100, never reached here).
2. Gaussian decoder: pythae's "mse" reconstruction is ½‖x − x̂‖², our fixed-σ Gaussian NLL with σ = 1
   also has the normaliser d/2·log 2π, which is subtracted from ours.
3. β-TCVAE MSS: pythae copies the reference code's importance-weight matrix, whose stride-(M+1) indexing of
   a (M+1)×(M+1) matrix fills columns 0 and 1 (1/N and the stratum weight) instead of the diagonal and its
   neighbour (rtqichen/beta-tcvae pull request #1). We compare twice: pythae with our matrix patched in,
   and our estimator fed pythae's matrix.
4. RAE-L2: pythae leaves the decoder ‖θ‖² out of its loss and applies it as optimiser weight decay
   (`reg_weight`, so a gradient reg_weight·θ, i.e. (reg_weight/2)·‖θ‖²); our loss includes λ·‖θ_D‖², which
   is subtracted. Our `beta` is pythae's `embedding_weight`.
"""

import math

import pytest
import torch

from vaeviz.config import ModelConfig, RunConfig
from vaeviz.nets import build_model
from vaeviz.objectives import build_objective
from vaeviz.objectives.base import forward_pass
from vaeviz.objectives.beta_tcvae import kl_decomposition, log_importance_weights
from vaeviz.objectives.rae import decoder_sq_norm

pythae_models = pytest.importorskip("pythae.models", reason="pythae is not installed (pip install -e .[peer])")
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402

D, L, B, N = 64, 4, 48, 1000
RTOL = 1e-4


class Encoder(BaseEncoder):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        q = self.model.encode(x)
        return ModelOutput(embedding=q.mu, log_covariance=q.logvar)


class Decoder(BaseDecoder):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        return ModelOutput(reconstruction=self.model.decode_mean(z))  # convention 1


def ours(name, **knobs):
    cfg = RunConfig().with_overrides({"objective.name": name, **{f"objective.{k}": v for k, v in knobs.items()}})
    torch.manual_seed(0)
    obj = build_objective(cfg.objective, D)
    model = build_model(ModelConfig(latent_dim=L, hidden=[32, 32]), (D,), obj.net_spec())
    return obj, model


def data():
    return torch.rand(B, D, generator=torch.Generator().manual_seed(3))


def both_losses(obj, model, peer, x, **kwargs):
    torch.manual_seed(11)
    mine = obj(model, x, 1).loss.item()
    torch.manual_seed(11)
    theirs = peer({"data": x}, **kwargs).loss.item()
    return mine, theirs


@pytest.mark.parametrize("recon", ["bce", "mse"])
def test_beta_vae_matches_pythae(recon):
    decoder = "bernoulli" if recon == "bce" else "gaussian"
    obj, model = ours("beta_vae", beta=4.0, decoder=decoder, sigma=1.0)
    config = pythae_models.BetaVAEConfig(input_dim=(D,), latent_dim=L, beta=4.0, reconstruction_loss=recon)
    peer = pythae_models.BetaVAE(config, encoder=Encoder(model), decoder=Decoder(model))
    mine, theirs = both_losses(obj, model, peer, data())
    if recon == "mse":
        mine -= D / 2 * math.log(2 * math.pi)  # convention 2
    assert mine == pytest.approx(theirs, rel=RTOL)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_beta_tcvae_matches_pythae(estimator):
    obj, model = ours("beta_tcvae", alpha=0.7, beta=6.0, gamma=1.5, estimator=estimator)
    obj.set_dataset_size(N)
    config = pythae_models.BetaTCVAEConfig(input_dim=(D,), latent_dim=L, alpha=0.7, beta=6.0, gamma=1.5,
                                           use_mss=estimator == "mss", reconstruction_loss="bce")
    peer = pythae_models.BetaTCVAE(config, encoder=Encoder(model), decoder=Decoder(model))
    theirs_matrix = peer._log_importance_weight_matrix(B, N)
    if estimator == "mss":  # convention 3: give pythae the intended matrix
        peer._log_importance_weight_matrix = lambda b, n: log_importance_weights(b, n, "mss")
    x = data()
    mine, theirs = both_losses(obj, model, peer, x, dataset_size=N)
    assert mine == pytest.approx(theirs, rel=RTOL)
    if estimator == "mss":  # and our estimator with pythae's own matrix gives pythae's own loss
        peer._log_importance_weight_matrix = lambda b, n: theirs_matrix
        torch.manual_seed(11)
        p = forward_pass(model, x)
        mi, tc, dim_kl = (t.mean() for t in kl_decomposition(p.z, p.q, theirs_matrix))
        mine = (obj.nll(p).mean() + 0.7 * mi + 6.0 * tc + 1.5 * dim_kl).item()
        _, theirs = both_losses(obj, model, peer, x, dataset_size=N)
        assert mine == pytest.approx(theirs, rel=RTOL)
        assert not torch.allclose(theirs_matrix, log_importance_weights(B, N, "mss"))


def test_rae_l2_matches_pythae():
    obj, model = ours("rae", variant="l2", beta=0.05, reg_weight=1e-3)
    config = pythae_models.RAE_L2_Config(input_dim=(D,), latent_dim=L, embedding_weight=0.05, reg_weight=1e-3)
    peer = pythae_models.RAE_L2(config, encoder=Encoder(model), decoder=Decoder(model))
    mine, theirs = both_losses(obj, model, peer, data())
    mine -= 1e-3 * decoder_sq_norm(model).item()  # convention 4
    assert mine == pytest.approx(theirs, rel=RTOL)
