"""Attention U-Net of the published *Nematostella* rosette detector.

This file imports torch only: it is copied verbatim into the BioImage Model Zoo
package as the ``pytorch_state_dict`` architecture file, so it must stay
self-contained.

The layout follows the published code exactly (module names, order and forward
semantics), so the published 120 MB state dict loads with ``strict=True`` at the
default width ``base_channels=64``:

* ``enc1`` .. ``enc4``: (conv3x3, BN, ReLU) x 2, then MaxPool2d(2) *inside* the
  block, so each skip tensor is taken after pooling (half the resolution of the
  decoder level it joins). ``bridge``: the same block without pooling.
* ``att4`` .. ``att1``: additive attention gates. ``W_g`` and ``W_x`` are
  1x1 conv + BN, ``psi`` is 1x1 conv to one channel + BN + sigmoid; the gating
  signal (the up-sampled decoder tensor) is resized bilinearly
  (``align_corners=False``) to the skip's size.
* The gated skip is resized bilinearly to the decoder size and concatenated as
  ``[upsampled, gated skip]``; ``upconv4`` .. ``upconv1`` are
  ConvTranspose2d(k=2, s=2) and ``dec4`` .. ``dec1`` the conv block without
  pooling.
* ``final`` is Conv2d(base, out_channels, 1) followed by ``nn.Sigmoid``, the last
  registered module (BiaPy checks that and then adds no activation of its own).

Input: ``(batch, in_channels, H, W)`` float32 with H and W multiples of 16.
Output: ``(batch, out_channels, H, W)`` probabilities in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["AttentionUNet", "AttentionGate", "DIVISOR", "OutlinesAttentionUNet", "LabelsAttentionUNet",
           "outlines_to_channels", "labels_to_outlines"]

#: Height and width of the input must be multiples of this (four 2x poolings).
DIVISOR = 16


def _conv_block(in_ch: int, out_ch: int, pool: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _resize(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) as in the published code."""

    def __init__(self, F_g: int, F_l: int, F_int: int):
        super().__init__()
        self.W_g = nn.Sequential(nn.Conv2d(F_g, F_int, kernel_size=1), nn.BatchNorm2d(F_int))
        self.W_x = nn.Sequential(nn.Conv2d(F_l, F_int, kernel_size=1), nn.BatchNorm2d(F_int))
        self.psi = nn.Sequential(nn.Conv2d(F_int, 1, kernel_size=1), nn.BatchNorm2d(1), nn.Sigmoid())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g1 = self.W_g(_resize(g, x))
        x1 = self.W_x(x)
        return x * self.psi(self.relu(g1 + x1))


class AttentionUNet(nn.Module):
    """The published rosette Attention U-Net.

    Args:
        in_channels: input channels (2 for the published model: thick boundary
            band, thin outlines).
        out_channels: output channels (1: rosette probability).
        base_channels: width of the first level; 64 is the published model
            (31,394,477 parameters), smaller values give light demo models.
    """

    def __init__(self, in_channels: int = 2, out_channels: int = 1, base_channels: int = 64):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("base_channels", base_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AttentionUNet: {name} must be a positive integer, got {value!r}")
        if base_channels % 2:
            raise ValueError(f"AttentionUNet: base_channels must be even, got {base_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base_channels = base_channels
        b = base_channels
        self.enc1 = _conv_block(in_channels, b, pool=True)
        self.enc2 = _conv_block(b, 2 * b, pool=True)
        self.enc3 = _conv_block(2 * b, 4 * b, pool=True)
        self.enc4 = _conv_block(4 * b, 8 * b, pool=True)
        self.bridge = _conv_block(8 * b, 16 * b, pool=False)
        self.att4 = AttentionGate(8 * b, 8 * b, 4 * b)
        self.att3 = AttentionGate(4 * b, 4 * b, 2 * b)
        self.att2 = AttentionGate(2 * b, 2 * b, b)
        self.att1 = AttentionGate(b, b, b // 2)
        self.upconv4 = nn.ConvTranspose2d(16 * b, 8 * b, kernel_size=2, stride=2)
        self.dec4 = _conv_block(16 * b, 8 * b, pool=False)
        self.upconv3 = nn.ConvTranspose2d(8 * b, 4 * b, kernel_size=2, stride=2)
        self.dec3 = _conv_block(8 * b, 4 * b, pool=False)
        self.upconv2 = nn.ConvTranspose2d(4 * b, 2 * b, kernel_size=2, stride=2)
        self.dec2 = _conv_block(4 * b, 2 * b, pool=False)
        self.upconv1 = nn.ConvTranspose2d(2 * b, b, kernel_size=2, stride=2)
        self.dec1 = _conv_block(2 * b, b, pool=False)
        self.final = nn.Sequential(nn.Conv2d(b, out_channels, kernel_size=1), nn.Sigmoid())

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"AttentionUNet expects a 4D tensor (batch, channel, y, x), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"AttentionUNet expects {self.in_channels} input channel(s), got shape {tuple(x.shape)}")
        h, w = x.shape[-2], x.shape[-1]
        if h % DIVISOR or w % DIVISOR:
            raise ValueError(
                f"AttentionUNet: height and width must be multiples of {DIVISOR}, got shape "
                f"{tuple(x.shape)}; pad the image (rosette_bmz.predict does this for you)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export():
            self._check_input(x)
        e1 = self.enc1(x)       # H/2
        e2 = self.enc2(e1)      # H/4
        e3 = self.enc3(e2)      # H/8
        e4 = self.enc4(e3)      # H/16
        bottleneck = self.bridge(e4)

        d4 = self.upconv4(bottleneck)                              # H/8
        d4 = self.dec4(torch.cat([d4, _resize(self.att4(d4, e4), d4)], dim=1))
        d3 = self.upconv3(d4)                                      # H/4
        d3 = self.dec3(torch.cat([d3, _resize(self.att3(d3, e3), d3)], dim=1))
        d2 = self.upconv2(d3)                                      # H/2
        d2 = self.dec2(torch.cat([d2, _resize(self.att2(d2, e2), d2)], dim=1))
        d1 = self.upconv1(d2)                                      # H
        d1 = self.dec1(torch.cat([d1, _resize(self.att1(d1, e1), d1)], dim=1))
        return self.final(d1)


# ----------------------------------------------------------------------------------------------
# In-graph input variants (appended for the exporter's ``--input-kind outlines|labels``).
# AttentionUNet above is unchanged. These subclasses hold exactly the same weights (the input
# builder has no parameters), so one state dict serves the 2-channel model and both variants;
# ``final`` (Conv + Sigmoid) stays the last registered module. Everything is plain tensor
# arithmetic (pad, compare, max/min), so tracing to TorchScript and ONNX opset 17 is exact.


def _cross_neighbours(padded: torch.Tensor) -> list:
    """The four direct neighbours (up, down, left, right) of every pixel of a 1-px padded map."""
    return [padded[:, :, :-2, 1:-1], padded[:, :, 2:, 1:-1], padded[:, :, 1:-1, :-2], padded[:, :, 1:-1, 2:]]


def outlines_to_channels(outlines: torch.Tensor) -> torch.Tensor:
    """Binary outlines ``(B, 1, H, W)`` (any encoding: foreground = value > 0) -> ``(B, 2, H, W)``.

    Channel 0 equals ``skimage.segmentation.find_boundaries(outlines > 0, mode="thick")``: a pixel
    is a boundary pixel when its cross-shaped neighbourhood (itself and its 4 direct neighbours)
    holds both values, i.e. grey dilation != grey erosion with the connectivity-1 footprint.
    scikit-image mirrors the image at its edge for that, so a neighbour outside the image equals
    the edge pixel itself: replicate padding does the same here. Channel 1 is ``outlines > 0``.
    """
    fg = (outlines > 0).to(torch.float32)
    around = _cross_neighbours(F.pad(fg, (1, 1, 1, 1), mode="replicate"))
    dilated, eroded = fg, fg
    for n in around:
        dilated = torch.maximum(dilated, n)
        eroded = torch.minimum(eroded, n)
    return torch.cat([dilated - eroded, fg], dim=1)


def labels_to_outlines(labels: torch.Tensor) -> torch.Tensor:
    """Label image ``(B, 1, H, W)`` (0 = background) -> Cellpose-style inner outlines (0/1 float).

    A pixel of cell ``i > 0`` is an outline pixel if any of its 4 direct neighbours is not ``i``
    (another cell, background, or outside the image: zero padding). Same rule as
    ``rosette_bmz.inputs.inner_outlines``. Labels must be whole numbers; as float32 they are exact
    up to 2**24 = 16,777,216 cells.
    """
    around = _cross_neighbours(F.pad(labels, (1, 1, 1, 1), mode="constant", value=0.0))
    differs = around[0] != labels
    for n in around[1:]:
        differs = differs | (n != labels)
    return (differs & (labels > 0)).to(torch.float32)


def _check_one_channel(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} expects a (batch, 1, y, x) tensor, got shape {tuple(x.shape)}")


class OutlinesAttentionUNet(AttentionUNet):
    """AttentionUNet reading a 1-channel binary outline image (0/1, 0/255, ...) directly.

    Builds the published 2-channel input in the graph (:func:`outlines_to_channels`), then runs
    the unchanged network. Same weights (state dict keys) as ``AttentionUNet(in_channels=2)``.
    """

    def __init__(self, out_channels: int = 1, base_channels: int = 64):
        super().__init__(in_channels=2, out_channels=out_channels, base_channels=base_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export():
            _check_one_channel(x, type(self).__name__)
        return super().forward(outlines_to_channels(x))


class LabelsAttentionUNet(AttentionUNet):
    """AttentionUNet reading a 1-channel cell label image (e.g. Cellpose masks) directly.

    Draws the inner outlines (:func:`labels_to_outlines`) and the 2-channel input in the graph,
    then runs the unchanged network. Same weights as ``AttentionUNet(in_channels=2)``.
    """

    def __init__(self, out_channels: int = 1, base_channels: int = 64):
        super().__init__(in_channels=2, out_channels=out_channels, base_channels=base_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export():
            _check_one_channel(x, type(self).__name__)
        return super().forward(outlines_to_channels(labels_to_outlines(x.to(torch.float32))))
