"""FastAdam against torch's reference Adam, and denormal flushing."""

import torch

from vaeviz.optim import FastAdam


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(7, 5, generator=g).requires_grad_(), torch.randn(5, generator=g).requires_grad_()]


def _loss(params, x):
    return ((x @ params[0] + params[1]).tanh() ** 2).sum()


def _train(opt, params, steps, start=0, update=True):
    for t in range(start, start + steps):
        x = torch.randn(3, 7, generator=torch.Generator().manual_seed(100 + t))
        (opt.clear_grads() if update else opt.zero_grad())
        _loss(params, x).backward()
        (opt.update() if update else opt.step())


def test_update_matches_reference_adam():
    ours, ref = _params(0), _params(0)
    _train(FastAdam(ours, lr=0.01), ours, 30)
    _train(torch.optim.Adam(ref, lr=0.01, foreach=False), ref, 30, update=False)
    for a, b, start in zip(ours, ref, _params(0)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert (a - start).abs().max() > 0.05  # the comparison is not between untouched tensors


def test_state_dict_round_trip_continues_the_same_trajectory():
    straight = _params(1)
    opt = FastAdam(straight, lr=0.01)
    _train(opt, straight, 20)

    resumed = _params(1)
    first = FastAdam(resumed, lr=0.01)
    _train(first, resumed, 10)
    state = first.state_dict()
    second = FastAdam(resumed, lr=0.01)
    second.load_state_dict(state)
    _train(second, resumed, 10, start=10)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_a_parameter_without_gradient_is_left_alone():
    used, unused = _params(2)[0], torch.ones(4, requires_grad=True)
    opt = FastAdam([used, unused], lr=0.1)
    for _ in range(3):
        opt.clear_grads()
        used.sum().backward()
        opt.update()
    assert torch.equal(unused, torch.ones(4))
    assert opt.state[used]["step"].item() == 3


def test_lr_changes_are_honoured():
    ours, ref = _params(3), _params(3)
    a, b = FastAdam(ours, lr=0.01), torch.optim.Adam(ref, lr=0.01, foreach=False)
    _train(a, ours, 5)
    _train(b, ref, 5, update=False)
    a.param_groups[0]["lr"] = b.param_groups[0]["lr"] = 0.1
    _train(a, ours, 5, start=5)
    _train(b, ref, 5, start=5, update=False)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
