"""python -m fastres.export: torchvision's layout (a ResNet written here from torchvision's definition
loads the weights strictly and computes the same outputs, bit for bit), TorchScript, ONNX run by
onnxruntime against PyTorch; the sidecar says the classes and the input; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from trained import short_run

from fastres.checkpoint import write_checkpoint_file
from fastres.config import TrainConfig
from fastres.export import main as export_main
from fastres.model import resnet50
from fastres.tools.loading import load_model, preprocess


# -- torchvision's ResNet, as torchvision/models/resnet.py defines it (v1.5: stride in the 3x3) ---------
def tv_conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=1, bias=False, dilation=1)


def tv_conv1x1(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class TvBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tv_conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = tv_conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        width = planes
        self.conv1 = tv_conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = tv_conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = tv_conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                tv_conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def tv_resnet18(num_classes):
    return TvResNet(TvBasicBlock, [2, 2, 2, 2], num_classes)


def tv_resnet50(num_classes):
    return TvResNet(TvBottleneck, [3, 4, 6, 3], num_classes)


# -- tests -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    return short_run(tmp_path_factory)


def export(*args: str) -> int:
    return export_main([str(a) for a in args])


def images_of(data: Path, size: int) -> torch.Tensor:
    from PIL import Image

    paths = sorted((data / "val").glob("*/*.JPEG"))[:6]
    return preprocess([Image.open(p) for p in paths], size)


def test_torchvision_export_of_a_trained_run_is_torchvisions_resnet18(trained, tmp_path, capsys):
    data, run = trained
    out = tmp_path / "resnet18.pth"
    assert export(run, "--format", "torchvision", out) == 0
    assert "identical outputs" in capsys.readouterr().out
    loaded = load_model(run)
    tv = tv_resnet18(len(loaded.classes)).eval()
    tv.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = images_of(data, loaded.image_size)
    with torch.inference_mode():
        assert torch.equal(tv(x), loaded.model(x))
    side = json.loads((tmp_path / "resnet18.pth.json").read_text())
    assert side["classes"] == list(loaded.classes) and side["arch"] == "resnet18" and side["input"]["crop"] == 32
    assert side["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_torchvision_export_of_resnet50_loads_strictly_and_matches_bit_for_bit(tmp_path):
    torch.manual_seed(1)
    model = resnet50(num_classes=1000)
    with torch.no_grad():  # every tensor random, BN statistics included: a misplaced key cannot go unseen
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.05)
    classes = [f"n{i:08d}" for i in range(1000)]
    config = TrainConfig(arch="resnet50", image_size=64).to_dict()
    state = {
        "format": "fastres-run",
        "model": model.state_dict(),
        "config": config,
        "classes": classes,
        "step": 0,
        "steps_per_epoch": 1,
        "epoch": 0,
        "extra": {},
    }
    write_checkpoint_file(state, tmp_path / "r50.pt")
    assert export(tmp_path / "r50.pt", "--format", "torchvision", tmp_path / "r50.pth") == 0
    tv = tv_resnet50(1000).eval()
    tv.load_state_dict(torch.load(tmp_path / "r50.pth", weights_only=True), strict=True)
    assert sum(p.numel() for p in tv.parameters()) == 25_557_032  # docs/design.md's ResNet-50
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(tv(x), model.eval()(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_runs_without_fastres_classes(trained, tmp_path):
    data, run = trained
    assert export(run, "--format", "torchscript", tmp_path / "m.ts") == 0
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    loaded = load_model(run)
    x = images_of(data, loaded.image_size)
    with torch.inference_mode():
        assert torch.allclose(scripted(x), loaded.model(x), atol=1e-5)


def test_onnx_export_runs_and_agrees_with_pytorch(trained, tmp_path, capsys):
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package, reason=f"{package} is not installed (pip install fastres[onnx])")
    data, run = trained
    out = tmp_path / "m.onnx"
    assert export(run, "--format", "onnx", out) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and not (tmp_path / "m.onnx.data").exists()  # one file
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the export ran onnx's checker only")
    assert "compared with PyTorch" in printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    loaded = load_model(run)
    x = images_of(data, loaded.image_size)  # real images, 6 of them: another batch size than the export's
    got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    with torch.inference_mode():
        want = loaded.model(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.argmax(1), want.argmax(1))


def test_onnx_without_the_packages_is_one_line(trained, tmp_path, monkeypatch, capsys):
    _data, run = trained
    monkeypatch.setattr("fastres.export._importable", lambda name: name not in ("onnx", "onnxscript"))
    assert export(run, "--format", "onnx", tmp_path / "m.onnx") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "python -m fastres.export: error: --format onnx needs the onnx and onnxscript package(s): "
        "pip install fastres[onnx]"
    ]
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda d, run: [d / "plain.pth", "--format", "torchvision", d / "o"], "plain.pth: not a fastres checkpoint"),
        (lambda d, run: [run, "--format", "torchvision", d / "no" / "o"], "its folder"),
        (lambda d, run: [run, "--format", "torchvision", d], "is a folder"),
        (lambda d, run: [run, "--format", "tflite", d / "o"], "invalid choice: 'tflite'"),
    ],
)
def test_bad_input_is_one_line_exit_2(trained, tmp_path, args, message):
    _data, run = trained
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pth")
    proc = subprocess.run(
        [sys.executable, "-m", "fastres.export", *map(str, args(tmp_path, run))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
