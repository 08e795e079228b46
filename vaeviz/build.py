"""A run's pieces assembled from its config: data, model and objective on a device, for training
(`vaeviz.train`) and for analysis of a saved run (`load_run`)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from vaeviz.analysis.quality import classifier_key, load_or_fit_classifier
from vaeviz.checkpoint import checkpoint_steps, load_checkpoint
from vaeviz.config import DataConfig, RunConfig
from vaeviz.data import Dataset, load_dataset
from vaeviz.nets import VAEModel, build_model
from vaeviz.objectives import Objective, build_objective
from vaeviz.runtime import pick_device


@dataclass
class Setup:
    """Everything a run trains or evaluates with."""

    data: Dataset
    model: VAEModel
    objective: Objective
    device: torch.device


def build(cfg: RunConfig, device: torch.device | None = None) -> Setup:
    """Load the data and build objective and model, seeded by `train.seed`, in `train.dtype`. The objective
    refuses data it cannot train on (`Objective.check_data`), then is told the data (`Objective.set_data`)."""
    device = device or pick_device(cfg.train.device)
    data = load_dataset(cfg.data)
    torch.manual_seed(cfg.train.seed)
    objective = build_objective(cfg.objective, data.dim)
    objective.check_data(data)
    objective.set_data(data, functools.partial(feature_classifier, cfg.data))
    model = build_model(cfg.model, data.shape, objective.net_spec())
    dtype = getattr(torch, cfg.train.dtype)
    return Setup(data, model.to(device, dtype), objective.to(device, dtype), device)


def feature_classifier(data_cfg: DataConfig) -> torch.nn.Sequential:
    """The dataset's feature classifier (`vaeviz.analysis.quality`) as a torch module on the CPU: loaded from
    its cache, or fitted on the full training split of the labelled dataset (micro subsets ignored) exactly
    as `vaeviz eval` fits it. A fit reseeds torch; the caller's RNG state is restored, so a run's stream
    does not depend on whether the classifier was cached."""
    full = load_dataset(dataclasses.replace(data_cfg, n=None, per_class=None))
    with torch.random.fork_rng(devices=[]):
        return load_or_fit_classifier(classifier_key(data_cfg), full.x_train, full.y_train).net_


def load_run(cfg: RunConfig, workdir: Path | str, step: int | None = None, device: str = "cpu") -> tuple[Setup, int]:
    """Rebuild a run's data, model and objective from its artifact folder at `step` (default: the last)."""
    setup = build(cfg, torch.device(device))
    steps = checkpoint_steps(Path(workdir))
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {workdir}")
    chosen = max([s for s in steps if step is None or s <= step] or steps[:1])
    load_checkpoint(Path(workdir) / "checkpoints" / f"step_{chosen:08d}.pt", setup)
    setup.model.eval()
    return setup, chosen
