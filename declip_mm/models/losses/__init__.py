"""DeCLIP distillation losses, one concept per module (METHOD.md section 3)."""
from .content_loss import ContentDistillLoss, RegionCorrelationLoss, weighted_pool
from .context_loss import ContextDistillLoss, complete_with_diffusion, cosine_matrix, student_affinity

__all__ = ['ContextDistillLoss', 'ContentDistillLoss', 'RegionCorrelationLoss', 'complete_with_diffusion',
           'cosine_matrix', 'student_affinity', 'weighted_pool']
