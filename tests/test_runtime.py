"""The runtime choices: thread count, denormal flushing, torch.compile and its eager fallback."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

import vaeviz.runtime as runtime
from vaeviz.build import build
from vaeviz.config import RunConfig
from vaeviz.member import MemorySink
from vaeviz.train import train

BASE = ["data.name=digits", "model.latent_dim=2", "model.hidden=64,64", "train.steps=20", "train.eval_every=20",
        "train.checkpoint_every=20", "train.batch_size=32", "train.probe_size=50"]


def _cfg(*extra):
    return RunConfig().with_overrides(BASE + list(extra))


def _train_rows(cfg):
    sink = MemorySink()
    train(cfg, sink)
    return {(s, n): v for s, split, n, v in sink.rows if split == "train"}


def test_step_flops_counts_six_flops_per_weight_and_example():
    model = build(_cfg()).model
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.in_features * m.out_features + m.out_features for m in linears)  # an MLP has nothing else
    assert runtime.step_flops(model, 32) == 6 * 32 * weights


def test_auto_threads_one_for_small_nets_every_core_for_large(monkeypatch):
    monkeypatch.setattr(runtime, "_CORES", 4)
    small = build(_cfg()).model  # ~10k weights: ~2 MFLOP per step of 32
    large = build(_cfg("model.hidden=1024,1024")).model  # ~2.3M weights: ~440 MFLOP per step of 32
    assert runtime.cpu_threads(0, small, 32) == 1
    assert runtime.cpu_threads(0, large, 32) == 4
    assert runtime.cpu_threads(3, small, 32) == 3  # an explicit count is kept


def _has_flush_to_zero() -> bool:
    supported = torch.set_flush_denormal(True)  # False where the CPU has no such mode (non-x86)
    torch.set_flush_denormal(False)
    return supported


needs_ftz = pytest.mark.skipif(not _has_flush_to_zero(), reason="this CPU has no flush-to-zero mode (x86 only)")


@needs_ftz
def test_flushed_denormals_zeroes_subnormal_results_then_restores():
    tiny = torch.tensor([1e-30], dtype=torch.float32)
    assert (tiny * 1e-10).item() > 0  # 1e-40 is a float32 denormal
    with runtime.flushed_denormals():
        assert (tiny * 1e-10).item() == 0.0
    assert (tiny * 1e-10).item() > 0


@needs_ftz
@pytest.mark.skipif(runtime._omp_libs() is None, reason="torch's OpenMP runtime here is not the libgomp it patches")
def test_flushed_denormals_reaches_the_openmp_workers():
    x = torch.full((1 << 20,), 1e-39)  # denormal; 2 threads split this op between them
    torch.set_num_threads(2)
    with runtime.flushed_denormals():
        assert (x * 0.5 == 0).all()  # also the worker's half
    assert (x * 0.5 > 0).all()


def test_compile_auto_is_off_on_cpu_and_on_for_cuda():
    model = build(_cfg()).model
    assert runtime.maybe_compile(model, "auto", torch.device("cpu")) is None
    assert runtime.maybe_compile(model, "off", torch.device("cuda")) is None
    assert runtime.maybe_compile(model, "auto", torch.device("cuda")) is not None


def test_old_boolean_compile_values_still_load():
    assert RunConfig.from_dict({"train": {"compile": False}}).train.compile == "off"
    assert RunConfig.from_dict({"train": {"compile": True}}).train.compile == "on"


def test_a_failing_compile_falls_back_to_the_eager_stream(monkeypatch, caplog):
    eager = _train_rows(_cfg("objective.name=geco"))

    def broken(fn, **_):
        def call(*args, **kwargs):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="vaeviz"):
        fallback = _train_rows(_cfg("objective.name=geco", "train.compile=on"))
    assert fallback == eager  # GECO's moving average was not advanced twice
    assert "torch.compile failed (RuntimeError: no compiler here)" in caplog.text


@pytest.mark.slow
def test_compiled_networks_train_like_eager(caplog):
    eager = _train_rows(_cfg())
    with caplog.at_level(logging.WARNING, logger="vaeviz"):
        compiled = _train_rows(_cfg("train.compile=on"))
    assert "torch.compile failed" not in caplog.text  # it really ran compiled
    assert compiled.keys() == eager.keys()
    a = np.array([eager[k] for k in sorted(eager)])
    b = np.array([compiled[k] for k in sorted(eager)])
    assert np.allclose(a, b, rtol=1e-4, atol=1e-6)
