"""Lesson: deterministic autoencoders sampled ex post (Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, "From
Variational to Deterministic Autoencoders", ICLR; Table 1, and Table 2's ex-post density estimation).

An RAE drops the VAE's noise: a deterministic encoder z = E(x) and the loss (eq. 11)
    L = ‖x − D(E(x))‖² + β·½‖z‖² + λ·L_REG,
with L_REG the decoder's weight decay ‖θ_D‖² (RAE-L2), its Jacobian ‖∇_z D(z)‖²_F (RAE-GP), spectral
normalisation instead (RAE-SN), nothing (RAE: β only) or neither term (AE). Nothing ties its codes to N(0, I),
so it is sampled ex post (sec. 4): a density fitted to the TRAINING codes, one full-covariance Gaussian or a
10-component GMM (`vaeviz.samplers.fitted_samplers`), the same step applied to the VAEs. Table 1 scores every
model by FID of test reconstructions (REC.) and of samples (N: the prior for VAEs, a fitted Gaussian for the
others; GMM); the GMM beats N in every row, and the regularised deterministic models match or beat the VAE.

Here: the built-in 8×8 digits (the paper: MNIST, CIFAR-10, CelebA with convolutional nets) and the Fréchet
distance (Heusel et al. 2017) in the features of a small classifier of the dataset
(`vaeviz.analysis.quality`), not Inception's; every FD compares the first n held-out images with n decoded
samples (n = the whole held-out split of digits, 359; at most 1,000). VAE is vaeviz's Bernoulli-decoder VAE;
CV-VAE a Gaussian decoder of fixed σ = 0.1 (β = 2σ² = 0.02 in the units of the RAE's squared error).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vaeviz import plots
from vaeviz.analysis import quality
from vaeviz.analysis.batching import decode_batched, encode_batched
from vaeviz.analysis.evaluate import EvalSettings
from vaeviz.lessons.common import DIGITS, base
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict
from vaeviz.samplers import fitted_samplers

RAE_KNOBS = {"objective.name": "rae", "objective.beta": 1e-3}
ROLES = {  # Table 1's rows in its order (WAE and 2sVAE left out)
    "VAE": {"objective.name": "vae", "objective.decoder": "bernoulli"},
    "CV-VAE": {"objective.name": "vae", "objective.decoder": "gaussian", "objective.sigma": 0.1},
    "RAE-GP": {**RAE_KNOBS, "objective.variant": "gp", "objective.reg_weight": 1e-3},
    "RAE-L2": {**RAE_KNOBS, "objective.variant": "l2", "objective.reg_weight": 1e-5},
    "RAE-SN": {**RAE_KNOBS, "objective.variant": "sn"},
    "RAE": {**RAE_KNOBS, "objective.variant": "none"},
    "AE": {"objective.name": "rae", "objective.variant": "ae"},
}
REGULARISED = ("RAE-GP", "RAE-L2", "RAE-SN", "RAE")
MNIST = {"data.name": "mnist", "model.hidden": [512, 256], "model.latent_dim": 16, "train.seed": 0}
N_FD = 1000  # at most this many held-out images (and as many samples) per Fréchet distance
COLUMNS = {"rec": ("REC.", "reconstructions"), "prior": ("N(0, I)", "prior"), "gaussian": ("N fitted", "ex post"),
           "gmm": ("GMM (k = 10)", "ex post")}


def configs(full: bool) -> dict:
    """Digits, 8-D codes, 3,000 steps; full size: MNIST (the data folder's t10k file is enough), 16-D codes (the
    paper's MNIST latent size), 20,000 steps."""
    data, steps = (MNIST, 20_000) if full else (DIGITS, 3000)
    return {role: base({**data, **knobs}, steps) for role, knobs in ROLES.items()}


def _classifier(store, data_cfg):
    """The dataset's feature classifier, the one `vaeviz eval` uses (trained on the full training split, cached)."""
    from vaeviz.data import load_dataset

    full = load_dataset(dataclasses.replace(data_cfg, n=None, per_class=None))
    key = quality.classifier_key(data_cfg)
    return quality.load_or_fit_classifier(key, full.x_train, full.y_train, home=store.home,
                                          steps=EvalSettings().classifier_steps)


def scores(runs: LessonRuns, role: str) -> dict | None:
    """Fréchet distances of a finished run at its last checkpoint ({"rec", "prior", "gaussian", "gmm"}), on n
    held-out images against n reconstructions or samples; with n, the floor (FD of n held-out against n training
    images), whether its encoder is deterministic, and ten GMM samples. None until the run is done."""
    if not runs.done(role):
        return None
    setup, step = runs.model(role)
    if setup is None:
        return None
    rec = runs.records[role]
    key = ("rae-scores", rec.id, step)
    if key not in runs._cache:  # the figures and the checks share one evaluation per view of the runs
        runs._cache[key] = _score(runs.store, rec, setup, step)
    return runs._cache[key]


def _score(store, rec, setup, step: int) -> dict:
    model, data, seed = setup.model, setup.data, rec.config.train.seed
    clf = _classifier(store, rec.config.data)
    samplers = fitted_samplers(model, data.x_train, store.artifact_dir(rec.id), step,
                               fit_on=setup.objective.ex_post_fit, seed=seed)
    n = min(N_FD, len(data.x_eval), len(data.x_train))
    ref = data.x_eval[:n]  # (n, C, H, W)
    q = encode_batched(model, ref)
    out = quality.frechet_by_sampler(clf, model, ref, samplers, seed=seed)  # prior, gaussian, gmm: n samples each
    out["rec"] = quality.sample_frechet(clf, model, ref, q.mu)  # g(E(x)) of the same n held-out images
    out["floor"] = quality.frechet_distance(clf.features(ref), clf.features(data.x_train[:n]))
    out.update(n=n, step=step, deterministic=q.deterministic,
               gmm_images=decode_batched(model, samplers["gmm"].sample(10, seed + 1)))
    return out


def all_scores(runs: LessonRuns) -> dict[str, dict]:
    """{role: scores} of the finished runs, in the table's order."""
    return {role: s for role in ROLES if (s := scores(runs, role)) is not None}


def table(runs: LessonRuns):
    found = all_scores(runs)
    if not found:
        return None
    rows = {role: {k: s[k] for k in COLUMNS} for role, s in found.items()}
    first = next(iter(found.values()))
    return plots.runs_table(rows, COLUMNS, f"Fréchet distance to {first['n']} held-out images (lower is better; "
                                           f"floor: {first['floor']:.3g} for as many training images)")


def samples(runs: LessonRuns):
    """Ten draws of N(0, I) (the same z for every model) and ten of each model's GMM, decoded."""
    galleries, shape = {}, None
    for role, s in all_scores(runs).items():
        setup, _ = runs.model(role)
        z = np.random.default_rng(0).standard_normal((10, setup.model.latent_dim)).astype(np.float32)
        galleries[f"{role} · N(0, I)"] = decode_batched(setup.model, z)
        galleries[f"{role} · GMM"] = s["gmm_images"]
        shape = setup.data.shape
    if not galleries:
        return None
    return plots.sample_gallery(galleries, shape).update_layout(height=120 + 55 * len(galleries))  # ~55 px a row


def _finished(runs: LessonRuns, roles) -> dict | None:
    """{role: scores} when every one of `roles` is done, else None."""
    return all_scores(runs) if runs.done(*roles) else None


def _pairs(found: dict, better: str, worse: str) -> str:
    return "; ".join(f"{role} {s[better]:.3g} vs {s[worse]:.3g}" for role, s in found.items())


def gmm_beats_prior(runs: LessonRuns) -> Verdict | None:
    """Every model's GMM samples are closer to the held-out images than its N(0, I) samples."""
    found = _finished(runs, ROLES)
    if found is None:
        return None
    worse = [role for role, s in found.items() if s["gmm"] >= s["prior"]]
    n = next(iter(found.values()))["n"]
    return Verdict(not worse, f"FD of GMM vs N(0, I) samples, {n} of each against {n} held-out images: "
                              f"{_pairs(found, 'gmm', 'prior')}; "
                              + (f"not better for {', '.join(worse)}." if worse else "better for every model."))


def gmm_beats_gaussian(runs: LessonRuns) -> Verdict | None:
    """For the deterministic models (whose N in Table 1 is a fitted Gaussian) the GMM beats the single Gaussian."""
    found = _finished(runs, ROLES)
    if found is None:
        return None
    found = {role: s for role, s in found.items() if s["deterministic"]}
    worse = [role for role, s in found.items() if s["gmm"] >= s["gaussian"]]
    return Verdict(not worse, f"FD of GMM vs one fitted Gaussian, deterministic encoders: "
                              f"{_pairs(found, 'gmm', 'gaussian')}; "
                              + (f"not better for {', '.join(worse)}." if worse else "the GMM is better for each."))


def rae_matches_vae(runs: LessonRuns) -> Verdict | None:
    """Each regularised deterministic autoencoder's GMM samples are at least as close as the VAE's."""
    found = _finished(runs, ("VAE", *REGULARISED))
    if found is None:
        return None
    vae = found["VAE"]["gmm"]
    worse = [role for role in REGULARISED if found[role]["gmm"] > vae]
    each = ", ".join(f"{role} {found[role]['gmm']:.3g}" for role in REGULARISED)
    return Verdict(not worse, f"GMM-sample FD {each} against the VAE's {vae:.3g}; "
                              + (f"worse than the VAE: {', '.join(worse)}." if worse else "none is worse."))


def deterministic_reconstructs_better(runs: LessonRuns) -> Verdict | None:
    """Every deterministic autoencoder reconstructs held-out images closer to them (REC.) than the VAE."""
    found = _finished(runs, ROLES)
    if found is None:
        return None
    vae = found["VAE"]["rec"]
    det = {role: s["rec"] for role, s in found.items() if s["deterministic"]}
    worse = [role for role, v in det.items() if v >= vae]
    return Verdict(not worse, f"REC. FD {', '.join(f'{r} {v:.3g}' for r, v in det.items())} against the VAE's "
                              f"{vae:.3g}; " + (f"not better: {', '.join(worse)}." if worse else "each is better."))


LESSON = Lesson(
    name="rae",
    title="Deterministic autoencoders: RAEs sampled ex post",
    paper="Ghosh, Sajjadi, Vergari, Black & Schölkopf 2020, From Variational to Deterministic Autoencoders",
    figure="Table 1 (FID of reconstructions and of samples from N and a 10-component GMM fitted ex post)",
    look_for="Read the table by rows: for every model the GMM column is lower than the N(0, I) column, and for the "
             "deterministic ones (RAE-*, AE) far lower, since nothing ties their codes to N(0, I); their decoded "
             "prior samples are smudges while their GMM samples look like digits. Compare the GMM column across rows: "
             "the regularised RAEs sample as well as the VAE or better, and reconstruct better (REC.). Here the FD "
             "is in the features of a classifier of 8×8 digits (MNIST at full size), not FID in Inception features on "
             "MNIST, CIFAR-10 or CelebA as in the paper.",
    configs=configs,
    figures=(
        Figure("Fréchet distances in the paper's layout", table,
               "Rows: models; columns: FD of reconstructions g(E(x)) of the held-out images (REC.), and of decoded "
               "samples of the prior N(0, I), of one full-covariance Gaussian and of a 10-component GMM, both fitted "
               "to the model's training codes (μ(x) or E(x) for deterministic encoders, one z ~ q(z|x) each for the "
               "VAEs). Table 1's N is the prior for VAEs and the fitted Gaussian for the others. FD in the features "
               "of a classifier of the dataset; the floor is what two samples of real images of this size score (REC. "
               "pairs each image with its own reconstruction, so it can fall below the floor)."),
        Figure("Samples: N(0, I) and the ex-post GMM of each model", samples,
               "Ten draws of N(0, I), the same z for every model, and ten of each model's GMM, decoded at its last "
               "checkpoint."),
    ),
    checks=(
        Check("ex-post density estimation improves samples: a GMM fitted to the codes beats the prior N(0, I) for "
              "every model (Table 1, GMM column against N)", gmm_beats_prior),
        Check("for the deterministic autoencoders the 10-component GMM also beats a single fitted Gaussian (Table 1, "
              "N is a fitted Gaussian for them)", gmm_beats_gaussian),
        Check("regularised deterministic autoencoders sample as well as or better than the VAE (Table 1, GMM column)",
              rae_matches_vae),
        Check("deterministic autoencoders reconstruct better than the VAE (Table 1, REC. column)",
              deterministic_reconstructs_better),
    ),
    variations=(Variation("the same with a 16-D latent", {"model.latent_dim": 16}),
                Variation("the same with another seed", {"train.seed": 1})),
)
