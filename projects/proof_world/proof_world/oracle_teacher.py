"""``OracleSegmentTeacher``: a context teacher made of the ground truth, the upper bound of the proof's teachers.

Each patch's token is the share of its pixels in every class (a histogram over the world's labels, ignored
pixels left out), so the teacher's cosine affinity is 1 between patches of one segment, 0 between segments and
in between on boundaries: a teacher that groups perfectly. It reads the distillation view's label maps
(``DeCLIPDistillDataset(label_dir=...)`` -> batch entry ``vfm_labels``, the VFM view's geometry), not the image.
It uses labels, so rows distilled from it are an upper bound, never a DeCLIP result. In the world every thing of
a scene has its own class and every stuff region its own stuff class, so class segments are the scene's
segments (a stuff class may come in several pieces).
"""
import torch
import torch.nn.functional as F
from torch import nn

from declip_mm.registry import MODELS


@MODELS.register_module()
class OracleSegmentTeacher(nn.Module):
    """Label maps (B, h*p, w*p) -> per-patch class histograms (B, h*w, num_classes), float32.

    Args:
        num_classes (int): labels 0..num_classes-1 count; others (``ignore_index``, padding) are left out.
        patch_size (int): p, pixels per token side (the VFM view's patch).
        ignore_index (int): the label of unlabelled and padding pixels. Defaults to 255.
    """
    input_view = 'vfm_labels'

    def __init__(self, num_classes: int, patch_size: int, ignore_index: int = 255):
        super().__init__()
        if num_classes < 1 or patch_size < 1:
            raise ValueError(f'num_classes and patch_size must be positive, got {num_classes} and {patch_size}')
        self.num_classes, self.patch_size, self.ignore_index = num_classes, patch_size, ignore_index

    @torch.no_grad()
    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.dim() != 3 or labels.dtype.is_floating_point:
            raise ValueError(f'OracleSegmentTeacher reads integer label maps (B, H, W), got {tuple(labels.shape)} '
                             f'{labels.dtype}')
        p = self.patch_size
        if labels.shape[-2] % p or labels.shape[-1] % p:
            raise ValueError(f'label map {tuple(labels.shape[-2:])} is not a multiple of the patch size {p}')
        labels = labels.long()
        valid = (labels >= 0) & (labels < self.num_classes)
        onehot = F.one_hot(labels.where(valid, 0), self.num_classes).float() * valid[..., None]   # (B, H, W, K)
        shares = F.avg_pool2d(onehot.permute(0, 3, 1, 2), p)                                   # (B, K, h, w)
        return shares.flatten(2).transpose(1, 2)
