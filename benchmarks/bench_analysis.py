"""Speed of the analysis layer against the targets of issue 4 (this machine's CPU, all its cores).

- aggregate posterior of 10,000 diagonal posteriors on a 256×256 grid (target ≤ 1 s), and the same
  through the generic point-wise log-sum-exp path for comparison (timed on 64×64 points, times 16);
- IWAE with k = 100 on 1,000 real MNIST test images, MLP 784-512-512-16 with random weights
  (timing only needs the shapes; target ≤ 5 s);
- a 16×16 traversal grid decoded by the same network (target ≤ 50 ms).
Times are the best of a few repeats (the cores may be shared). Prints `name: value` lines; the last
line is the headline: the worst time/target ratio (< 1: all met).
Run: .venv/bin/python benchmarks/bench_analysis.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from vaeviz.analysis.aggregate import AggregatePosterior
from vaeviz.analysis.likelihood import iwae_bound
from vaeviz.analysis.traversal import traversal_grid
from vaeviz.config import ModelConfig, ObjectiveConfig
from vaeviz.nets import build_model
from vaeviz.objectives import build_objective

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
TARGETS = {"aggregate_grid_256_s": 1.0, "iwae_k100_mnist1000_s": 5.0, "traversal_grid_16x16_ms": 50.0}


def best_of(fn, repeats: int = 3) -> float:
    """Smallest wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def mnist_images(n: int) -> np.ndarray:
    """The first n real MNIST test images as (n, 1, 28, 28) float32 in [0, 1] (random ones if absent)."""
    if MNIST.exists():
        from vaeviz.data import read_idx

        return (read_idx(MNIST)[:n, None] / 255.0).astype(np.float32)
    print("note: MNIST test images not found, timing on random images")
    return np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)


def bench_aggregate() -> dict[str, float]:
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(10_000, 2)), rng.normal(-3.0, 0.5, size=(10_000, 2))
    agg = AggregatePosterior().fit(mu, logvar)
    fast = best_of(lambda: AggregatePosterior().fit(mu, logvar).grid(3.5, 256))
    gx, gy = np.meshgrid(np.linspace(-3.5, 3.5, 64), np.linspace(-3.5, 3.5, 64))  # 1/16 of the grid: linear cost
    slow = 16 * best_of(lambda: agg.log_density(np.stack([gx.ravel(), gy.ravel()], 1)), repeats=1)
    holes = best_of(lambda: agg.hole_fraction(n_samples=10_000), repeats=1)
    return {"aggregate_grid_256_s": fast, "aggregate_grid_256_pointwise_est_s": slow,
            "ratio_aggregate_grid_separable_speedup": slow / fast, "hole_fraction_10k_samples_s": holes}


def bench_decoder() -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=16, hidden=[512, 512]), (1, 28, 28))
    objective = build_objective(ObjectiveConfig.build({"name": "vae"}), 784)
    x = mnist_images(1000)
    iwae = best_of(lambda: iwae_bound(model, objective, x, k=100), repeats=3)
    values = np.linspace(-3, 3, 16)
    trav = best_of(lambda: traversal_grid(model, np.zeros(16), values), repeats=5)
    return {"iwae_k100_mnist1000_s": iwae, "traversal_grid_16x16_ms": 1000 * trav}


def main() -> None:
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"load_average_1min: {os.getloadavg()[0]:.2f}")  # other processes sharing the cores inflate the times
    results = {**bench_aggregate(), **bench_decoder()}
    for name, value in results.items():
        print(f"{name}: {value:.4g}")
    ratios = {name: results[name] / target for name, target in TARGETS.items()}
    for name, ratio in ratios.items():
        print(f"ratio_{name}_to_target: {ratio:.3g}")
    print(f"ratio_worst_time_to_target: {max(ratios.values()):.3g}")


if __name__ == "__main__":
    main()
