"""Reconstructions of a run's held-out examples: the inputs x beside what the model makes of them.

For an example x of the eval split (never seen in training):
- the mean reconstruction x̂ = g(μ_φ(x)), the decoder's mean at the posterior mean. g is the decoded mean in
  [0, 1] of every likelihood (`VAEModel.decode_mean`, σ-VAE eq. 4's g(z), GECO's g(z) in C(x, g(z)), Table 1
  of Rezende & Viola 2018); for a deterministic encoder (RAE, AE: Ghosh et al. 2020, eq. 11) μ_φ(x) is the
  code z = E_φ(x) itself;
- optionally one posterior sample x̃ = g(z), z = μ_φ(x) + σ_φ(x) ⊙ ε, ε ~ N(0, I) (the reparameterisation of
  Kingma & Welling 2014, eq. 10; z = μ + L ε for a full covariance), from a seeded generator; a deterministic
  encoder has none.
For vector data (toy 2-D sets) `decoded_prior` draws g(z), z ~ N(0, I): where the decoder puts the prior's mass
in data space, to be drawn over the data cloud. The model never knows its objective: any run reconstructs alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaeviz.analysis.batching import decode_batched, encode_batched


@dataclass
class Reconstructions:
    """Held-out examples and their reconstructions, all flattened: rows of the eval split `index` (N,), inputs x
    (N, D), means g(μ(x)) (N, D) and, when asked for, one posterior sample's g(z) (N, D); `shape` is one example's
    shape ((C, H, W) for images, (D,) for vectors)."""

    index: np.ndarray
    inputs: np.ndarray
    means: np.ndarray
    samples: np.ndarray | None
    shape: tuple[int, ...]

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


def example_rows(n_rows: int, n: int, labels=None) -> np.ndarray:
    """The first `n` rows of a split of `n_rows`, in order; with labels, classes taken in turn (the first example
    of every class, then the second of every class, ...), so a small grid shows every class."""
    if labels is None:
        return np.arange(min(n, n_rows))
    labels = np.asarray(labels)[:n_rows]
    rank = np.zeros(len(labels), np.int64)  # how many earlier examples share each example's label
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        rank[members] = np.arange(len(members))
    return np.lexsort((np.arange(len(labels)), labels, rank))[:n]  # by rank, then label, then row


@torch.no_grad()
def reconstruct(model, x, sample: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """g(μ(x)) and, when `sample`, g(z) of one z ~ q(z|x) drawn with a generator seeded by `seed`: x (N, *shape)
    -> (N, D) and (N, D), or None (no sample asked for, or a deterministic encoder, whose one code is μ)."""
    q = encode_batched(model, x)  # q(z|x) on the CPU: μ (N, L)
    means = decode_batched(model, q.mu)  # (N, D)
    if not sample or q.deterministic:
        return means, None
    gen = torch.Generator().manual_seed(seed)
    return means, decode_batched(model, q.rsample(generator=gen))  # z = μ + σ ⊙ ε


def eval_reconstructions(model, data, n: int = 16, sample: bool = True, seed: int = 0) -> Reconstructions:
    """Reconstructions of `n` examples of the eval split of `data` (a `Dataset`), classes in turn when labelled
    (`example_rows`)."""
    rows = example_rows(len(data.x_eval), n, data.y_eval)
    x = np.asarray(data.x_eval[rows])  # (n, *shape)
    means, samples = reconstruct(model, x, sample, seed)
    return Reconstructions(rows, x.reshape(len(rows), -1), means, samples, tuple(data.shape))


@torch.no_grad()
def decoded_prior(model, n: int, seed: int = 0) -> np.ndarray:
    """g(z) of `n` codes z ~ N(0, I) from a generator seeded by `seed`: (n, D)."""
    z = torch.randn((n, model.latent_dim), generator=torch.Generator().manual_seed(seed))  # (n, L)
    return decode_batched(model, z)
