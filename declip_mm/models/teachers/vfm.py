"""Vision-foundation-model teacher: DINOv2 (with or without registers), DINO and SAM's image encoder, built
with timm, frozen.

Weights are read from the official files by local path (the torch-hub ``dinov2_vitb14_reg4_pretrain.pth``,
``dino_vitbase16_pretrain.pth``, SAM's ``sam_vit_b_01ec64.pth``, ...) and mapped with timm's own
``checkpoint_filter_fn``; missing and unexpected keys are always reported. The teacher returns the last
layer's patch tokens after the final norm, CLS and register tokens dropped (docs/method.md section 2); for SAM,
the image encoder's neck output (256 channels). Its input is ImageNet-normalised, at the student's token
grid times the teacher's patch size.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...constants import IMAGENET_MEAN_255 as IMAGENET_MEAN, IMAGENET_STD_255 as IMAGENET_STD  # 0-255 scale
from ...registry import MODELS
from ..backbones.checkpoints import LoadReport, read_checkpoint

VFM_ARCHS = {
    'dinov2_vits14': 'vit_small_patch14_dinov2',
    'dinov2_vitb14': 'vit_base_patch14_dinov2',
    'dinov2_vitl14': 'vit_large_patch14_dinov2',
    'dinov2_vitg14': 'vit_giant_patch14_dinov2',
    'dinov2_vits14_reg': 'vit_small_patch14_reg4_dinov2',
    'dinov2_vitb14_reg': 'vit_base_patch14_reg4_dinov2',
    'dinov2_vitl14_reg': 'vit_large_patch14_reg4_dinov2',
    'dinov2_vitg14_reg': 'vit_giant_patch14_reg4_dinov2',
    'dino_vitb16': 'vit_base_patch16_224',
    'dino_vitb8': 'vit_base_patch8_224',
    'sam_vitb': 'samvit_base_patch16',
    'sam_vitl': 'samvit_large_patch16',
    'sam_vith': 'samvit_huge_patch16',
}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def dino_interpolate_pos(pos: torch.Tensor, grid: Tuple[int, int], offset: float = 0.1,
                         antialias: bool = False) -> torch.Tensor:
    """DINO / DINOv2's own position-embedding resize (``interpolate_pos_encoding`` of the official models):
    patch table (1, M*M, C) -> (1, h*w, C), bicubic. With ``offset`` != 0 (DINO; DINOv2 without registers:
    0.1) by scale factors (n + offset) / M; with offset 0 (DINOv2 with registers) to the size (h, w).
    ``antialias`` as the hub model sets it (True only for DINOv2 with registers)."""
    m = int(math.sqrt(pos.shape[1]))
    table = pos.reshape(1, m, m, -1).permute(0, 3, 1, 2).float()
    if offset:
        resize = dict(scale_factor=((grid[0] + offset) / m, (grid[1] + offset) / m))
    else:
        resize = dict(size=tuple(grid))
    table = F.interpolate(table, mode='bicubic', align_corners=False, antialias=antialias, **resize)
    if tuple(table.shape[-2:]) != tuple(grid):
        raise RuntimeError(f'position table resized to {tuple(table.shape[-2:])}, expected {grid}')
    return table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)


def dino_pos_rule(arch: str) -> dict:
    """The official hub models' resize settings: DINOv2 with registers is built with interpolate_offset=0 and
    interpolate_antialias=True; DINOv2 without registers and DINO v1 use offset 0.1, no antialiasing."""
    return dict(offset=0.0, antialias=True) if arch.endswith('_reg') else dict(offset=0.1, antialias=False)


@MODELS.register_module()
class VFMTeacher(nn.Module):
    """Frozen DINOv2 / DINO / SAM teacher giving patch tokens (B, h*w, C) for ImageNet-normalised (B, 3, h*p, w*p).

    Args:
        arch (str): one of ``VFM_ARCHS`` (e.g. 'dinov2_vitb14_reg', the paper's default for CLIP-B).
            Defaults to 'dinov2_vitb14_reg'.
        checkpoint (str, optional): local path of the official weights file; None keeps random weights (tests
            only). Defaults to None.
        dtype (str): 'fp32', 'bf16' or 'fp16' for the teacher's weights and compute. Defaults to 'fp32'.
        model_kwargs (dict, optional): extra timm arguments (e.g. a smaller embed_dim/depth for tests).
            Defaults to None.
        strict (bool): raise on missing/unexpected keys (always logged). Defaults to True.
    """

    def __init__(self, arch: str = 'dinov2_vitb14_reg', checkpoint: Optional[str] = None, dtype: str = 'fp32',
                 model_kwargs: Optional[dict] = None, strict: bool = True):
        super().__init__()
        import timm
        if arch not in VFM_ARCHS:
            raise ValueError(f"unknown VFM teacher '{arch}'; choose one of {sorted(VFM_ARCHS)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got '{dtype}'")
        self.arch = arch
        # SAM resizes its position (and relative position) embeddings to any grid by itself; DINO / DINOv2
        # tables are resized here with the official rule (see set_grid)
        self.model = timm.create_model(VFM_ARCHS[arch], pretrained=False, num_classes=0, **(model_kwargs or {}))
        self.load_report = None
        if checkpoint is not None:
            self.load_report = self._load(checkpoint, strict)
        self.patch_size = self.model.patch_embed.patch_size[0]
        neck = getattr(self.model, 'neck', None)
        self.embed_dim = neck[-1].normalized_shape[0] if neck is not None and len(neck) else self.model.embed_dim
        self.dtype = DTYPES[dtype]
        self.grid = tuple(self.model.patch_embed.grid_size)
        self.resizes_pos_itself = arch.startswith('sam')
        if not self.resizes_pos_itself:
            # the pretraining grid's table (after the weights are loaded), the source of every resize
            self.register_buffer('source_pos_embed', self.model.pos_embed.detach().clone().float(), persistent=False)
            self.source_grid = self.grid
        self.model.to(self.dtype)
        self.requires_grad_(False)
        self.eval()

    def _load(self, path: str, strict: bool) -> LoadReport:
        import importlib
        module = importlib.import_module(type(self.model).__module__)
        state_dict = read_checkpoint(path).require_state_dict()
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('head.')}  # DINO's unused heads
        state_dict = module.checkpoint_filter_fn(state_dict, self.model)
        result = self.model.load_state_dict(state_dict, strict=False)
        report = LoadReport(list(result.missing_keys), list(result.unexpected_keys), [])
        report.check(path, strict)
        return report

    def train(self, mode: bool = True):
        """Always in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def set_grid(self, grid: Tuple[int, int]) -> None:
        """Make the model take a grid of (h, w) tokens; DINO/DINOv2 position tables are resized officially."""
        p = self.patch_size
        if self.resizes_pos_itself:
            return
        self.model.set_input_size(img_size=(grid[0] * p, grid[1] * p))
        num_prefix = 0 if self.model.no_embed_class else self.model.num_prefix_tokens
        src = self.source_pos_embed
        patch = src[:, num_prefix:] if tuple(grid) == tuple(self.source_grid) else \
            dino_interpolate_pos(src[:, num_prefix:], grid, **dino_pos_rule(self.arch))
        self.model.pos_embed.data.copy_(torch.cat([src[:, :num_prefix], patch], dim=1))
        self.grid = tuple(grid)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h*p, w*p) ImageNet-normalised -> (B, h*w, C) final-norm patch tokens (float32)."""
        p = self.patch_size
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(f'VFM input {tuple(images.shape[-2:])} is not a multiple of its patch size {p}')
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        if grid != self.grid:
            self.set_grid(grid)
        features = self.model.forward_features(images.to(self.dtype))
        if features.dim() == 4:                                   # SAM: (B, C, h, w) neck map
            return features.flatten(2).transpose(1, 2).float()
        return features[:, self.model.num_prefix_tokens:].float()
