"""The machine's limit: fp32 matmul peak, and the FLOP rate achieved by a K = 8 batched comparison.

The peak is the best of several large square fp32 matmuls using every CPU thread. The batched
comparison trains K MLP VAEs that share data and network (different seeds) as one stacked model
(`vaeviz.train`, `vaeviz.stacking`); its FLOPs count every matmul of forward and backward: for each linear layer
2·B·in·out forward, the same for the weight gradient, and the same again for the input gradient
(except the first encoder layer, whose input needs none). Elementwise work is not counted.
A single run of the same network is timed alongside, both with the trainer's automatic thread
count (1 for the digits net) and with every core; `ratio_batched_vs_single` divides by the
faster of the two. The batched model uses the automatic count for K times a run's work.
With `--objectives vae,beta_vae,...` the K runs are those objectives on one seed (the app's
*Launch comparison*), and the single rate is theirs one after another (K runs / total time).

Usage: python benchmarks/bench_limit.py [--k 8] [--steps 200] [--repeats 5] [--case digits|mnist]
                                        [--objectives vae,beta_vae,sigma_vae,geco] [--set train.backward=autograd]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from vaeviz.build import build
from vaeviz.config import RunConfig
from vaeviz.member import MemorySink
from vaeviz.train import Trainer, train

CASES = {
    "mnist": ["data.name=mnist", "model.hidden=512,512", "model.latent_dim=16", "train.batch_size=256"],
    "digits": ["data.name=digits", "model.hidden=256,256", "model.latent_dim=2", "train.batch_size=64"],
}


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n×n by n×n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - begin)
    return 2 * n**3 / best / 1e9


def matmul_flops(cfg: RunConfig) -> float:
    """Matmul FLOPs of one training step (forward + backward) of one run."""
    model, b = build(cfg).model, cfg.train.batch_size
    total = 0.0
    for part in (model.encoder, model.decoder):
        for i, layer in enumerate(m for m in part.modules() if isinstance(m, nn.Linear)):
            fwd = 2 * b * layer.in_features * layer.out_features
            needs_input_grad = not (part is model.encoder and i == 0)
            total += fwd * (3 if needs_input_grad else 2)
    return total


def solo_rate(cfgs: list[RunConfig], steps: int) -> float:
    """Steps/s of the runs trained alone one after another."""
    return len(cfgs) * steps / sum(train(cfg, MemorySink()).seconds for cfg in cfgs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", default="digits", choices=sorted(CASES))
    parser.add_argument("--objectives", default="", help="comma-separated objectives instead of K seeds")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = parser.parse_args()
    cores = torch.get_num_threads()
    common = CASES[args.case] + [f"train.steps={args.steps}", f"train.eval_every={args.steps}",
                                 f"train.checkpoint_every={args.steps}", "train.probe_size=100", "train.device=cpu",
                                 *args.set]
    runs = [f"objective.name={o}" for o in args.objectives.split(",")] if args.objectives else \
        [f"train.seed={s}" for s in range(args.k)]
    cfgs = [RunConfig().with_overrides(common + [run]) for run in runs]
    solos = cfgs if args.objectives else cfgs[:1]  # different objectives train at different speeds
    peak = matmul_peak()
    single, single_all, batched = [], [], []
    for _ in range(args.repeats):
        single.append(solo_rate(solos, args.steps))
        single_all.append(solo_rate([c.with_overrides([f"train.threads={cores}"]) for c in solos], args.steps))
        results = Trainer(cfgs, [MemorySink() for _ in cfgs]).run()
        batched.append(len(cfgs) * args.steps / results[0].seconds)
        torch.set_num_threads(cores)
    one = max(statistics.median(single), statistics.median(single_all))
    many = statistics.median(batched)
    achieved = many * matmul_flops(cfgs[0]) / 1e9
    print(f"cores: {cores}")
    print(f"matmul_peak_gflops: {peak:.1f}")
    print(f"single_steps_per_s_{args.case}_auto_threads: {statistics.median(single):.1f}")
    print(f"single_steps_per_s_{args.case}_{cores}_threads: {statistics.median(single_all):.1f}")
    print(f"batched_k{len(cfgs)}_model_steps_per_s_{args.case}: {many:.1f}")
    print(f"ratio_batched_vs_single: {many / one:.2f}")
    print(f"achieved_gflops: {achieved:.1f}")
    print(f"fraction_of_peak: {achieved / peak:.2f}")


if __name__ == "__main__":
    main()
