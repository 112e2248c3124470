"""AdamW and its learning-rate schedule without ``torch.optim``: the trainer's optimiser.

``torch.optim.Optimizer`` imports ``torch._dynamo`` (the compiler stack, about as long as
``import torch`` itself) in its constructor and in every ``step``, and its Python bookkeeping runs
every step around one fused kernel. :class:`AdamW` calls that kernel (``torch._fused_adamw_``,
what ``torch.optim.AdamW(fused=True)`` calls) directly, so its numbers are torch's, bit for bit;
its ``state_dict`` has torch's format, so checkpoints written by either load into the other.
:class:`LambdaSchedule` is ``torch.optim.lr_scheduler.LambdaLR`` for it, with LambdaLR's state.
"""

from __future__ import annotations

from typing import Callable

import torch


class AdamW:
    """AdamW (decoupled weight decay), fused kernels, for parameters of one dtype per device.

    ``groups``: ``[{"params": [...], "weight_decay": w}, ...]`` (other keys default as in
    ``torch.optim.AdamW``). ``param_groups`` and ``state`` read as torch's do.
    """

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "maximize": False, "foreach": None,
                "capturable": False, "differentiable": False, "fused": True, "decoupled_weight_decay": True}

    def __init__(self, groups: list[dict], lr: float, weight_decay: float = 0.01):
        self.param_groups: list[dict] = []
        for g in groups:
            self.param_groups.append({"weight_decay": weight_decay, "lr": lr, **self.defaults, **g,
                                      "params": list(g["params"])})
        self.state: dict[torch.Tensor, dict] = {}

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (a parameter without one keeps its state)."""
        for group in self.param_groups:
            by_place: dict[tuple, tuple[list, ...]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:  # lazy, as torch's: the step count lives on the parameter's device
                    state = self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                             "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                             "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                lists = by_place.setdefault((p.device, p.dtype), ([], [], [], [], []))
                for bucket, t in zip(lists, (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"])):
                    bucket.append(t)
            beta1, beta2 = group["betas"]
            for params, grads, avgs, avg_sqs, steps in by_place.values():
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(params, grads, avgs, avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                                    beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                    maximize=group["maximize"], grad_scale=None, found_inf=None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """torch's format: ``{"state": {position: {...}}, "param_groups": [{..., "params": [positions]}]}``."""
        pos = {id(p): i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": list(range(start, start + n))})
            start += n
        state = {pos[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """A state saved by :meth:`state_dict` or by ``torch.optim.AdamW`` for the same parameters."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(len(s["params"]) != len(g["params"])
                                                       for s, g in zip(saved, self.param_groups)):
            raise ValueError("the saved optimizer state holds other parameter groups than this optimizer")
        by_pos = {}
        for s, g in zip(saved, self.param_groups):
            g.update({k: v for k, v in s.items() if k != "params"})
            by_pos.update(zip(s["params"], g["params"]))
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_pos.get(i)
            if p is None:
                raise ValueError(f"the saved optimizer state names parameter {i!r}, which this optimizer lacks")
            self.state[p] = {k: (v.to(device=p.device, dtype=torch.float32) if k == "step"
                                 else v.to(device=p.device, dtype=p.dtype)) for k, v in s.items()}


class LambdaSchedule:
    """``lr = initial_lr · fn(step)`` for every group, as ``LambdaLR`` (the same state dict)."""

    def __init__(self, optimizer: AdamW, fn: Callable[[int], float]):
        self.optimizer, self.fn = optimizer, fn
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        self._last_lr = [base * self.fn(self.last_epoch) for base in self.base_lrs]
        for g, lr in zip(self.optimizer.param_groups, self._last_lr):
            g["lr"] = lr

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch, "_step_count": self.last_epoch + 1,
                "_is_initial": False, "_get_lr_called_within_step": False, "_last_lr": list(self._last_lr),
                "lr_lambdas": [None] * len(self.base_lrs)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = list(state_dict.get("_last_lr") or [b * self.fn(self.last_epoch) for b in self.base_lrs])


__all__ = ["AdamW", "LambdaSchedule"]
