"""How a run uses the machine: device, CPU threads, denormal flushing and torch.compile.

- Threads: a small net's step is a chain of tiny ops, and a second intra-op thread only adds
  synchronisation (on a loaded 2-core machine it made digits training ~40× slower), while a
  large net's matmuls do scale. `train.threads=0` (auto) gives one thread below
  `PARALLEL_FLOPS` per step and every core above it.
- Denormals: Adam's first moment of a parameter whose gradient is zero decays by β₁ each step
  and reaches the float32 denormal range after ~800 steps, where x86 arithmetic is ~100× slower.
  Training flushes them to zero (values below 1.2e-38 become 0; no logged digit changes), on
  the training thread and on torch's OpenMP worker threads.
- Compile: `train.compile=auto` compiles the encoder and decoder on CUDA only: on this project's
  2-core CPU a 3,000-step digits run took 9.9 s compiled from cold (5.9 s from inductor's cache)
  against 4.7 s eager. A first step that fails compiled is redone eagerly, with a warning.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from vaeviz import analytic
from vaeviz.nets import VAEModel

PARALLEL_FLOPS = 3e8  # estimated FLOPs per step above which every core is used
_CORES = torch.get_num_threads()  # torch's own default (physical cores), before any run changes it


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if available, else Apple MPS, else CPU; an explicit name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def step_flops(model: VAEModel, batch_size: int) -> float:
    """Estimated FLOPs of one training step: 2·B·P forward and 4·B·P backward for P weights
    (exact for the matmuls of an MLP; a lower bound for conv nets, which reuse their weights)."""
    return 6.0 * batch_size * sum(p.numel() for p in model.parameters())


def cpu_threads(requested: int, model: VAEModel, batch_size: int) -> int:
    """`requested` when set (> 0); otherwise 1, or every core for a step above PARALLEL_FLOPS."""
    if requested > 0:
        return requested
    return max(1, _CORES) if step_flops(model, batch_size) >= PARALLEL_FLOPS else 1


def set_cpu_threads(device: torch.device, requested: int, model: VAEModel, batch_size: int) -> None:
    """Set torch's intra-op threads for training `model` on `device` (CPU only; see `cpu_threads`)."""
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(requested, model, batch_size))


@contextmanager
def flushed_denormals():
    """Flush denormal floats to zero on this thread and torch's OpenMP threads for the duration,
    then back to torch's default (off). Where the CPU has no such mode this does nothing."""
    torch.set_flush_denormal(True)
    _copy_fp_env_to_pool()
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        _copy_fp_env_to_pool()


@functools.cache
def _omp_libs() -> tuple | None:
    """(libgomp, libm) with torch's own libgomp (other packages, e.g. scikit-learn, load theirs) on
    Linux, or None (other platforms, another OpenMP)."""
    own = str(Path(torch.__file__).parent / "lib")
    try:
        with open("/proc/self/maps") as maps:
            path = next(p for p in (line.split()[-1] for line in maps) if p.startswith(own) and "libgomp" in p)
        gomp, libm = ctypes.CDLL(path), ctypes.CDLL(ctypes.util.find_library("m"))
        gomp.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        return gomp, libm
    except (OSError, StopIteration, AttributeError, TypeError):
        return None


def _copy_fp_env_to_pool() -> None:
    """Give every thread of this thread's OpenMP pool this thread's floating-point environment.

    The flush-to-zero bits (x86 MXCSR) are per thread, so without this the pool's workers keep
    computing with denormals: a K = 8 digits batch on 2 threads fell from ~1,000 to ~560
    model-steps/s after 800 steps. The pool runs libm's `fesetenv` on a copy of this thread's
    environment, through libgomp's `GOMP_parallel(fn, data, 0 = every thread, 0)`."""
    libs = _omp_libs()
    if libs is None:
        return
    gomp, libm = libs
    env = ctypes.create_string_buffer(256)  # fenv_t is 32 bytes on x86-64
    if libm.fegetenv(env) == 0:
        gomp.GOMP_parallel(ctypes.cast(libm.fesetenv, ctypes.c_void_p), env, 0, 0)


class CompiledNets:
    """torch.compile'd forwards of a model's encoder and decoder, installed only inside
    `installed()` (the training steps), so evaluations and analysers keep the eager networks.
    The parameters and state_dict are untouched."""

    def __init__(self, model: VAEModel):
        self.nets = (model.encoder, model.decoder)
        self.forwards = [torch.compile(net.forward) for net in self.nets]
        self.ready = False  # set once a whole step has run compiled

    @contextmanager
    def installed(self):
        for net, forward in zip(self.nets, self.forwards):
            net.forward = forward
        try:
            yield
        finally:
            for net in self.nets:
                net.__dict__.pop("forward", None)


def maybe_compile(model: VAEModel, mode: str, device: torch.device) -> CompiledNets | None:
    """CompiledNets when `mode` asks for it (auto: on CUDA only), else None."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    return CompiledNets(model)


@dataclass
class Plan:
    """How a batch of runs trains: compiled networks (or None) and whether the hand-derived backward
    pass applies (`analytic`), and would apply with compile off (`analytic_eager`)."""

    compiled: CompiledNets | None
    analytic: bool
    analytic_eager: bool

    def without_compile(self) -> Plan:
        return Plan(None, self.analytic_eager, self.analytic_eager)


def plan(cfgs: list, setups: list, nets) -> Plan:
    """Every runtime choice of K ≥ 1 runs trained together, made once: CPU threads (set here, for K
    times a run's work), torch.compile (one run only) and the backward pass: hand-derived
    (`vaeviz.analytic`) when every run asks for `train.backward=auto` and fits it, and the nets are
    plain MLPs; compiled runs keep autograd."""
    tc, first = cfgs[0].train, setups[0]
    set_cpu_threads(first.device, tc.threads, first.model, len(setups) * tc.batch_size)
    compiled = maybe_compile(first.model, tc.compile, first.device) if len(setups) == 1 else None
    fits = nets.plain_mlp() and all(cfg.train.backward == "auto" and analytic.supports(s.model, s.objective)
                                    for cfg, s in zip(cfgs, setups))
    return Plan(compiled, fits and compiled is None, fits)
