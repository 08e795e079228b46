"""How many modes of a labelled mixture a model's code still separates (Taming VAEs, Rezende & Viola 2018,
Fig. 2: as β grows the β-VAE stops telling modes apart, in jumps — phase transitions).

For each mode j the mean reconstruction m_j = mean over its held-out points of g(μ(x)) is computed; two modes
are merged when their mean reconstructions are closer than half the smallest distance between the data's own
mode centres c_j (so they would be confused at the data's scale), and the modes separated are the connected
groups of that "merged" relation. Reconstructions are decoder means at the posterior mean: deterministic.
"""

from __future__ import annotations

import numpy as np

from vaeviz.analysis.batching import decode_batched, encode_batched


def groups(points: np.ndarray, radius: float) -> int:
    """Connected groups of points (K, D) linked when closer than `radius`."""
    near = np.linalg.norm(points[:, None] - points[None], axis=-1) < radius  # (K, K)
    seen, count = set(), 0
    for start in range(len(points)):
        if start in seen:
            continue
        count, stack = count + 1, [start]
        while stack:
            a = stack.pop()
            if a not in seen:
                seen.add(a)
                stack += [b for b in np.flatnonzero(near[a]) if b not in seen]
    return count


def separated_modes(model, x: np.ndarray, y: np.ndarray) -> int:
    """The number of modes (labels y) of data x (N, D) whose mean reconstructions stay apart (module docstring)."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    labels = np.unique(y)
    centres = np.stack([x[y == j].mean(0) for j in labels])  # (K, D)
    recon = decode_batched(model, encode_batched(model, x).mu).astype(np.float64)  # (N, D)
    means = np.stack([recon[y == j].mean(0) for j in labels])  # (K, D)
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(len(labels), 1)]
    return groups(means, 0.5 * float(gaps.min()))
