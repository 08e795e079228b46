"""Training speed: vaeviz's trainer against pythae's trainer, same network, data, batch and steps.

Both sides train an MLP VAE with a Bernoulli decoder, Adam (lr 1e-3), on the CPU, back to back
in this process, alternating sides over >= 5 repeats; the medians of steps/s are printed with
their ratio. Both sides get the same number of intra-op threads: the number vaeviz's trainer
picks for the case (`train.threads=0`, auto: 1 for the digits net, every core for the MNIST one),
or `--threads N` for both.

What each side's clock includes:
- vaeviz: `vaeviz.train.train` with its own timer (`TrainResult.seconds`): minibatch sampling,
  forward, loss, backward, optimiser step, metric buffering and the flushes to an in-memory
  sink. Not included: data loading, model build, the held-out evaluations. Its runtime choices
  are its defaults: FastAdam, denormals flushed while training, `train.compile=auto` (eager on CPU).
- pythae: `BaseTrainer.train_step` over whole epochs (its DataLoader, forward, loss, backward,
  optimiser step, per-step `loss.item()`). Not included: model/trainer construction, its
  evaluation epochs and checkpoint saving, which `TrainingPipeline` adds around them.

Usage: python benchmarks/bench_train.py [--repeats 5] [--steps 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn

from vaeviz.build import build
from vaeviz.config import RunConfig
from vaeviz.data import load_dataset
from vaeviz.member import MemorySink
from vaeviz.runtime import cpu_threads, flushed_denormals
from vaeviz.train import train

CASES = {
    "digits": dict(data=["data.name=digits", "data.n=1500", "data.eval_fraction=0.1"], hidden=[256, 256], latent=2,
                   batch=64),
    "mnist": dict(data=["data.name=mnist"], hidden=[512, 512], latent=16, batch=256),
}


def vaeviz_config(case: dict, steps: int) -> RunConfig:
    hidden = ",".join(map(str, case["hidden"]))
    return RunConfig().with_overrides(case["data"] + [
        "objective.name=vae", f"model.hidden={hidden}", f"model.latent_dim={case['latent']}",
        f"train.batch_size={case['batch']}", f"train.steps={steps}", f"train.eval_every={steps}",
        f"train.checkpoint_every={steps}", "train.device=cpu", "train.probe_size=100"])


def vaeviz_rate(cfg: RunConfig) -> float:
    result = train(cfg, MemorySink())
    return cfg.train.steps / result.seconds


def pythae_rate(x: np.ndarray, case: dict, steps: int) -> float:
    """Steps/s of pythae's BaseTrainer on the same MLP (epochs rounded up to cover `steps`)."""
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # pythae's progress bars
        return _pythae_rate(x, case, steps)


def _pythae_rate(x: np.ndarray, case: dict, steps: int) -> float:
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    dim, hidden, latent = x.shape[1], case["hidden"], case["latent"]

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(dim, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU())
            self.mu, self.logvar = nn.Linear(hidden[1], latent), nn.Linear(hidden[1], latent)

        def forward(self, x):
            h = self.body(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(latent, hidden[1]), nn.ReLU(), nn.Linear(hidden[1], hidden[0]),
                                     nn.ReLU(), nn.Linear(hidden[0], dim), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    model = VAE(VAEConfig(input_dim=(dim,), latent_dim=latent, reconstruction_loss="bce"), Encoder(), Decoder())
    per_epoch = -(-len(x) // case["batch"])
    epochs = -(-steps // per_epoch)
    with tempfile.TemporaryDirectory() as out:
        config = BaseTrainerConfig(output_dir=out, learning_rate=1e-3, per_device_train_batch_size=case["batch"],
                                   num_epochs=epochs, no_cuda=True, seed=0)
        trainer = BaseTrainer(model, BaseDataset(torch.from_numpy(x), torch.zeros(len(x))), training_config=config)
        trainer.prepare_training()
        begin = time.perf_counter()
        for epoch in range(1, epochs + 1):
            trainer.train_step(epoch)
        return epochs * per_epoch / (time.perf_counter() - begin)


def matmul_ceiling(dim: int, case: dict, repeats: int = 30) -> float:
    """Steps/s of a step that did nothing but the network's matmuls (forward, weight gradients,
    input gradients but the first layer's) at the current thread count: no trainer can beat it."""
    hidden, latent, b = case["hidden"], case["latent"], case["batch"]
    sizes = list(zip([dim, *hidden], [*hidden, 2 * latent])) + list(zip([latent, *hidden[::-1]], [*hidden[::-1], dim]))
    mats = [(torch.randn(b, i), torch.randn(o, i), torch.randn(b, o)) for i, o in sizes]  # input, weight, grad

    def step():
        for n, (h, w, g) in enumerate(mats):
            h @ w.T, g.T @ h
            if n:
                g @ w

    step()
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - begin)
    return 1.0 / best


def bench_case(name: str, repeats: int, steps: int, threads: int) -> float:
    case = CASES[name]
    cfg = vaeviz_config(case, steps).with_overrides([f"train.threads={threads}"])
    data = load_dataset(cfg.data)
    x = data.x_train.reshape(len(data.x_train), -1)
    threads = cpu_threads(cfg.train.threads, build(cfg).model, cfg.train.batch_size)
    print(f"threads_{name}: {threads}")
    ours, theirs, flushed = [], [], []
    for _ in range(repeats):
        ours.append(vaeviz_rate(cfg))
        torch.set_num_threads(threads)
        theirs.append(pythae_rate(x, case, steps))
        with flushed_denormals():  # not pythae's default: shows how much of the ratio is this flag
            flushed.append(pythae_rate(x, case, steps))
    a, b, c = statistics.median(ours), statistics.median(theirs), statistics.median(flushed)
    ceiling = matmul_ceiling(x.shape[1], case)
    print(f"vaeviz_steps_per_s_{name}: {a:.0f}")
    print(f"pythae_steps_per_s_{name}: {b:.0f}")
    print(f"pythae_with_denormals_flushed_steps_per_s_{name}: {c:.0f}  (vaeviz / that: {a / c:.2f})")
    print(f"matmul_only_steps_per_s_{name}: {ceiling:.0f}  (the ratio no trainer can pass: {ceiling / b:.2f})")
    return a / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1500, help="steps per timed run (MNIST: a fifth)")
    parser.add_argument("--cases", default="mnist,digits")
    parser.add_argument("--threads", type=int, default=0, help="threads for both sides (0: vaeviz's automatic choice)")
    args = parser.parse_args()
    logging.getLogger("pythae").setLevel(logging.ERROR)
    logging.getLogger("pythae.trainers.base_trainer.base_trainer").setLevel(logging.ERROR)
    steps = {"digits": args.steps, "mnist": max(args.steps // 5, 50)}
    ratios = {name: bench_case(name, args.repeats, steps[name], args.threads) for name in args.cases.split(",")}
    for name in ratios:
        print(f"ratio_vs_pythae_{name}: {ratios[name]:.2f}")


if __name__ == "__main__":
    main()
