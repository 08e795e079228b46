"""What several lessons share: base configs, decoded prior samples, and number formatting for sentences."""

from __future__ import annotations

import numpy as np

from vaeviz.analysis.batching import decode_batched
from vaeviz.config import RunConfig
from vaeviz.lessons.lesson import LessonRuns

DIGITS = {"data.name": "digits", "model.hidden": [256, 256], "model.latent_dim": 8, "train.seed": 0}


def base(overrides: dict, steps: int, eval_every: int | None = None) -> RunConfig:
    """A lesson run: `overrides` on the defaults, `steps` steps, ~6 evaluations and checkpoints."""
    every = eval_every or max(1, steps // 6)
    return RunConfig().with_overrides({**overrides, "train.steps": steps, "train.eval_every": every,
                                       "train.checkpoint_every": every})


def prior_samples(runs: LessonRuns, roles, n: int = 10, seed: int = 0) -> tuple[dict, tuple | None]:
    """({role: g(z) of n draws z ~ N(0, I), the same draws for every role}, image shape) at each run's last
    checkpoint; roles without a checkpoint are left out."""
    out, shape = {}, None
    for role in roles:
        setup, _ = runs.model(role)
        if setup is None:
            continue
        z = np.random.default_rng(seed).standard_normal((n, setup.model.latent_dim)).astype(np.float32)
        out[role] = decode_batched(setup.model, z)
        shape = setup.data.shape
    return out, shape


def pct(a: float, b: float) -> str:
    """|a − b| / b as a percentage, for sentences."""
    return f"{abs(a - b) / abs(b):.0%}"
