"""Checkpoints on disk: the resume state of a run and the weights the explorer reads.

A run folder holds `checkpoint.pt` (everything the metric stream depends on: weights, objective
state, Adam, the minibatch generator and the noise stream), the one before it as
`checkpoint.prev.pt` (so a batch killed while saving its runs one after another still finds a step
all of them saved), and `checkpoints/step_*.pt` (weights only, every `checkpoint_every` steps).
Every file is written to a temporary name and moved into place, and loaded with `weights_only=True`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

RESUME_FILES = ("checkpoint.pt", "checkpoint.prev.pt")  # the latest resume state and the one before it


def save_checkpoint(workdir: Path, step: int, setup, opt, gen: torch.Generator,
                    noise: torch.Generator | None = None, *, weights: bool = True) -> None:
    """The full state for resume (checkpoint.pt; the one it replaces becomes checkpoint.prev.pt) and, with
    `weights`, the weights at this step (checkpoints/step_*.pt). `noise`: a batch member's noise stream."""
    state = {"model": setup.model.state_dict(), "objective": setup.objective.state_dict(), "step": step}
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    if weights:
        _atomic_save(state, workdir / "checkpoints" / f"step_{step:08d}.pt")
    full = {**state, "opt": opt.state_dict(), "gen": gen.get_state(), **_noise_state(setup.device, noise)}
    latest, previous = (workdir / name for name in RESUME_FILES)
    tmp = latest.with_suffix(".tmp")
    torch.save(full, tmp)
    if latest.exists():
        os.replace(latest, previous)
    os.replace(tmp, latest)


def _noise_state(device: torch.device, noise: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The noise stream's state as a solo run's default RNGs: "rng" (CPU) and, on CUDA, "device_rng".
    A batch member's own stream (`noise`) takes the place of its device's default RNG."""
    state = {"rng": noise.get_state() if noise is not None and device.type == "cpu" else torch.get_rng_state()}
    if device.type == "cuda":
        state["device_rng"] = noise.get_state() if noise is not None else torch.cuda.get_rng_state(device)
    return state


def _restore_noise(state: dict, device: torch.device, noise: torch.Generator | None) -> None:
    """The inverse of `_noise_state`, into the default RNGs or into a batch member's `noise`."""
    if noise is not None:
        key = "rng" if device.type == "cpu" else "device_rng"
        if key in state:
            noise.set_state(state[key].cpu())
        return
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and "device_rng" in state:
        torch.cuda.set_rng_state(state["device_rng"].cpu(), device)


def resume_states(workdir: Path | str) -> dict[int, Path]:
    """A run folder's saved resume states by step: the latest and the one before it (either may be missing)."""
    out = {}
    for path in (Path(workdir) / name for name in reversed(RESUME_FILES)):  # the latest wins a tie
        try:
            out[int(torch.load(path, mmap=True, weights_only=True, map_location="cpu")["step"])] = path
        except FileNotFoundError:
            continue
    return out


def has_resume_state(workdir: Path | str) -> bool:
    return any((Path(workdir) / name).exists() for name in RESUME_FILES)


def discard_resume_state(workdir: Path | str) -> None:
    """Forget an earlier attempt's resume states (a fresh start)."""
    for name in RESUME_FILES:
        (Path(workdir) / name).unlink(missing_ok=True)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, setup, opt=None, gen: torch.Generator | None = None,
                    noise: torch.Generator | None = None) -> int:
    """Restore a checkpoint (weights only, or the full training state); returns its step."""
    state = torch.load(path, map_location=setup.device, weights_only=True)
    setup.model.load_state_dict(state["model"])
    load_objective_state(setup.objective, state["objective"])
    if opt is not None and "opt" in state:
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu())
        _restore_noise(state, setup.device, noise)
    return int(state["step"])


def load_objective_state(objective, saved: dict) -> None:
    """Restore the objective's state; a buffer added since the checkpoint was written (σ* of the training
    split, `Objective.calibrate`) keeps its initial value, which the next evaluation fills."""
    result = objective.load_state_dict(saved, strict=False)
    lacking = set(result.missing_keys) - {"log_sigma_fit"}
    if lacking or result.unexpected_keys:
        raise RuntimeError(f"checkpoint does not match the objective: missing {sorted(lacking)}, "
                           f"unexpected {sorted(result.unexpected_keys)}")


def checkpoint_steps(workdir: Path) -> list[int]:
    """Steps with saved weights, ascending."""
    return sorted(int(p.stem.split("_")[1]) for p in (Path(workdir) / "checkpoints").glob("step_*.pt"))
