"""Named run presets, one per seed experiment: `vaeviz presets` lists them, `vaeviz train --preset NAME` uses them.

A preset is a description and dotted config overrides on top of the defaults of `RunConfig`; `--set`
overrides apply after it. MNIST presets read the real MNIST files from $VAEVIZ_DATA_DIR (with only the
t10k files present, the 10,000 test images are split into train and eval); when absent, loading the
data fails with a message naming the files and the folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaeviz.config import ConfigError, RunConfig


@dataclass(frozen=True)
class Preset:
    description: str
    overrides: dict = field(default_factory=dict)


DIGITS = {"data.name": "digits", "model.hidden": [256, 256]}
MNIST = {"data.name": "mnist", "model.hidden": [512, 256]}

PRESETS: dict[str, Preset] = {
    "vae-digits": Preset(
        "VAE (Kingma & Welling 2014), Bernoulli decoder, on 8×8 digits with a 2-D latent",
        {**DIGITS, "model.latent_dim": 2, "objective.name": "vae"},
    ),
    "beta-vae-annealed-digits": Preset(
        "β-VAE (Higgins et al. 2017) with β = 2 reached by a linear KL warm-up (Bowman et al. 2016) over 1000 steps",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "beta_vae", "objective.beta": 2.0,
         "objective.schedule": "linear", "objective.warmup_steps": 1000},
    ),
    "sigma-vae-digits": Preset(
        "σ-VAE (Rybkin et al. 2021): one decoder σ set to its closed form σ*² = batch MSE every step",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "sigma_vae", "objective.variance": "global_closed_form"},
    ),
    "sigma-vae-network-digits": Preset(
        "σ-VAE with a per-pixel σ_θ(z) decoder head, after 500 steps of the global closed form",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "sigma_vae", "objective.variance": "network",
         "objective.warmup_steps": 500, "objective.sigma_min": 0.01},
    ),
    "sigma-vae-per-image-digits": Preset(
        "σ-VAE with a closed-form σ*²_i = ‖x_i − g(z_i)‖²/d per image (eq. 6 written per x_i)",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "sigma_vae", "objective.variance": "per_image_closed_form"},
    ),
    "geco-digits": Preset(
        "GECO (Rezende & Viola 2018): minimise the rate subject to a per-pixel RMSE of at most κ = 0.2",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "geco", "objective.kappa": 0.2, "objective.nu": 1.0},
    ),
    "geco-fre-digits": Preset(
        "GECO with the feature-reconstruction constraint (Taming VAEs Table 1, FRE): classifier features of x and "
        "g(z) within κ = 0.5 RMS per feature, a little looser than a digit's nearest same-class neighbour (0.19)",
        # κ² = 0.25 against measured squared feature distances per dimension on digits: 0.19 from a training image
        # to its nearest neighbour of the same class, 5.8 between random pairs, ≈ 5 from an untrained decoder.
        # C starts ≈ 5 (RE's ≈ 0.14), hence ν = 0.01: λ peaks ≈ 10³ when C_ma turns ≤ 0 (step ≈ 430) and falls.
        {**DIGITS, "model.latent_dim": 8, "objective.name": "geco", "objective.constraint": "fre",
         "objective.kappa": 0.5, "objective.nu": 0.01},
    ),
    "geco-cla-digits": Preset(
        "GECO with the classification constraint (Taming VAEs Table 1, CLA): the classifier gives the true label "
        "of g(z) a probability of at least κ = 0.9 on average; the rate falls to a few nats, about log 10",
        # C starts at ≈ 0.8; ν = 0.05 lets λ peak ≈ 10³ when C_ma turns ≤ 0 (step ≈ 350), far from its clamps.
        {**DIGITS, "model.latent_dim": 8, "objective.name": "geco", "objective.constraint": "cla",
         "objective.kappa": 0.9, "objective.nu": 0.05},
    ),
    "geco-mnist": Preset(
        "GECO on MNIST: per-pixel RMSE of at most κ = 0.15, latent 16",
        {**MNIST, "model.latent_dim": 16, "objective.name": "geco", "objective.kappa": 0.15, "objective.nu": 0.2},
    ),
    "rae-l2-mnist": Preset(
        "RAE-L2 (Ghosh et al. 2020): deterministic autoencoder, ½‖z‖² and decoder weight decay; sample ex post",
        {**MNIST, "model.latent_dim": 16, "objective.name": "rae", "objective.variant": "l2",
         "objective.beta": 1e-3, "objective.reg_weight": 1e-5},
    ),
    "rae-gp-digits": Preset(
        "RAE-GP: penalise the decoder Jacobian ‖∇_z D(z)‖²_F at the codes",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "rae", "objective.variant": "gp",
         "objective.beta": 1e-3, "objective.reg_weight": 1e-3},
    ),
    "rae-sn-digits": Preset(
        "RAE-SN: spectral normalisation on every decoder layer",
        {**DIGITS, "model.latent_dim": 8, "objective.name": "rae", "objective.variant": "sn", "objective.beta": 1e-3},
    ),
    "beta-tcvae-shapes": Preset(
        "β-TCVAE (Chen et al. 2018), β = 6 on the total correlation, conv net on shapes with known factors",
        {"data.name": "shapes", "model.arch": "conv", "model.hidden": [32, 32], "model.latent_dim": 6,
         "objective.name": "beta_tcvae", "objective.beta": 6.0, "train.batch_size": 64},
    ),
    "hfvae-shapes": Preset(
        "HFVAE (Esmaeili et al. 2019): latent groups 2,2,2, β = 6 on the TC between groups, γ = 2 within them; the "
        "net, data and batch of beta-tcvae-shapes",
        {"data.name": "shapes", "model.arch": "conv", "model.hidden": [32, 32], "model.latent_dim": 6,
         "objective.name": "hfvae", "objective.groups": [2, 2, 2], "objective.beta": 6.0, "objective.gamma": 2.0,
         "train.batch_size": 64},
    ),
    "micro-mnist-2d": Preset(
        "7 MNIST images, 2-D latent: watch each posterior claim its own patch of latent space",
        {**MNIST, "data.n": 7, "model.latent_dim": 2, "objective.name": "vae", "train.batch_size": 7},
    ),
    "mixture-2d": Preset(
        "toy 2-D Gaussian mixture (8 modes on a ring), 2-D latent, Gaussian decoder with σ = 0.05",
        {"data.name": "gaussian_mixture", "model.hidden": [64, 64], "model.latent_dim": 2, "objective.name": "vae",
         "objective.decoder": "gaussian", "objective.sigma": 0.05},
    ),
}

COMPARISON = ["vae", "beta_vae", "sigma_vae", "geco"]  # the app's default *Launch a comparison* (one batched model)


def preset_config(name: str) -> RunConfig:
    """The RunConfig of preset `name`, named after it."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return RunConfig().with_overrides({**PRESETS[name].overrides, "name": name})
