"""Adam (Kingma & Ba 2015, Algorithm 1) as one fused kernel call per step.

`torch.optim.Adam(fused=True)` regroups its tensors by device and dtype on every step; on a small
model that bookkeeping costs about as much as the kernel. `FastAdam` is that optimiser (same
state_dict, same kernel, same numbers) with its tensor lists gathered once and reused while the
parameters and their state stay the same; anything unusual falls back to the parent's step.
"""

from __future__ import annotations

import torch


class FastAdam(torch.optim.Adam):
    """Fused Adam plus `update()`: the same step as `step()`, as one `torch._fused_adam_` call with no
    regrouping, hooks or profiler labels. `clear_grads()` is `zero_grad(set_to_none=True)` without
    the profiler label. Both are what the training loops call; everything else is torch's Adam."""

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr, fused=True)
        self._lists: tuple[list, ...] | None = None

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = None

    def _gather(self) -> tuple[list, ...] | None:
        """(params, exp_avgs, exp_avg_sqs, steps) of the single group, once every state exists."""
        group = self.param_groups[0]
        if len(self.param_groups) != 1 or group["amsgrad"] or group["maximize"] or group["capturable"]:
            return None
        params = group["params"]
        states = [self.state.get(p) for p in params]
        if not all(states) or len({(p.device, p.dtype) for p in params}) != 1:
            return None
        return (params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states])

    @torch.no_grad()
    def update(self) -> None:
        """One Adam step of every parameter (Kingma & Ba 2015, Algorithm 1, bias-corrected)."""
        if self._lists is None:
            self._lists = self._gather()
        grads = None if self._lists is None else [p.grad for p in self._lists[0]]
        if grads is None or any(g is None for g in grads):  # first step, or a parameter without gradient
            self._lists = None
            self.step()
            return
        group = self.param_groups[0]
        params, exp_avgs, exp_avg_sqs, steps = self._lists
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                           maximize=False)

    def clear_grads(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
