"""Frozen teachers for DeCLIP distillation: a vision foundation model (DINOv2 / DINO) and Stable Diffusion."""
from .diffusion import DiffusionTeacher, fuse_attention, resize_attention
from .vfm import IMAGENET_MEAN, IMAGENET_STD, VFM_ARCHS, VFMTeacher

__all__ = ['VFMTeacher', 'DiffusionTeacher', 'VFM_ARCHS', 'IMAGENET_MEAN', 'IMAGENET_STD', 'fuse_attention',
           'resize_attention']
