"""Metrics and analysers of trained runs: pure functions and scikit-learn style fit/transform objects.

One idea per module: `likelihood` (ELBO, σ-free NLL, IWAE, active units), `aggregate` (aggregate
posterior, holes, marginal KL), `tiling` (posterior ellipses and samples), `traversal` (traversals,
manifold, lerp/slerp), `quality` (classifier features, Fréchet distance), `disentangle` (MIG, MI/TC/
dimKL), `projection` (PCA/UMAP), `evaluate` (`vaeviz eval`), `batching` (bounded-memory encode/decode).
"""

from vaeviz.analysis.aggregate import HOLE_TAU, AggregatePosterior, GridDensity, log_prior
from vaeviz.analysis.batching import decode_batched, encode_batched
from vaeviz.analysis.disentangle import kl_decomposition, mig
from vaeviz.analysis.likelihood import active_units, elbo_terms, iwae_bound, iwae_per_example, sigma_free_nll
from vaeviz.analysis.projection import PCAProjection, project
from vaeviz.analysis.quality import SampleClassifier, frechet_distance, load_or_fit_classifier
from vaeviz.analysis.tiling import ellipses, posterior_samples
from vaeviz.analysis.traversal import decode_manifold, interpolate, lerp, slerp, traversal_grid

__all__ = [
    "HOLE_TAU", "AggregatePosterior", "GridDensity", "PCAProjection", "SampleClassifier", "active_units",
    "decode_batched", "decode_manifold", "elbo_terms", "ellipses", "encode_batched", "frechet_distance",
    "interpolate", "iwae_bound", "iwae_per_example", "kl_decomposition", "lerp", "load_or_fit_classifier", "log_prior",
    "mig", "posterior_samples", "project", "sigma_free_nll", "slerp", "traversal_grid",
]
