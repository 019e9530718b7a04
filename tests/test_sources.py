"""Architectures from outside the registry (landscape.sources): torchvision:, file:, .pt2.

PyPI's torchvision 0.28 does not import beside this machine's CPU torch ("operator
torchvision::nms does not exist"), so the torchvision route is tested with a stub ``torchvision``
package put in ``sys.modules`` (its ``models.resnet18`` is a small resnet-like network with
BatchNorm, defined here, taking 1x8x8 digits); ``test_real_torchvision`` uses the real package
and is skipped where ``import torchvision`` fails.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import landscape.sources as sources
from landscape.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from landscape.cli import main
from landscape.curves import CurveConfig
from landscape.models import build_model
from landscape.studies import curve, run

DIGITS = {"name": "digits", "split_seed": 0}


class TinyResNet(nn.Module):
    """resnet-like: stem conv + BN, one residual block, global pool, fc."""

    def __init__(self, num_classes: int = 1000, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(h + self.bn2(self.conv2(h)))
        return self.fc(h.mean((2, 3)))


@pytest.fixture(autouse=True)
def _fresh_trust(monkeypatch):
    """Each test starts with nothing trusted (trust lives for a process)."""
    monkeypatch.setattr(sources, "_trusted_files", set())
    monkeypatch.setattr(sources, "_trusted_folders", [])
    monkeypatch.setattr(sources, "_trusted_exports", {})
    monkeypatch.delenv(sources.MODEL_PATHS_ENV, raising=False)


@pytest.fixture
def stub_torchvision(monkeypatch):
    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def resnet18(*, weights=None, num_classes: int = 1000, **kwargs) -> nn.Module:
        return TinyResNet(num_classes=num_classes, **kwargs)

    models.resnet18 = resnet18
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return models


def _pair(tmp_path: Path, arch: dict, make) -> tuple:
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"{seed}.safetensors"
        save_checkpoint(path, make(), {"arch": arch, "data": DIGITS})
        paths.append(path)
    return paths


def _curve(a, b):
    cfg = CurveConfig(epochs=1, points=3)
    return run(curve.KIND, cfg, curve.CurveInputs(a, b))


def test_torchvision_stub_route_fits_a_curve_with_bn(tmp_path, stub_torchvision):
    arch = {"name": "torchvision:resnet18", "kwargs": {"num_classes": 10}}
    pa, pb = _pair(tmp_path, arch, lambda: TinyResNet(num_classes=10))
    a, b = load_checkpoint(pa), load_checkpoint(pb)
    assert a.arch == arch and isinstance(a.build_model(), TinyResNet)
    result = _curve(a, b)
    assert result.bn_samples > 0
    assert all(torch.isfinite(torch.tensor(result.curve["train_loss"])))  # per-point BN stats


def test_torchvision_refuses_downloads_and_unknown_names(tmp_path, stub_torchvision):
    with pytest.raises(ValueError, match="weights would download"):
        build_model("torchvision:resnet18", weights="DEFAULT")
    with pytest.raises(ValueError, match="no model 'nosuchnet'"):
        build_model("torchvision:nosuchnet")


def test_torchvision_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import raises ImportError
    with pytest.raises(ValueError, match=r"landscape\[zoo\].*0\.28"):
        build_model("torchvision:resnet18")


def test_real_torchvision(tmp_path):
    pytest.importorskip("torchvision", exc_type=ImportError)
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # the nms operator error of a mismatched build
        pytest.skip(f"torchvision does not import: {err}")
    arch = {"name": "torchvision:resnet18", "kwargs": {"num_classes": 10}}
    path = tmp_path / "r.safetensors"
    save_checkpoint(path, build_model(arch["name"], **arch["kwargs"]), {"arch": arch})
    assert load_checkpoint(path).arch == arch


MODEL_FILE = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, hidden: int = 16):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, 10)

        def forward(self, x):
            return self.head(self.body(x))

    def make(hidden: int = 16) -> nn.Module:
        return Net(hidden)

    def helper():
        return 1
"""


@pytest.fixture
def model_file(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "mynet.py"
    path.write_text(textwrap.dedent(MODEL_FILE))
    return path


def test_file_route_trusted_by_model_path(tmp_path, model_file, capsys):
    name = f"file:{model_file}:Net"
    sources.trust_file(model_file)
    pa, _ = _pair(
        tmp_path, {"name": name, "kwargs": {"hidden": 8}}, lambda: build_model(name, hidden=8)
    )
    sources._trusted_files.clear()
    with pytest.raises(CheckpointError, match="not trusted.*--model-path or LANDSCAPE_MODEL_PATHS"):
        load_checkpoint(pa)
    assert main(["info", str(pa)]) == 2
    assert "not trusted" in capsys.readouterr().err
    assert main(["info", str(pa), "--model-path", str(model_file.parent)]) == 0
    assert load_checkpoint(pa).build_model().head.in_features == 8


def test_file_route_trusted_by_env_and_listed(tmp_path, model_file, monkeypatch):
    monkeypatch.setenv(sources.MODEL_PATHS_ENV, str(model_file.parent))
    assert sources.trusted_models() == [f"file:{model_file}:Net", f"file:{model_file}:make"]
    name = f"file:{model_file}:make"
    pa, pb = _pair(tmp_path, {"name": name, "kwargs": {}}, lambda: build_model(name))
    result = _curve(load_checkpoint(pa), load_checkpoint(pb))
    assert len(result.curve["train_loss"]) == 3


def test_file_arch_on_the_command_line_is_trusted(tmp_path, model_file):
    path = tmp_path / "net.pt"
    sources.trust_file(model_file)
    torch.save(
        {"module." + k: v for k, v in build_model(f"file:{model_file}:Net").state_dict().items()},
        path,
    )
    sources._trusted_files.clear()
    assert main(["info", str(path), "--arch", f"file:{model_file}:Net"]) == 0


# ---------------------------------------------------------------- exported programs (.pt2)


def _export(model: nn.Module, path: Path, *, dynamic: bool = True) -> Path:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(model, (torch.randn(2, 1, 8, 8),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_pt2_opens_only_with_trust_and_fits_a_curve(tmp_path):
    torch.manual_seed(0)
    pa = _export(_mlp(), tmp_path / "a.pt2")
    pb = _export(_mlp(), tmp_path / "b.pt2")
    with pytest.raises(CheckpointError, match="only from the command line with --trust"):
        load_checkpoint(pa)
    a = load_checkpoint(pa, trust=True, data=DIGITS)
    b = load_checkpoint(pb, trust=True, data=DIGITS)
    assert a.arch == b.arch and a.arch["name"].startswith("export:")  # one graph
    assert set(a.state) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert len(_curve(a, b).curve["train_loss"]) == 3
    assert main(["info", str(pa), "--trust"]) == 0


def test_pt2_with_batchnorm_or_fixed_batch_is_refused(tmp_path):
    cnn = build_model("cnn").eval()
    with pytest.raises(
        CheckpointError, match=r"BatchNorm with aten\.batch_norm.*cannot be recomputed"
    ):
        load_checkpoint(_export(cnn, tmp_path / "bn.pt2"), trust=True)
    with pytest.raises(CheckpointError, match="fixed batch size of 2"):
        load_checkpoint(_export(_mlp(), tmp_path / "fixed.pt2", dynamic=False), trust=True)


def test_hostile_pt2_runs_code_in_torch_export_load(tmp_path):
    """The finding behind --trust: torch.export.load unpickles a weight marked use_pickle with
    weights_only=False, so a crafted .pt2 runs a command; landscape refuses it untrusted."""
    good = _export(_mlp(), tmp_path / "good.pt2")
    evil, marker = tmp_path / "evil.pt2", tmp_path / "pwned"
    script = textwrap.dedent(
        f"""
        import json, os, pickle, zipfile
        class Boom:
            def __reduce__(self):
                return (os.system, ("touch {marker}",))
        with zipfile.ZipFile({str(good)!r}) as zin, zipfile.ZipFile({str(evil)!r}, "w") as zout:
            for info in zin.infolist():
                data = zin.read(info.filename)
                if info.filename.endswith("weights/model_weights_config.json"):
                    config = json.loads(data)
                    config["config"]["1.weight"]["use_pickle"] = True
                    data = json.dumps(config).encode()
                if info.filename.endswith("weights/weight_0"):
                    data = pickle.dumps(Boom())
                zout.writestr(info, data)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert zipfile.is_zipfile(evil)
    with pytest.raises(CheckpointError, match="--trust"):
        load_checkpoint(evil)
    assert main(["info", str(evil)]) == 2
    assert not marker.exists()  # refused by landscape: nothing ran
    load = f"import torch\ntry:\n    torch.export.load({str(evil)!r})\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", load], check=True, capture_output=True, timeout=120)
    assert marker.exists()  # torch.export.load itself ran the file's command
