"""Architecture registry: logits shapes, argument errors, prunable tensors, ResNet-20, names."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape.models import (
    MODELS,
    RESEARCH_ARCHS,
    ResNet20,
    build_model,
    min_tensors,
    prunable_names,
    resolve_arch,
)

# (name, kwargs, input shape (C, H, W)); resnet20 on a small input to stay fast.
CASES = [
    ("cnn", {}, (1, 8, 8)),
    ("cnn", {"in_shape": (3, 32, 32), "num_classes": 7}, (3, 32, 32)),
    ("cnn", {"in_shape": (3, 32, 32), "channels": (4, 8, 8), "hidden": 16}, (3, 32, 32)),
    ("mlp", {}, (1, 8, 8)),
    ("mlp", {"in_shape": (3, 32, 32), "num_classes": 3, "widths": (16,)}, (3, 32, 32)),
    ("mlp", {"widths": ()}, (1, 8, 8)),
    ("resnet20", {"in_shape": (3, 16, 16)}, (3, 16, 16)),
    ("resnet20", {"in_shape": (1, 16, 16), "num_classes": 5, "width": 4}, (1, 16, 16)),
]


def _independent_prunable(model: nn.Module) -> list[str]:
    """Weights of Linear/Conv modules, found from the parameters' owners (not named_modules)."""
    owners = dict(model.named_modules())
    out = []
    for name, _ in model.named_parameters():
        mod_name, _, leaf = name.rpartition(".")
        if leaf == "weight" and isinstance(owners[mod_name], nn.Linear | nn.Conv2d):
            out.append(name)
    return out


def test_registry_names():
    assert set(MODELS) == {"mlp", "cnn", "resnet20", "vgg", "preresnet", "wideresnet"}


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_logits_shape(name, kwargs, shape, batch):
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, *shape))
    assert out.shape == (batch, kwargs.get("num_classes", 10))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seeded_build_is_reproducible(name):
    kwargs = {"in_shape": (3, 16, 16)} if name == "resnet20" else {}
    torch.manual_seed(1)
    a = build_model(name, **kwargs).state_dict()
    torch.manual_seed(1)
    b = build_model(name, **kwargs).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_known():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet50'") as info:
        build_model("resnet50")
    for known in MODELS:
        assert known in str(info.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("mlp", {"depth": 3}), ("cnn", {"widths": (8,)}), ("resnet20", {"channels": (8,)})],
)
def test_bad_kwargs(name, kwargs):
    bad = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"Bad arguments for architecture '{name}'.*{bad}"):
        build_model(name, **kwargs)


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_prunable_names_are_linear_and_conv_weights(name, kwargs, shape):
    model = build_model(name, **kwargs)
    names = prunable_names(model)
    assert names == _independent_prunable(model)
    # For these models the >= 2-D parameters are exactly the Linear/Conv weights.
    assert names == [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert len(set(names)) == len(names)
    state = model.state_dict()
    for n in names:
        assert n.endswith(".weight") and n in state
        owner = model.get_submodule(n.rpartition(".")[0])
        assert not isinstance(owner, _BatchNorm)
    assert not any(n.endswith(".bias") for n in names)
    bn_params = {
        f"{m_name}.{p_name}"
        for m_name, m in model.named_modules()
        if isinstance(m, _BatchNorm)
        for p_name, _ in m.named_parameters()
    }
    assert bn_params.isdisjoint(names)
    # Every parameter is either prunable, a bias or a BN parameter.
    rest = {n for n, _ in model.named_parameters()} - set(names) - bn_params
    assert all(n.endswith(".bias") for n in rest)
    if name in ("cnn", "resnet20"):
        assert bn_params  # these have BN, and it is excluded above


def test_prunable_names_top_level_module():
    assert prunable_names(nn.Linear(3, 2)) == ["weight"]
    assert prunable_names(nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2))) == ["0.weight"]


@pytest.mark.parametrize(("blocks", "depth"), [(1, 8), (2, 14), (3, 20)])
def test_resnet_depth(blocks, depth):
    model = build_model("resnet20", in_shape=(3, 16, 16), width=4, blocks=blocks)
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    convs1 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    # Main path: stem conv + 2 per basic block (3 stages) + the classifier.
    assert len(convs3) == 1 + 2 * 3 * blocks == depth - 1
    assert len(fcs) == 1
    assert len(convs3) + len(fcs) == depth
    # Projection shortcuts only where the shape changes: first block of stages 2 and 3.
    assert len(convs1) == 2
    assert all(m.stride == (2, 2) for m in convs1)
    assert len(prunable_names(model)) == depth + 2


def test_resnet20_structure():
    model = ResNet20(in_shape=(3, 16, 16))
    assert len(model.layers) == 9
    widths = [blk.conv2.out_channels for blk in model.layers]
    assert widths == [16] * 3 + [32] * 3 + [64] * 3
    assert model.fc.in_features == 64
    shortcuts = [
        i for i, blk in enumerate(model.layers) if not isinstance(blk.shortcut, nn.Identity)
    ]
    assert shortcuts == [3, 6]
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn == 19 + 2


def test_resolve_arch():
    assert resolve_arch("VGG16BN") == ("vgg", {"depth": 16, "batch_norm": True})
    assert resolve_arch("vgg19") == ("vgg", {"depth": 19, "batch_norm": False})
    assert resolve_arch("PreResNet164", {"num_classes": 100}) == (
        "preresnet",
        {"depth": 164, "num_classes": 100},
    )
    # The caller's kwargs win over the research name's.
    assert resolve_arch("wideresnet28x10_NOBN", {"widen_factor": 2, "num_classes": 100}) == (
        "wideresnet",
        {"depth": 28, "widen_factor": 2, "batch_norm": False, "num_classes": 100},
    )
    assert resolve_arch("cnn", {"hidden": 8}) == ("cnn", {"hidden": 8})
    assert resolve_arch("wideresnet") == ("wideresnet", {})
    name, kwargs = resolve_arch("VGG16")
    kwargs["depth"] = 19  # the table itself is not handed out
    assert RESEARCH_ARCHS["VGG16"] == ("vgg", {"depth": 16, "batch_norm": False})
    with pytest.raises(ValueError, match="Unknown architecture 'ResNet50'") as info:
        resolve_arch("ResNet50")
    for known in [*MODELS, *RESEARCH_ARCHS]:
        assert known in str(info.value)


@pytest.mark.parametrize("research_name", sorted(RESEARCH_ARCHS))
def test_every_research_name_builds(research_name):
    name, kwargs = resolve_arch(research_name)
    assert name in MODELS
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(name, **kwargs)
    x = torch.empty(1, 3, 32, 32, device="meta")
    assert model(x).shape == (1, 10)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mlp", {}),
        ("mlp", {"widths": [3] * 7}),
        ("cnn", {"channels": [4, 4, 4]}),
        ("resnet20", {"blocks": 1}),
        ("preresnet", {"depth": 8}),
        ("preresnet", {"depth": 110}),
        ("wideresnet", {"depth": 10, "widen_factor": 1}),
        ("wideresnet", {"depth": 28, "widen_factor": 1, "batch_norm": False}),
        ("vgg", {"depth": 16}),
        ("vgg", {"depth": 19, "batch_norm": True}),
    ],
)
def test_min_tensors_is_a_lower_bound_on_the_built_model(name, kwargs):
    """min_tensors (arguments only) never exceeds the tensors of the model actually built."""
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    assert 0 < min_tensors(name, kwargs) <= len(model.state_dict())
