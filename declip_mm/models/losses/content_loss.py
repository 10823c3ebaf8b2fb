"""Content (local discriminability) distillation: student region features -> the CLIP teacher's crop
embeddings (docs/method.md section 3). Shapes: K regions, M = N*N RoIAlign cells, D joint dimension.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS


def weighted_pool(cells: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Journal pooling: cells (K, M, D), target (K, D) -> (K, D) = sum_m softmax_m(cos(cell_m, target)) cell_m."""
    weights = torch.softmax(F.cosine_similarity(cells, target[:, None], dim=-1), dim=-1)     # (K, M)
    return (weights[..., None] * cells).sum(dim=1)


REGION_AVERAGES = ('batch', 'image')


def average_regions(values: torch.Tensor, counts: Sequence[int], average: str) -> torch.Tensor:
    """Reduce per-region values (K,) to a scalar.

    'batch': mean over all K regions of the batch, as the reference training code does (images with more
    regions weigh more). 'image': mean over each image's regions, then over images (every image weighs the
    same, and a step does not depend on how the images are split across processes).
    """
    if not len(values):
        return values.sum() * 0
    if average == 'batch':
        return values.mean()
    return torch.stack([v.mean() for v in values.split(list(counts)) if len(v)]).mean()


def check_average(average: str) -> str:
    if average not in REGION_AVERAGES:
        raise ValueError(f"average must be one of {REGION_AVERAGES}, got '{average}'")
    return average


@MODELS.register_module()
class ContentDistillLoss(nn.Module):
    """1 - cos(student region, teacher crop embedding), per region.

    pooling='1x1' (CVPR): the student region is RoIAlign 1x1 (cells of shape (K, 1, D) or (K, D)).
    pooling='weighted' (journal): RoIAlign N x N cells, weighted by their softmax cosine to the teacher.

    Args:
        pooling (str): '1x1' (CVPR) or 'weighted' (journal). Defaults to 'weighted'.
        loss_weight (float): w_content, the weight of the term. Defaults to 1.0.
        average (str): 'batch' (the reference: mean over all regions of the batch) or 'image' (the mean per
            image, then over images; see ``average_regions``). Defaults to 'batch'.
    """

    def __init__(self, pooling: str = 'weighted', loss_weight: float = 1.0, average: str = 'batch'):
        super().__init__()
        if pooling not in ('1x1', 'weighted'):
            raise ValueError(f"content pooling must be '1x1' or 'weighted', got '{pooling}'")
        self.pooling, self.loss_weight, self.average = pooling, loss_weight, check_average(average)

    def forward(self, student_cells: torch.Tensor, teacher: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """student_cells (K, M, D) or (K, D); teacher (K, D); counts: regions per image (sum K)."""
        teacher = teacher.detach().float()
        cells = student_cells.float()
        if cells.dim() == 2:
            cells = cells[:, None]
        if self.pooling == 'weighted':
            pooled = weighted_pool(cells, teacher)
        else:
            if cells.shape[1] != 1:
                raise ValueError(f"pooling='1x1' expects one cell per region, got {cells.shape[1]}")
            pooled = cells[:, 0]
        loss = 1 - F.cosine_similarity(pooled, teacher, dim=-1)
        return self.loss_weight * average_regions(loss, counts, self.average)


@MODELS.register_module()
class RegionCorrelationLoss(nn.Module):
    """Region correlation constraint (journal): per region, row-wise KL between the VFM's and the student's
    cell-to-cell cosine matrices over the same N x N RoIAlign cells.

    KL(softmax(R_vfm / tau) || softmax(R_clip / tau)), averaged over the rows of a region, then over regions.

    Args:
        tau (float): temperature of both row softmaxes. Defaults to 0.1.
        loss_weight (float): w_rcc, the weight of the term. Defaults to 0.05.
        average (str): 'batch' (the reference's) or 'image', as for :class:`ContentDistillLoss`.
            Defaults to 'batch'.
    """

    def __init__(self, tau: float = 0.1, loss_weight: float = 0.05, average: str = 'batch'):
        super().__init__()
        self.tau, self.loss_weight, self.average = tau, loss_weight, check_average(average)

    def forward(self, student_cells: torch.Tensor, vfm_cells: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """student_cells (K, M, D), vfm_cells (K, M, C'), counts: regions per image."""
        if student_cells.shape[:2] != vfm_cells.shape[:2]:
            raise ValueError(f'student cells {tuple(student_cells.shape)} and VFM cells {tuple(vfm_cells.shape)} '
                             'differ in regions or cells')
        s = F.normalize(student_cells.float(), dim=-1)
        v = F.normalize(vfm_cells.detach().float(), dim=-1)
        log_p = F.log_softmax(v @ v.transpose(-1, -2) / self.tau, dim=-1)
        log_q = F.log_softmax(s @ s.transpose(-1, -2) / self.tau, dim=-1)
        per_region = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean(dim=-1)
        return self.loss_weight * average_regions(per_region, counts, self.average)
