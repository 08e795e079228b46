"""Checks run before a run exists: whatever would fail after training started fails here first.

`preflight(cfg)` raises `ConfigError` or `DataError` with the one-line message the config and data
layers use. The CLI (`train`, `sweep`, `resume`) calls it before creating or queueing a run, and
`vaeviz.train.train` calls it before its first step. It checks, in order:

- the device: `train.device=cuda|mps` on a machine whose torch cannot use it;
- the data: it loads (bounded by `data.max_data_bytes()`; cached, so the trainer only copies it)
  and its train split holds the `MIN_TRAIN_EXAMPLES` the ex-post GMM fitted at the end of
  training needs (`data.split_pool` refuses smaller splits, naming eval_fraction, n, per_class);
- the objective and network: both are built for the data's shape (the network on torch's meta
  device, so nothing is allocated), which refuses e.g. a conv net on vectors or GECO's λ₀ outside
  its clamps; the objective refuses data it cannot train on (`Objective.check_data`: GECO's fre and
  cla constraints on a dataset without labels); the training state (weights, gradients, two Adam
  moments: 16 bytes per parameter in float32) must fit `max_model_bytes()` (4 GB, or `$VAEVIZ_MAX_MODEL_BYTES`);
- the objective's latent groups (HFVAE's `objective.groups`) add up to `model.latent_dim` (checked
  before the data are loaded).

Seeds and every other bound are the config's own (`vaeviz.config`): numpy seeds must be < 2**32,
so `train.seed` and `data.seed` stop at 2**32 - 1.
"""

from __future__ import annotations

from vaeviz.config import ConfigError, RunConfig, show
from vaeviz.data import Dataset, format_bytes, load_dataset
from vaeviz.data.files import bytes_limit

DEFAULT_MAX_MODEL_BYTES = 4_000_000_000
BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments (twice that in float64)


def max_model_bytes() -> int:
    """The most bytes a run's training state may take: $VAEVIZ_MAX_MODEL_BYTES, default 4 GB."""
    try:
        return bytes_limit("VAEVIZ_MAX_MODEL_BYTES", DEFAULT_MAX_MODEL_BYTES)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_device(name: str) -> None:
    """Refuse `train.device=cuda|mps` when this machine's torch cannot use it."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build, no GPU visible" if torch.version.cuda else "CPU build"
        raise ConfigError(f"train.device=cuda: CUDA is not available on this machine (torch {torch.__version__}, "
                          f"{build}); use train.device=auto or cpu")
    mps = getattr(torch.backends, "mps", None)
    if name == "mps" and not (mps is not None and mps.is_available()):
        build = "no Apple GPU visible" if mps is not None and mps.is_built() else "built without MPS"
        raise ConfigError(f"train.device=mps: MPS is not available on this machine (torch {torch.__version__}, "
                          f"{build}); use train.device=auto or cpu")


def check_model(cfg: RunConfig, data: Dataset) -> None:
    """Build the objective and, on the meta device, the network for `data`; refuse data the objective cannot
    train on and an oversized network."""
    import torch

    from vaeviz.nets import build_model
    from vaeviz.objectives import build_objective

    objective = build_objective(cfg.objective, data.dim)
    objective.check_data(data)
    with torch.device("meta"):
        model = build_model(cfg.model, data.shape, objective.net_spec())
    n = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in objective.parameters())
    width = 2 if getattr(cfg.train, "dtype", "float32") == "float64" else 1
    need, limit = n * BYTES_PER_PARAMETER * width, max_model_bytes()
    if need > limit:
        raise ConfigError(f"invalid value for 'model.hidden': {show(cfg.model.hidden)} gives a network of {n:,} "
                          f"parameters whose training state needs {format_bytes(need)}, above the "
                          f"{format_bytes(limit)} limit (set VAEVIZ_MAX_MODEL_BYTES to change it)")


def check_latent_groups(cfg: RunConfig) -> None:
    """Refuse latent groups of the objective (HFVAE's `objective.groups`) that do not add up to `model.latent_dim`."""
    from vaeviz.objectives import latent_groups

    latent_groups(cfg.objective, cfg.model.latent_dim)


def preflight(cfg: RunConfig) -> None:
    """Raise ConfigError / DataError (one line) for a config that cannot train to the end."""
    check_device(cfg.train.device)
    check_latent_groups(cfg)
    data = load_dataset(cfg.data)
    check_model(cfg, data)
