"""The trainer's AdamW and schedule (cachekit.optim) against torch.optim's, bit for bit, and their
checkpoints loading into each other."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cachekit.optim import AdamW, LambdaSchedule
from cachekit.train import lr_lambda, make_optimizer, make_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in ((6, 4), (4,), (3, 6), (1,))]


def _grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if (i == 3 and step % 2) else torch.randn(p.shape, generator=g)  # one param skips steps


def _torch_pair(params, lr=1e-2, wd=0.05, warmup=3, total=10):
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, fused=True)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total))


def _run(opt, sched, params, steps, start=0):
    lrs = []
    for s in range(start, start + steps):
        _grads(params, s)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        lrs.append(sched.get_last_lr())
    return lrs


def test_adamw_and_schedule_equal_torch_bit_for_bit():
    ours, theirs = _params(), _params()
    opt = make_optimizer(ours, 1e-2, 0.05)
    lrs = _run(opt, make_schedule(opt, 3, 10), ours, 8)
    want = _run(*_torch_pair(theirs), theirs, 8)
    assert lrs == want
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
        assert a.grad is None
    sd, tsd = opt.state_dict(), _torch_pair(_params())[0].state_dict()  # format: the same keys
    assert set(sd) == {"state", "param_groups"} and sd["param_groups"][0].keys() == tsd["param_groups"][0].keys()
    assert sd["state"][0].keys() == {"step", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_checkpoints_load_across_implementations(direction, tmp_path):
    """A run resumed from either implementation's saved state continues to the same weights."""
    ref = _params()
    _run(*_torch_pair(ref), ref, 9)

    first = _params()
    if direction == "torch->ours":
        opt, sched = _torch_pair(first)
    else:
        opt = make_optimizer(first, 1e-2, 0.05)
        sched = make_schedule(opt, 3, 10)
    _run(opt, sched, first, 4)
    path = tmp_path / "state.pt"
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "weights": [p.detach().clone() for p in first]}, path)
    state = torch.load(path, weights_only=True)

    second = [torch.nn.Parameter(w) for w in state["weights"]]
    if direction == "torch->ours":
        opt2 = make_optimizer(second, 1e-2, 0.05)
        sched2 = make_schedule(opt2, 3, 10)
    else:
        opt2, sched2 = _torch_pair(second)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    _run(opt2, sched2, second, 5, start=4)
    for a, b in zip(second, ref):
        assert torch.equal(a, b)


def test_load_refuses_other_parameter_groups():
    opt = AdamW([{"params": _params()[:2]}], lr=1e-3)
    other = AdamW([{"params": _params()}], lr=1e-3)
    with pytest.raises(ValueError, match="other parameter groups"):
        opt.load_state_dict(other.state_dict())


def test_schedule_starts_at_the_first_factor():
    opt = AdamW([{"params": _params()}], lr=0.5)
    sched = LambdaSchedule(opt, lambda s: 0.1 * (s + 1))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and sched.get_last_lr() == [0.5 * 0.1]
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5 * 0.2


def test_the_optimiser_does_not_load_the_compiler_stack():
    """torch.optim imports torch._dynamo (seconds of every train start-up); cachekit.optim does not."""
    code = ("import sys, torch\n"
            "from cachekit.train import make_optimizer, make_schedule\n"
            "p = [torch.nn.Parameter(torch.randn(3, 3))]\n"
            "opt = make_optimizer(p, 1e-3, 0.01); sched = make_schedule(opt, 1, 5)\n"
            "p[0].sum().backward(); opt.step(); sched.step(); opt.zero_grad(); opt.state_dict()\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "False"
