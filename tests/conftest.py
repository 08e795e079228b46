"""Shared fixtures: an isolated VAEVIZ_HOME per test and the real data folder when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# torch.compile's on-disk kernel cache (default /tmp/torchinductor_<user>) is keyed without
# ATEN_CPU_CAPABILITY: a kernel cached by a run under another capability is loaded as it is, and gave
# wrong numbers under avx2, a C++ build error under default and a heap corruption natively. The suite
# compiles into a cache of its own, which every process it starts inherits.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="vaeviz-tests-inductor-"))


def shared_data_dir() -> Path | None:
    """`$VAEVIZ_DATA_DIR`, else ../shared/data beside the repository, when it exists."""
    env = os.environ.get("VAEVIZ_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def data_dir() -> Path:
    """The real data folder (MNIST test set); skips with the reason when it is absent."""
    path = shared_data_dir()
    if path is None or not (path / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found: set VAEVIZ_DATA_DIR or place ../shared/data/mnist beside the repo")
    return path


@pytest.fixture(autouse=True)
def vaeviz_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty run store."""
    home = tmp_path / "vaeviz_home"
    monkeypatch.setenv("VAEVIZ_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    """One intra-op thread, also for `train.threads=0` (auto): the suite runs beside its own worker
    and app processes, where a second thread only oversubscribes the cores."""
    torch.set_num_threads(1)
    monkeypatch.setattr("vaeviz.runtime._CORES", 1)
    yield


@pytest.fixture(scope="session")
def geco_vs_beta_trained(tmp_path_factory):
    """Lesson 2's runs trained once for the session: (store, what the first `train_here` did). Lesson 5 (holes)
    reuses exactly these runs, so its test shares them instead of training them again."""
    from vaeviz.lessons import LESSONS
    from vaeviz.runs import RunStore

    store = RunStore(tmp_path_factory.mktemp("geco_vs_beta"))
    return store, train_on_one_thread(store, LESSONS["geco-vs-beta"])


def train_on_one_thread(store, lesson):
    """`train_here` on one thread, like the rest of the suite, from a fixture wider than one test (where the
    autouse `_few_threads` does not reach); the thread count is restored after."""
    from vaeviz.lessons.runner import train_here

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("vaeviz.runtime._CORES", 1)
            return train_here(store, lesson)
    finally:
        torch.set_num_threads(threads)
