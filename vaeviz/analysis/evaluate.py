"""`vaeviz eval RUN`: every on-demand metric of a run at a step, as one flat dict (`KEYS`, a stable surface).

The model is scored as one fixed model: `likelihood.calibrate` first measures the training split's MSE (the
first 10,000 examples, one posterior sample each), which fixes σ*² of σ-VAE's closed form and GECO for every
held-out metric and is the σ*² of NLL*; posterior noise is fixed per example, so no key depends on the chunk
size `EvalSettings.batch` (`vaeviz eval --batch N`).
Keys: `elbo`, `rate`, `distortion`, `nll_sigma_free` (whole eval split, one posterior sample each; NLL* =
d/2 · (log 2πσ*² + MSE_eval/MSE_train), σ*² = MSE_train), `iwae` (k importance samples on the first `n_iwae`
eval examples), `active_units` (eval split),
`hole_fraction` and `marginal_kl` of the aggregate posterior q(z) over the posteriors of the first
`n_components` TRAINING examples (all of a smaller split; `aggregate.fit_aggregate`), with that number
returned as `n_components` (few components overestimate both, see `aggregate.py`), `fd_prior`,
`fd_gaussian` and `fd_gmm` (Fréchet distance in classifier features between eval images and decoded
samples of the prior N(0, I), the run's single full-covariance Gaussian and its 10-component GMM ex-post
samplers of that step, fitted on the objective's `ex_post_fit` codes, `vaeviz.samplers.fitted_samplers`;
labelled datasets only), `mig` (datasets with known factors only).
A metric that does not apply is None: `elbo`, `rate` and `iwae` for a deterministic encoder (RAE, AE: no
q(z|x), so no rate and no bound), FD without labels, MIG without factors. Deterministic encoders get holes
and marginal KL of a Scott's-rule kernel density of their codes (see `aggregate.py`).
"""

from __future__ import annotations

import dataclasses

from vaeviz.analysis.aggregate import HOLE_TAU, fit_aggregate
from vaeviz.analysis.batching import encode_batched
from vaeviz.analysis.disentangle import mig
from vaeviz.analysis.likelihood import active_units, calibrate, elbo_terms, iwae_bound
from vaeviz.analysis.quality import classifier_key, frechet_by_sampler, load_or_fit_classifier
from vaeviz.samplers import fitted_samplers

KEYS = ("elbo", "nll_sigma_free", "iwae", "active_units", "hole_fraction", "marginal_kl", "n_components",
        "fd_prior", "fd_gaussian", "fd_gmm", "mig", "rate", "distortion")


@dataclasses.dataclass
class EvalSettings:
    k: int = 100  # IWAE importance samples
    n_iwae: int = 1000  # eval examples for IWAE
    batch: int = 500  # examples per chunk of the ELBO and IWAE passes (results do not depend on it)
    n_components: int = 10_000  # training posteriors in the aggregate posterior (all of a smaller split)
    n_samples: int = 10_000  # Monte Carlo samples for holes and marginal KL
    n_fd: int = 2000  # images per side of the Fréchet distance
    tau: float = HOLE_TAU
    classifier_steps: int = 1500  # Adam steps of the feature classifier (trained once per dataset, cached)
    seed: int = 0


def load_model(store, run_id: str, step: int | None = None, device: str = "cpu"):
    """(model, objective, dataset, step) of a run's checkpoint at `step` (default: the last)."""
    from vaeviz.build import load_run

    setup, chosen = load_run(store.get(run_id).config, store.artifact_dir(run_id), step, device)
    return setup.model, setup.objective, setup.data, chosen


def evaluate_run(store, run_id: str, step: int | None = None, settings: EvalSettings | None = None,
                 load=load_model) -> dict:
    """All eval keys (`KEYS`) for `run_id` at its checkpoint `step` (default: the last), with the run's
    saved ex-post samplers of that step. `load` reads the checkpoint: `load_model`, or a wrapper of it
    such as the CLI's, which turns a corrupt checkpoint into one error line."""
    model, objective, data, chosen = load(store, run_id, step)
    cfg = store.get(run_id).config
    samplers = fitted_samplers(model, data.x_train, store.artifact_dir(run_id), chosen, fit_on=objective.ex_post_fit,
                               seed=cfg.train.seed)
    return evaluate_model(model, objective, data, cfg.data, settings or EvalSettings(), samplers)


def evaluate_model(model, objective, data, data_cfg, s: EvalSettings, samplers: dict | None = None) -> dict:
    """The eval keys for a loaded model on its dataset (see module docstring). `samplers`: the run's ex-post
    samplers (`vaeviz.samplers.fitted_samplers`); without them they are fitted here and not saved."""
    mse = calibrate(model, objective, data.x_train, s.seed, s.batch)  # σ* of the training split
    terms = elbo_terms(model, objective, data.x_eval, s.batch, s.seed, train_mse=mse)
    q = encode_batched(model, data.x_eval)
    out = {k: terms[k] for k in ("nll_sigma_free", "distortion")}
    stochastic = not q.deterministic  # a deterministic encoder has no rate, ELBO or IWAE
    out["elbo"], out["rate"] = (terms["elbo"], terms["rate"]) if stochastic else (None, None)
    out["active_units"] = active_units(q.mu)
    x_iwae = data.x_eval[: s.n_iwae]
    out["iwae"] = iwae_bound(model, objective, x_iwae, s.k, seed=s.seed, batch=s.batch) if stochastic else None
    out.update(_holes(model, data.x_train, s))
    out.update(_sample_quality(model, data, data_cfg, s, samplers, objective.ex_post_fit))
    factors = data.factors_eval
    out["mig"] = mig(q.mu.numpy(), factors) if factors is not None and model.latent_dim > 1 else None
    counts = {"active_units", "n_components"}  # whole numbers in the JSON
    return {k: (None if out[k] is None else int(out[k]) if k in counts else float(out[k])) for k in KEYS}


def _holes(model, x_train, s: EvalSettings) -> dict:
    """Hole fraction (prior mass where q/p < τ) and marginal KL(q ‖ p) of q(z) over the training posteriors
    (Hoffman & Johnson 2016, eq. 2), and `n_components`, how many posteriors that mixture holds."""
    agg = fit_aggregate(model, x_train, s.n_components)
    return {"hole_fraction": agg.hole_fraction(s.tau, s.n_samples, s.seed),
            "marginal_kl": agg.marginal_kl(s.n_samples, s.seed), "n_components": agg.n_components_}


def _sample_quality(model, data, data_cfg, s: EvalSettings, samplers: dict | None, fit_on: str) -> dict:
    """fd_prior, fd_gaussian and fd_gmm against held-out images (Heusel et al. 2017, in the features of a
    classifier trained on the full train split). `samplers`: the run's ex-post samplers; without them, ones
    fitted here on `fit_on` codes and not saved."""
    if data.y_train is None:
        return {"fd_prior": None, "fd_gaussian": None, "fd_gmm": None}
    from vaeviz.data import load_dataset

    full = load_dataset(dataclasses.replace(data_cfg, n=None, per_class=None))
    clf = load_or_fit_classifier(classifier_key(data_cfg), full.x_train, full.y_train, steps=s.classifier_steps)
    samplers = samplers or fitted_samplers(model, data.x_train, None, 0, fit_on=fit_on, seed=s.seed)
    fd = frechet_by_sampler(clf, model, data.x_eval[: s.n_fd], samplers, seed=s.seed)  # prior, gaussian, gmm
    return {"fd_prior": fd["prior"], "fd_gaussian": fd["gaussian"], "fd_gmm": fd["gmm"]}
