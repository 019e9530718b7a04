"""gRDA: generalized regularized dual averaging, an SGD that prunes as it trains."""

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

__all__ = ["GRDA"]


class GRDA(Optimizer):
    r"""Generalized regularized dual averaging (gRDA), with optional heavy-ball momentum (gRDAM).

    Per tensor, with accumulator :math:`a_0 = w_0` (the weights at the first step) and step
    counter :math:`n`, each step does

    .. math::
        n &\leftarrow n + 1 \\
        b &\leftarrow m\, b + g \quad (b = g \text{ at the first step; only if } m > 0) \\
        a &\leftarrow a - \gamma\, b \quad (a \leftarrow a - \gamma\, g \text{ if } m = 0) \\
        \ell_1 &\leftarrow \ell_1 + c\, \gamma^{\mu + 1/2} \left(n^\mu - (n-1)^\mu\right) \\
        w &\leftarrow \operatorname{sign}(a) \max(|a| - \ell_1, 0)

    where :math:`\gamma` is the learning rate of the current step, so learning-rate schedulers
    work. With a constant learning rate the threshold after :math:`n` steps is
    :math:`\ell_1 = c \sqrt{\gamma} (n \gamma)^\mu`. With ``c=0`` this is plain SGD
    (``torch.optim.SGD`` with the same ``momentum``, no dampening, no Nesterov).

    The update follows the official gRDA PyTorch code. Parameters whose ``grad`` is ``None`` are
    skipped and their counter does not advance. The state of each parameter is ``step`` (int),
    ``l1`` (float, the accumulated threshold), ``accumulator`` and, when ``momentum > 0``,
    ``momentum_buffer``.

    Args:
        params: iterable of parameters or dicts defining parameter groups.
        lr: learning rate :math:`\gamma` (default: 0.01).
        c: strength of the sparsity penalty, ``c >= 0`` (default: 0.0, plain SGD).
        mu: growth exponent of the threshold, ``0 < mu <= 1``; the papers use
            ``0.5 < mu < 1`` (default: 0.7).
        momentum: heavy-ball momentum factor :math:`m`, ``0 <= momentum < 1`` (default: 0.0).

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = GRDA(model.parameters(), lr=0.1, c=0.005, mu=0.7)
        >>> loss = model(torch.randn(8, 4)).pow(2).mean()
        >>> opt.zero_grad()
        >>> loss.backward()
        >>> opt.step()

    References:
        S.-K. Chao and G. Cheng, "A generalization of regularized dual averaging and its
        dynamics", arXiv:1909.10072, 2019.
        S.-K. Chao, Z. Wang, Y. Xing and G. Cheng, "Directional Pruning of Deep Neural
        Networks", NeurIPS 2020.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        c: float = 0.0,
        mu: float = 0.7,
        momentum: float = 0.0,
    ) -> None:
        # `not x >= 0` also rejects NaN.
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not c >= 0.0:
            raise ValueError(f"Invalid c: {c}")
        if not 0.0 < mu <= 1.0:
            raise ValueError(f"Invalid mu: {mu} (need 0 < mu <= 1)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum value: {momentum} (need 0 <= momentum < 1)")
        defaults = {"lr": lr, "c": c, "mu": mu, "momentum": momentum}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor | float] | None = None) -> Tensor | float | None:
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.

        Returns:
            The loss returned by ``closure``, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            lr, c, mu, momentum = group["lr"], group["c"], group["mu"], group["momentum"]
            params: list[Tensor] = []
            grads: list[Tensor] = []
            states: list[dict] = []
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("GRDA does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # The accumulator starts at the weights before the first gradient.
                    state["step"] = 0
                    state["l1"] = 0.0
                    state["accumulator"] = p.detach().clone(memory_format=torch.preserve_format)
                params.append(p)
                grads.append(g)
                states.append(state)
            if not params:
                continue
            accs = [s["accumulator"] for s in states]

            directions = _heavy_ball_(states, grads, momentum) if momentum != 0.0 else grads
            torch._foreach_add_(accs, directions, alpha=-lr)

            # Params of a group normally share (step, l1), so the threshold is computed once; a
            # param skipped earlier (grad None) keeps its own counter and goes in its own bucket.
            keys = [(s["step"], s["l1"]) for s in states]
            if keys.count(keys[0]) == len(keys):
                _advance_(params, accs, states, *keys[0], lr=lr, c=c, mu=mu)
                continue
            buckets: dict[tuple[int, float], list[int]] = {}
            for i, key in enumerate(keys):
                buckets.setdefault(key, []).append(i)
            for key, idx in buckets.items():
                sub = ([params[i] for i in idx], [accs[i] for i in idx], [states[i] for i in idx])
                _advance_(*sub, *key, lr=lr, c=c, mu=mu)
        return loss


def _heavy_ball_(states: list[dict], grads: list[Tensor], momentum: float) -> list[Tensor]:
    """Update the momentum buffers in place (b = m*b + g; b = g when new) and return them."""
    bufs: list[Tensor] = []
    old_bufs: list[Tensor] = []
    old_grads: list[Tensor] = []
    for state, g in zip(states, grads, strict=True):
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(g).detach()
        else:
            old_bufs.append(buf)
            old_grads.append(g)
        bufs.append(buf)
    if old_bufs:
        torch._foreach_mul_(old_bufs, momentum)
        torch._foreach_add_(old_bufs, old_grads)
    return bufs


def _advance_(
    params: list[Tensor],
    accs: list[Tensor],
    states: list[dict],
    n: int,
    l1: float,
    *,
    lr: float,
    c: float,
    mu: float,
) -> None:
    """Step the counter and threshold of params that share (n, l1); write their new weights."""
    n += 1
    l1 += c * lr ** (mu + 0.5) * (n**mu - (n - 1) ** mu)
    for state in states:
        state["step"] = n
        state["l1"] = l1
    _soft_threshold_(params, accs, l1)


def _soft_threshold_(
    params: list[Tensor], accs: list[Tensor], l1: float, *, foreach: bool | None = None
) -> None:
    """Write sign(a) * max(|a| - l1, 0) into each param, in place.

    Both paths give the same values: clamp(a, -l1, l1) - a is exactly -(a - l1), -(a + l1) or 0,
    as softshrink is a - l1, a + l1 or 0. On CPU the foreach ops are a loop over tensors anyway
    and one softshrink per tensor is fewer passes; on GPU the foreach ops are fused kernels, and
    working in the params themselves avoids allocating a temporary per tensor, which cost more
    there than one more op.
    """
    if l1 == 0.0:
        torch._foreach_copy_(params, accs)
        return
    if foreach is None:
        foreach = accs[0].device.type != "cpu"
    if foreach:
        torch._foreach_copy_(params, accs)
        torch._foreach_clamp_min_(params, -l1)
        torch._foreach_clamp_max_(params, l1)
        torch._foreach_sub_(params, accs)
        torch._foreach_neg_(params)
    else:
        for p, a in zip(params, accs, strict=True):
            torch._C._nn.softshrink(a, l1, out=p)
