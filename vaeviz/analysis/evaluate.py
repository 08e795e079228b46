"""`vaeviz eval RUN`: every on-demand metric of a run at a step, as one flat dict (`KEYS`, a stable surface).

Keys: `elbo`, `rate`, `distortion`, `nll_sigma_free` (whole eval split, one posterior sample each),
`iwae` (k importance samples on the first `n_iwae` eval examples), `active_units` (eval split),
`hole_fraction` and `marginal_kl` (aggregate posterior of the first `n_probe` eval examples),
`fd_prior` and `fd_gmm` (Fréchet distance in classifier features between eval images and decoded
prior / ex-post GMM samples, labelled datasets only; the GMM is the run's saved one of that step,
`vaeviz.samplers.fitted_samplers`), `mig` (datasets with known factors only).
A metric that does not apply is None: IWAE for a deterministic encoder, FD without labels, MIG
without factors. Deterministic encoders get holes and marginal KL of a Scott's-rule kernel density
of their codes (see `aggregate.py`).
"""

from __future__ import annotations

import dataclasses

from vaeviz.analysis.aggregate import HOLE_TAU, AggregatePosterior
from vaeviz.analysis.batching import encode_batched
from vaeviz.analysis.disentangle import mig
from vaeviz.analysis.likelihood import active_units, elbo_terms, iwae_bound
from vaeviz.analysis.quality import classifier_key, frechet_by_sampler, load_or_fit_classifier
from vaeviz.samplers import fitted_samplers

KEYS = ("elbo", "nll_sigma_free", "iwae", "active_units", "hole_fraction", "marginal_kl",
        "fd_prior", "fd_gmm", "mig", "rate", "distortion")


@dataclasses.dataclass
class EvalSettings:
    k: int = 100  # IWAE importance samples
    n_iwae: int = 1000  # eval examples for IWAE
    n_probe: int = 2000  # components of the aggregate posterior
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
    samplers = fitted_samplers(model, data.x_train, store.artifact_dir(run_id), chosen, seed=cfg.train.seed)
    return evaluate_model(model, objective, data, cfg.data, settings or EvalSettings(), samplers)


def evaluate_model(model, objective, data, data_cfg, s: EvalSettings, samplers: dict | None = None) -> dict:
    """The eval keys for a loaded model on its dataset (see module docstring). `samplers`: the run's ex-post
    samplers (`vaeviz.samplers.fitted_samplers`); without them they are fitted here and not saved."""
    terms = elbo_terms(model, objective, data.x_eval, seed=s.seed)
    q = encode_batched(model, data.x_eval)
    out = {k: terms[k] for k in ("elbo", "nll_sigma_free", "rate", "distortion")}
    out["active_units"] = active_units(q.mu)
    out["iwae"] = None if q.deterministic else iwae_bound(model, objective, data.x_eval[: s.n_iwae], s.k, seed=s.seed)
    out.update(_holes(q, s))
    out.update(_sample_quality(model, data, data_cfg, s, samplers))
    factors = data.factors_eval
    out["mig"] = mig(q.mu.numpy(), factors) if factors is not None and model.latent_dim > 1 else None
    return {k: (None if out[k] is None else float(out[k])) for k in KEYS}


def _holes(q, s: EvalSettings) -> dict:
    n = s.n_probe
    agg = AggregatePosterior(bandwidth="scott" if q.deterministic else None).fit(
        q.mu[:n], None if q.logvar is None else q.logvar[:n], None if q.scale_tril is None else q.scale_tril[:n])
    return {"hole_fraction": agg.hole_fraction(s.tau, s.n_samples, s.seed),
            "marginal_kl": agg.marginal_kl(s.n_samples, s.seed)}


def _sample_quality(model, data, data_cfg, s: EvalSettings, samplers: dict | None) -> dict:
    """fd_prior and fd_gmm against held-out images; the classifier is trained on the full train split."""
    if data.y_train is None:
        return {"fd_prior": None, "fd_gmm": None}
    from vaeviz.data import load_dataset

    full = load_dataset(dataclasses.replace(data_cfg, n=None, per_class=None))
    clf = load_or_fit_classifier(classifier_key(data_cfg), full.x_train, full.y_train, steps=s.classifier_steps)
    samplers = samplers or fitted_samplers(model, data.x_train, None, 0, seed=s.seed)
    fd = frechet_by_sampler(clf, model, data.x_eval[: s.n_fd], {"gmm": samplers["gmm"]}, seed=s.seed)
    return {"fd_prior": fd["prior"], "fd_gmm": fd["gmm"]}
