"""AdamW over stacked per-class parameters that steps only the classes present in a batch.

Every parameter has the class on its first axis. Each class keeps its own step count, so a class
trained in every other batch follows exactly the trajectory it would follow if trained alone: batches
may hold any subset of classes, and classes may be sharded across processes, without changing the
result. Per-class gradient clipping does the same for the clip threshold. Beside them, the one-cycle schedule the
tiny base models and the toy DDPM train with.
"""

from __future__ import annotations

import torch


class ClassAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.active_classes: torch.Tensor | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        """Every state tensor follows its parameter's device, in float32.

        torch.optim leaves a state entry named ``step`` where it was loaded (usually the CPU), and
        :meth:`step` indexes it with the parameter's device: a resumed fit on a GPU would fail.
        """
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device=p.device, dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        if self.active_classes is None:
            raise RuntimeError("set optimizer.active_classes to the classes of this batch before step()")
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                idx = self.active_classes.to(p.device)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                grad = p.grad[idx].float()
                step = state["step"][idx] + 1
                state["step"][idx] = step
                m = state["exp_avg"][idx].mul(b1).add_(grad, alpha=1 - b1)
                v = state["exp_avg_sq"][idx].mul(b2).addcmul_(grad, grad, value=1 - b2)
                state["exp_avg"][idx] = m
                state["exp_avg_sq"][idx] = v
                shape = (-1,) + (1,) * (p.dim() - 1)
                bc1 = (1 - b1**step).view(shape)
                bc2 = (1 - b2**step).view(shape)
                value = p[idx].float() * (1 - group["lr"] * group["weight_decay"])
                value -= group["lr"] * (m / bc1) / ((v / bc2).sqrt() + group["eps"])
                p[idx] = value.to(p.dtype)
        return loss


@torch.no_grad()
def clip_grad_norm_per_class(params: list[torch.Tensor], max_norm: float, classes: torch.Tensor) -> torch.Tensor:
    """Scale each class's gradient (over all parameters) to norm <= max_norm; returns the norms."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(len(classes))
    idx = classes.to(grads[0].device)
    sq = sum(g[idx].float().pow(2).reshape(len(idx), -1).sum(1) for g in grads)
    norms = sq.sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g[idx] = (g[idx].float() * factor.view(-1, *([1] * (g.dim() - 1)))).to(g.dtype)
    return norms


def one_cycle(optimizer, max_lr: float, steps: int, warmup: float = 0.1):
    """torch's one-cycle schedule over ``steps`` with a ``warmup`` share of rising steps (the tiny bases' and the toy
    DDPM's). torch divides by zero where the warm-up is exactly one step (``warmup * steps == 1``); there it ends
    half a step later, which leaves every other length's schedule as it was."""
    share = warmup if warmup * steps != 1 else 1.5 / steps
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, pct_start=share)
