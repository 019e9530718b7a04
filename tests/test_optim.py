import copy
import io
import math

import pytest
import torch
from torch import nn

from landscape.optim import GRDA, _soft_threshold_


def reference_grda(w0, grad_fn, lrs, c, mu, momentum=0.0):
    """gRDA(M) on a list of python floats, one entry per step in `lrs`; the weights after each step."""
    a = list(w0)
    w = list(w0)
    b = None
    l1 = 0.0
    history = []
    for n, lr in enumerate(lrs, start=1):
        g = grad_fn(w)
        if momentum:
            b = list(g) if b is None else [momentum * bi + gi for bi, gi in zip(b, g, strict=True)]
            g = b
        a = [ai - lr * gi for ai, gi in zip(a, g, strict=True)]
        l1 += c * lr ** (mu + 0.5) * (n**mu - (n - 1) ** mu)
        w = [math.copysign(max(abs(ai) - l1, 0.0), ai) for ai in a]
        history.append(w)
    return history


def quadratic(k, t):
    """Gradient of 0.5 * sum(k_i (w_i - t_i)^2), as python floats and as a torch loss."""

    def grad_fn(w):
        return [ki * (wi - ti) for ki, wi, ti in zip(k, w, t, strict=True)]

    kt, tt = torch.tensor(k, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)

    def loss_fn(w):
        return 0.5 * (kt * (w - tt) ** 2).sum()

    return grad_fn, loss_fn


K = [1.0, 2.0, 0.5, 3.0, 0.1, 1.5]
T = [1.0, -0.5, 0.02, 0.0, 2.0, -0.01]
W0 = [0.3, 0.4, -0.2, 0.05, -1.0, 0.7]


def run_torch(param, loss_fn, opt, steps, sched=None):
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(param).backward()
        opt.step()
        if sched is not None:
            sched.step()
        history.append(param.detach().tolist())
    return history


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def batches(count, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen))
        for _ in range(count)
    ]


def train(model, opt, data):
    for x, y in data:

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert torch.is_tensor(loss)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_c_zero_equals_sgd(momentum):
    model_g, model_s = tiny_mlp(), tiny_mlp()
    data = batches(10)
    grda = GRDA(model_g.parameters(), lr=0.1, c=0.0, mu=0.7, momentum=momentum)
    sgd = torch.optim.SGD(model_s.parameters(), lr=0.1, momentum=momentum)
    for batch in data:
        train(model_g, grda, [batch])
        train(model_s, sgd, [batch])
        for pg, ps in zip(model_g.parameters(), model_s.parameters(), strict=True):
            assert torch.equal(pg, ps)


@pytest.mark.parametrize(
    ("lr", "c", "mu"), [(0.1, 0.005, 0.7), (0.01, 1.0, 0.51), (0.5, 0.02, 1.0)]
)
def test_threshold_closed_form(lr, c, mu):
    p = nn.Parameter(torch.randn(4))
    opt = GRDA([p], lr=lr, c=c, mu=mu)
    for n in range(1, 41):
        p.grad = torch.randn(4)
        opt.step()
        if n in (1, 2, 7, 40):
            state = opt.state[p]
            assert state["step"] == n
            assert math.isclose(state["l1"], c * math.sqrt(lr) * (n * lr) ** mu, rel_tol=1e-12)


@pytest.mark.parametrize("steps", [1, 5, 30])
def test_zero_gradient_keeps_or_zeroes_around_threshold(steps):
    lr, c, mu = 0.1, 0.05, 0.7
    g = c * math.sqrt(lr) * (steps * lr) ** mu
    w0 = torch.tensor([1.001 * g, -1.001 * g, 0.999 * g, -0.999 * g, 10 * g], dtype=torch.float64)
    p = nn.Parameter(w0.clone())
    opt = GRDA([p], lr=lr, c=c, mu=mu)
    for _ in range(steps):
        p.grad = torch.zeros_like(p)
        opt.step()
    expected = torch.tensor([0.001 * g, -0.001 * g, 0.0, 0.0, 9 * g], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)
    assert (p[:2] != 0).all() and (p[2:4] == 0).all()


def test_hand_computed_three_steps():
    # lr = 0.1, c = 1, mu = 0.5: l1_n = 0.1 * sqrt(n) = 0.1, 0.141421356237, 0.173205080757.
    # Constant gradient g, so the accumulator is a_n = w0 - 0.1 * n * g.
    w0 = [1.0, -0.5, 0.05, 0.0, 0.3]
    g = [2.0, -1.0, 0.5, -2.0, 1.0]
    expected = [
        # a_1 = [0.8, -0.4, 0.0, 0.2, 0.2], minus 0.1 in magnitude
        [0.7, -0.3, 0.0, 0.1, 0.1],
        # a_2 = [0.6, -0.3, -0.05, 0.4, 0.1], minus 0.141421356237 (|a| below it -> 0)
        [0.458578643763, -0.158578643763, 0.0, 0.258578643763, 0.0],
        # a_3 = [0.4, -0.2, -0.1, 0.6, 0.0], minus 0.173205080757
        [0.226794919243, -0.026794919243, 0.0, 0.426794919243, 0.0],
    ]
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = GRDA([p], lr=0.1, c=1.0, mu=0.5)
    for want in expected:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(
            p.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-7
        )


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_lr_scheduler_against_reference(momentum):
    lr, c, mu, steps = 0.2, 0.03, 0.6, 12
    grad_fn, loss_fn = quadratic(K, T)
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = GRDA([p], lr=lr, c=c, mu=mu, momentum=momentum)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    got = run_torch(p, loss_fn, opt, steps, sched)
    lrs = [lr * 0.5 ** (i // 4) for i in range(steps)]
    want = reference_grda(W0, grad_fn, lrs, c, mu, momentum)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-12)
    assert any(v == 0.0 for v in got[-1])  # the threshold has pruned something


@pytest.mark.parametrize(
    ("momentum", "c", "mu"), [(0.5, 0.02, 0.7), (0.9, 0.01, 0.51), (0.99, 0.05, 0.9)]
)
def test_grdam_against_reference(momentum, c, mu):
    lr, steps = 0.05, 20
    grad_fn, loss_fn = quadratic(K, T)
    p = nn.Parameter(torch.tensor(W0, dtype=torch.float64))
    opt = GRDA([p], lr=lr, c=c, mu=mu, momentum=momentum)
    got = run_torch(p, loss_fn, opt, steps)
    want = reference_grda(W0, grad_fn, [lr] * steps, c, mu, momentum)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=0, atol=1e-12)
    assert opt.state[p]["momentum_buffer"].shape == p.shape


def test_param_groups_have_their_own_hyperparameters():
    steps = 10
    groups = [
        {"w0": W0[:3], "k": K[:3], "t": T[:3], "lr": 0.1, "c": 0.05, "mu": 0.6, "momentum": 0.0},
        {"w0": W0[3:], "k": K[3:], "t": T[3:], "lr": 0.2, "c": 0.001, "mu": 0.9, "momentum": 0.8},
    ]
    params = [nn.Parameter(torch.tensor(g["w0"], dtype=torch.float64)) for g in groups]
    losses = [quadratic(g["k"], g["t"])[1] for g in groups]
    keys = ("lr", "c", "mu", "momentum")
    opt = GRDA(
        [{"params": [p], **{k: g[k] for k in keys}} for p, g in zip(params, groups, strict=True)]
    )
    got = [[], []]
    for _ in range(steps):
        opt.zero_grad()
        sum(loss(p) for loss, p in zip(losses, params, strict=True)).backward()
        opt.step()
        for h, p in zip(got, params, strict=True):
            h.append(p.detach().tolist())
    for h, g in zip(got, groups, strict=True):
        grad_fn = quadratic(g["k"], g["t"])[0]
        want = reference_grda(g["w0"], grad_fn, [g["lr"]] * steps, g["c"], g["mu"], g["momentum"])
        torch.testing.assert_close(torch.tensor(h), torch.tensor(want), rtol=0, atol=1e-12)


def test_params_without_grad_are_skipped_and_keep_their_own_counter():
    lr, c, mu = 0.1, 0.02, 0.7
    grad_fn, loss_fn = quadratic(K, T)
    p, q = (nn.Parameter(torch.tensor(W0, dtype=torch.float64)) for _ in range(2))
    opt = GRDA([p, q], lr=lr, c=c, mu=mu)
    q_steps = 0
    for i in range(9):
        opt.zero_grad(set_to_none=True)
        loss_fn(p).backward()
        if i % 3 != 1:  # q skips every third step, so p and q fall into different buckets
            loss_fn(q).backward()
            q_steps += 1
        opt.step()
    assert opt.state[p]["step"] == 9 and opt.state[q]["step"] == q_steps == 6
    for param, n in ((p, 9), (q, 6)):
        want = reference_grda(W0, grad_fn, [lr] * n, c, mu)[-1]
        torch.testing.assert_close(
            param.detach(), torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12
        )


@pytest.mark.parametrize("l1", [0.0, 0.3, 1e-3])
def test_soft_threshold_paths_agree_bitwise(l1):
    torch.manual_seed(0)
    accs = [torch.randn(5, 7), torch.randn(3), torch.tensor([0.3, -0.3, 0.0, -0.0])]
    want = [torch.sign(a) * (a.abs() - l1).clamp(min=0) for a in accs]
    for foreach in (False, True):
        params = [torch.full_like(a, 9.0) for a in accs]
        _soft_threshold_(params, accs, l1, foreach=foreach)
        for p, w in zip(params, want, strict=True):
            assert torch.equal(p, w)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_state_dict_round_trip_is_bit_identical(momentum):
    hyper = {"lr": 0.1, "c": 0.01, "mu": 0.7, "momentum": momentum}
    data = batches(10, seed=3)
    model = tiny_mlp(seed=0)
    opt = GRDA(model.parameters(), **hyper)
    train(model, opt, data[:5])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    train(model, opt, data[5:])

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = tiny_mlp(seed=123)
    fresh_opt = GRDA(fresh.parameters(), **hyper)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    train(fresh, fresh_opt, data[5:])
    for pa, pb in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(pa, pb)
    state = fresh_opt.state[next(fresh.parameters())]
    assert state["step"] == 10 and isinstance(state["l1"], float)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"lr": float("nan")}, "Invalid learning rate: nan"),
        ({"c": -1e-3}, "Invalid c: -0.001"),
        ({"mu": 0.0}, "Invalid mu: 0.0"),
        ({"mu": -0.5}, "Invalid mu: -0.5"),
        ({"mu": 1.5}, "Invalid mu: 1.5"),
        ({"momentum": -0.1}, "Invalid momentum value: -0.1"),
        ({"momentum": 1.0}, "Invalid momentum value: 1.0"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GRDA([nn.Parameter(torch.zeros(2))], **kwargs)


def test_step_skips_groups_without_grads_and_copies_state_lazily():
    p = nn.Parameter(torch.ones(3))
    opt = GRDA([p], lr=0.1, c=0.1)
    opt.step()
    assert len(opt.state) == 0
    p.grad = torch.zeros(3)
    opt.step()
    acc = opt.state[p]["accumulator"]
    assert acc.data_ptr() != p.data_ptr() and torch.equal(acc, torch.ones(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_cuda_matches_cpu(momentum):
    hyper = {"lr": 0.1, "c": 0.02, "mu": 0.6, "momentum": momentum}
    data = batches(10, seed=5)
    cpu = tiny_mlp()
    gpu = copy.deepcopy(cpu).to("cuda")
    opt_cpu, opt_gpu = GRDA(cpu.parameters(), **hyper), GRDA(gpu.parameters(), **hyper)
    train(cpu, opt_cpu, data)
    train(gpu, opt_gpu, [(x.cuda(), y.cuda()) for x, y in data])
    for pc, pg in zip(cpu.parameters(), gpu.parameters(), strict=True):
        for value in opt_gpu.state[pg].values():
            if torch.is_tensor(value):
                assert value.device == pg.device
        torch.testing.assert_close(pg.cpu(), pc, rtol=0, atol=1e-5)
    assert any((p == 0).any() for p in gpu.parameters())
