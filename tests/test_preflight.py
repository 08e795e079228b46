"""Preflight: what would fail after training started is refused before step 1, with the config's one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaeviz.config import ConfigError, RunConfig
from vaeviz.data import DataError
from vaeviz.member import MemorySink
from vaeviz.preflight import check_device, max_model_bytes, preflight
from vaeviz.presets import PRESETS, preset_config
from vaeviz.train import train

TINY = ["data.name=digits", "model.hidden=16", "train.steps=3", "train.eval_every=3", "train.probe_size=20"]


def test_defaults_and_non_mnist_presets_pass():
    preflight(RunConfig())  # digits, 256-256 MLP
    for name, preset in PRESETS.items():
        if preset.overrides.get("data.name") != "mnist":
            preflight(preset_config(name))


def test_the_trainer_refuses_before_its_first_step():
    sink = MemorySink()
    with pytest.raises(DataError, match=r"train split has 1 example\(s\)"):
        train(RunConfig().with_overrides(TINY + ["data.n=1"]), sink)
    assert sink.rows == [] and sink.snapshots == {}


def test_two_training_examples_train_to_the_end_even_with_a_larger_batch(tmp_path):
    """The real minimum: 2 train codes are enough for the ex-post GMM; the batch samples with replacement."""
    cfg = RunConfig().with_overrides(TINY + ["data.n=2", "train.batch_size=64"])
    preflight(cfg)
    result = train(cfg, MemorySink(), workdir=tmp_path)
    assert result.steps == 3 and len(list((tmp_path / "samplers").glob("*.npz"))) == 2


def test_device_messages(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^train\.device=cuda: CUDA is not available on this machine \(torch "):
        check_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^train\.device=mps: MPS is not available on this machine \(torch "):
        check_device("mps")
    check_device("cpu")
    check_device("auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_passes_where_there_is_a_gpu():
    preflight(RunConfig().with_overrides(TINY + ["train.device=cuda"]))


def test_model_size_is_bounded_without_allocating(monkeypatch):
    big = RunConfig().with_overrides(TINY + ["model.hidden=" + ",".join(["8192"] * 32)])
    with pytest.raises(ConfigError, match=r"'model\.hidden'.* gives a network of 4,1\d\d,\d{3},\d{3} parameters"):
        preflight(big)  # 2 billion parameters: refused from the meta device, nothing allocated
    monkeypatch.setenv("VAEVIZ_MAX_MODEL_BYTES", "1000")
    with pytest.raises(ConfigError, match=r"2,244 parameters whose training state needs 35.9 kB, above the 1 kB limit"):
        preflight(RunConfig().with_overrides(TINY))
    monkeypatch.setenv("VAEVIZ_MAX_MODEL_BYTES", "lots")
    with pytest.raises(ConfigError, match=r"VAEVIZ_MAX_MODEL_BYTES='lots' is not a positive whole number"):
        max_model_bytes()


def test_objective_and_network_errors_come_first(tmp_path):
    with pytest.raises(ConfigError, match=r"'objective\.lambda_init'"):
        preflight(RunConfig().with_overrides(TINY + ["objective.name=geco", "objective.lambda_init=1e9"]))
    path = tmp_path / "vectors.npz"
    np.savez(path, x=np.full((10, 6), 0.5, np.float32))
    with pytest.raises(ConfigError, match=r"'conv' needs images"):
        preflight(RunConfig().with_overrides(TINY + ["model.arch=conv", "data.name=npz", f"data.path={path}"]))
