"""The simple feature pyramid of F-ViT (CLIPSelf ``F-ViT/models/evaclip_vit.py`` @1c7fe9c, ``interpolate1..4``):
four same-stride ViT maps -> strides p/4, p/2, p, 2p, for an FPN.

    level 1: ConvT(2, s2) -> norm -> GELU -> ConvT(2, s2)     (x4 up)
    level 2: ConvT(2, s2)                                     (x2 up)
    level 3: identity
    level 4: MaxPool(2, 2)                                    (x1/2)

Any backbone that returns four (B, C, H, W) maps first (DeCLIPViT with four ``out_indices``) feeds it; extra
trailing outputs (DeCLIPViT's dense map) are ignored, so ``neck=[SimplePyramid, FPN]`` drops into any mmdet config.
"""
from typing import Sequence, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import nn

from ...registry import MODELS


@MODELS.register_module()
class SimplePyramid(BaseModule):
    """Args:
        in_channels: the ViT width C (768 for B, 1024 for L).
        norm_cfg: the norm between the two transposed convolutions of level 1 (CLIPSelf: SyncBN).
    Input: a sequence whose first four items are (B, C, H, W); output: four maps (B, C, 4H, 4W) ... (B, C, H/2, W/2).
    """

    num_inputs = 4

    def __init__(self, in_channels: int, norm_cfg: dict = dict(type='SyncBN', requires_grad=True), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        c = in_channels
        self.in_channels = c
        self.up4 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2), build_norm_layer(norm_cfg, c)[1], nn.GELU(),
                                 nn.ConvTranspose2d(c, c, 2, 2))
        self.up2 = nn.ConvTranspose2d(c, c, 2, 2)
        self.down2 = nn.MaxPool2d(2, 2)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) < self.num_inputs:
            raise ValueError(f'SimplePyramid needs {self.num_inputs} input maps, got {len(inputs)}')
        for i, x in enumerate(inputs[:self.num_inputs]):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f'SimplePyramid input {i}: expected (B, {self.in_channels}, H, W), '
                                 f'got {tuple(x.shape)}')
        t1, t2, t3, t4 = inputs[:self.num_inputs]
        return self.up4(t1), self.up2(t2), t3, self.down2(t4)
