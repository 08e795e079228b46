"""How a training run is told to stop, or stops itself: the exceptions the trainer raises and the
worker classifies (torch-free, so that the worker and the CLI can catch them cheaply)."""

from __future__ import annotations


class Cancelled(Exception):
    """The run was asked to stop; a checkpoint was written first."""


class Diverged(Exception):
    """A logged term became NaN or infinite."""

    def __init__(self, step: int, term: str, value: float):
        super().__init__(f"diverged at step {step}: {term} = {value} (try a smaller train.lr)")
        self.step, self.term, self.value = step, term, value
