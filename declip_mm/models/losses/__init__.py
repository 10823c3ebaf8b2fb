"""Losses, one concept per module: DeCLIP distillation (docs/method.md section 3), F-ViT classification."""
from .content_loss import ContentDistillLoss, RegionCorrelationLoss, weighted_pool
from .context_loss import ContextDistillLoss, complete_with_diffusion, cosine_matrix, student_affinity
from .ov_cross_entropy import OVCrossEntropyLoss

__all__ = ['ContextDistillLoss', 'ContentDistillLoss', 'RegionCorrelationLoss', 'complete_with_diffusion',
           'cosine_matrix', 'student_affinity', 'weighted_pool', 'OVCrossEntropyLoss']
