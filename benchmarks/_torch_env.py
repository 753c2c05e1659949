"""The separate environment the Torch-Pruning comparison runs in, and its PyTorch networks.

Torch-Pruning needs PyTorch, which does not belong beside this project's Keras/TensorFlow
stack, so ``structured_vs_torch_pruning.py`` runs its PyTorch half in
``benchmarks/.venv-torch`` (a CPU build of torch plus torch-pruning) as a subprocess and
compares the two halves in one table.

torchvision does not install beside that torch, so the two networks are written here by
hand, with the layout of ``keras.applications.ResNet50`` and ``keras.applications.MobileNetV2``
(not torchvision's: Keras' ResNet-50 has biases on every convolution and strides its blocks
in the first 1x1 convolution; its MobileNetV2 pads stride-2 convolutions as TensorFlow's
"same" does, one pixel on the bottom/right only for even sizes). Every module's dotted
name with the dots removed is the name of the Keras layer it mirrors (``conv2_block1._1_conv``
is ``conv2_block1_1_conv``), so weights are copied by name.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TORCH_VENV = Path(__file__).resolve().parent / ".venv-torch"
TORCH_VERSION = "2.13.0"   # a CPU build; a bare "torch" would fetch a multi-GB CUDA build
PACKAGES = ["torch-pruning", "numpy"]


def ensure_torch_venv() -> Path:
    """Create ``benchmarks/.venv-torch`` with a CPU torch and torch-pruning if missing; return
    its python. Installing torch-pruning must not replace the torch pinned first."""
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {TORCH_VENV} (torch {TORCH_VERSION} CPU + torch-pruning)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"torch=={TORCH_VERSION}"], check=True)
        subprocess.run([*pip, *PACKAGES, f"torch=={TORCH_VERSION}"], check=True)
    return python


def make_divisible(v: float, divisor: int = 8) -> int:
    """Channel rounding of MobileNetV2 (as ``keras.applications.mobilenet_v2``)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def torch_networks() -> dict:
    """``{"resnet50": ResNet50, "mobilenetv2": MobileNetV2}``: PyTorch classes with the Keras
    layouts (imported lazily: only the torch environment has torch)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class SamePad(nn.Module):
        """TensorFlow's "same" padding for a k x k, stride-s window (extra pixel bottom/right)."""

        def __init__(self, k: int, s: int):
            super().__init__()
            self.k, self.s = k, s

        def forward(self, x):
            pads = []
            for n in (x.shape[3], x.shape[2]):          # F.pad order: last axis first
                total = max((-(-n // self.s) - 1) * self.s + self.k - n, 0)
                pads += [total // 2, total - total // 2]
            return F.pad(x, pads)

    class Bottleneck(nn.Module):
        """``keras.applications.resnet.block1``: 1x1 (strided) - 3x3 - 1x1, biases, BN eps 1.001e-5."""

        def __init__(self, cin: int, filters: int, stride: int, shortcut: bool):
            super().__init__()
            bn = lambda c: nn.BatchNorm2d(c, eps=1.001e-5, momentum=0.01)  # noqa: E731
            if shortcut:
                self.add_module("_0_conv", nn.Conv2d(cin, 4 * filters, 1, stride))
                self.add_module("_0_bn", bn(4 * filters))
            self.add_module("_1_conv", nn.Conv2d(cin, filters, 1, stride))
            self.add_module("_1_bn", bn(filters))
            self.add_module("_1_relu", nn.ReLU())
            self.add_module("_2_conv", nn.Conv2d(filters, filters, 3, 1, padding=1))
            self.add_module("_2_bn", bn(filters))
            self.add_module("_2_relu", nn.ReLU())
            self.add_module("_3_conv", nn.Conv2d(filters, 4 * filters, 1))
            self.add_module("_3_bn", bn(4 * filters))
            self.add_module("_out", nn.ReLU())

        def forward(self, x):
            m = self._modules
            shortcut = m["_0_bn"](m["_0_conv"](x)) if "_0_conv" in m else x
            y = m["_1_relu"](m["_1_bn"](m["_1_conv"](x)))
            y = m["_2_relu"](m["_2_bn"](m["_2_conv"](y)))
            y = m["_3_bn"](m["_3_conv"](y))
            return m["_out"](shortcut + y)

    class ResNet50(nn.Module):
        """``keras.applications.ResNet50`` (include_top): stem, 3-4-6-3 bottlenecks, GAP, Dense."""

        def __init__(self, classes: int = 1000):
            super().__init__()
            self.conv1_pad = nn.ZeroPad2d(3)
            self.conv1_conv = nn.Conv2d(3, 64, 7, 2)
            self.conv1_bn = nn.BatchNorm2d(64, eps=1.001e-5, momentum=0.01)
            self.conv1_relu = nn.ReLU()
            self.pool1_pad = nn.ZeroPad2d(1)
            self.pool1_pool = nn.MaxPool2d(3, 2)
            cin, blocks = 64, []
            for stage, filters, n, stride in ((2, 64, 3, 1), (3, 128, 4, 2), (4, 256, 6, 2), (5, 512, 3, 2)):
                for b in range(1, n + 1):
                    name = f"conv{stage}_block{b}"
                    self.add_module(name, Bottleneck(cin, filters, stride if b == 1 else 1, b == 1))
                    blocks.append(name)
                    cin = 4 * filters
            self.blocks = blocks
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.predictions = nn.Linear(cin, classes)

        def features(self, x):
            x = self.conv1_relu(self.conv1_bn(self.conv1_conv(self.conv1_pad(x))))
            x = self.pool1_pool(self.pool1_pad(x))
            for name in self.blocks:
                x = self._modules[name](x)
            return self.avg_pool(x).flatten(1)

        def forward(self, x):
            return self.predictions(self.features(x))

    class InvertedResidual(nn.Module):
        """``keras.applications.mobilenet_v2._inverted_res_block``."""

        def __init__(self, cin: int, expansion: int, stride: int, filters: int, alpha: float, block_id: int):
            super().__init__()
            bn = lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.001)  # noqa: E731
            out = make_divisible(int(filters * alpha), 8)
            hidden = cin * expansion
            if block_id:
                self.add_module("_expand", nn.Conv2d(cin, hidden, 1, bias=False))
                self.add_module("_expand_BN", bn(hidden))
                self.add_module("_expand_relu", nn.ReLU6())
            self.add_module("_pad", SamePad(3, stride) if stride == 2 else nn.ZeroPad2d(1))
            self.add_module("_depthwise", nn.Conv2d(hidden, hidden, 3, stride, groups=hidden, bias=False))
            self.add_module("_depthwise_BN", bn(hidden))
            self.add_module("_depthwise_relu", nn.ReLU6())
            self.add_module("_project", nn.Conv2d(hidden, out, 1, bias=False))
            self.add_module("_project_BN", bn(out))
            self.residual = cin == out and stride == 1
            self.out_channels = out

        def forward(self, x):
            m = self._modules
            y = m["_expand_relu"](m["_expand_BN"](m["_expand"](x))) if "_expand" in m else x
            y = m["_depthwise_relu"](m["_depthwise_BN"](m["_depthwise"](m["_pad"](y))))
            y = m["_project_BN"](m["_project"](y))
            return x + y if self.residual else y

    class MobileNetV2(nn.Module):
        """``keras.applications.MobileNetV2(alpha=...)`` (include_top)."""

        SETTINGS = ((16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6),
                    (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6),
                    (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6), (320, 1, 6))

        def __init__(self, alpha: float = 1.0, classes: int = 1000):
            super().__init__()
            first = make_divisible(32 * alpha, 8)
            self.Conv1_pad = SamePad(3, 2)
            self.Conv1 = nn.Conv2d(3, first, 3, 2, bias=False)
            self.bn_Conv1 = nn.BatchNorm2d(first, eps=1e-3, momentum=0.001)
            self.Conv1_relu = nn.ReLU6()
            cin, blocks = first, []
            for block_id, (filters, stride, expansion) in enumerate(self.SETTINGS):
                name = f"block_{block_id}" if block_id else "expanded_conv"
                block = InvertedResidual(cin, expansion, stride, filters, alpha, block_id)
                self.add_module(name, block)
                blocks.append(name)
                cin = block.out_channels
            self.blocks = blocks
            last = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
            self.Conv_1 = nn.Conv2d(cin, last, 1, bias=False)
            self.Conv_1_bn = nn.BatchNorm2d(last, eps=1e-3, momentum=0.001)
            self.out_relu = nn.ReLU6()
            self.global_average_pooling2d = nn.AdaptiveAvgPool2d(1)
            self.predictions = nn.Linear(last, classes)

        def features(self, x):
            x = self.Conv1_relu(self.bn_Conv1(self.Conv1(self.Conv1_pad(x))))
            for name in self.blocks:
                x = self._modules[name](x)
            x = self.out_relu(self.Conv_1_bn(self.Conv_1(x)))
            return self.global_average_pooling2d(x).flatten(1)

        def forward(self, x):
            return self.predictions(self.features(x))

    return {"resnet50": ResNet50, "mobilenetv2": MobileNetV2}
