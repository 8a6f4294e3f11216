"""The same models written in PyTorch, for side-by-side speed comparisons (benchmarks only).

Layer for layer the architectures of flatrob_jax.models.SmallCNN and ResNet-18 (CIFAR stem):
conv (no bias) - BatchNorm - ReLU, strided convolutions, global average pooling.
"""

import torch
from torch import nn


class TorchSmallCNN(nn.Module):
    def __init__(self, num_classes=10, widths=(16, 32, 64), convs_per_stage=2, in_channels=1):
        super().__init__()
        layers, c = [], in_channels
        for stage, w in enumerate(widths):
            for i in range(convs_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers += [
                    nn.Conv2d(c, w, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                ]
                c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class TorchBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class TorchResNet18(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        blocks, c = [], 64
        for stage, w in enumerate((64, 128, 256, 512)):
            for i in range(2):
                blocks.append(TorchBasicBlock(c, w, 2 if (stage > 0 and i == 0) else 1))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.blocks(x).mean((2, 3)))
