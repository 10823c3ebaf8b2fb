"""Context (spatial consistency) distillation: student token affinities -> the VFM's (docs/method.md section 3).

S_clip is the cosine-similarity matrix of the student's context tokens (for 'csa' the mean of the q and k
matrices), S_target that of the VFM tokens, optionally completed by diffusion self-attention
(S_target = A_sd @ S_vfm). Shapes: B images, N tokens, C channels.
"""
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import MODELS


def cosine_matrix(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, C) -> (B, N, N) cosine similarities."""
    t = F.normalize(tokens.float(), dim=-1)
    return t @ t.transpose(-1, -2)


def student_affinity(context: Union[torch.Tensor, Tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """S_clip (B, N, N) from context tokens (B, N, C), or the mean over a (q, k) pair ('csa')."""
    if isinstance(context, (tuple, list)):
        return torch.stack([cosine_matrix(c) for c in context]).mean(0)
    return cosine_matrix(context)


def complete_with_diffusion(s_vfm: torch.Tensor, a_sd: torch.Tensor) -> torch.Tensor:
    """SD-guided semantic completion: A_sd (B, N, N, rows stochastic) @ S_vfm (B, N, N)."""
    if a_sd.shape != s_vfm.shape:
        raise ValueError(f'diffusion attention {tuple(a_sd.shape)} and VFM affinity {tuple(s_vfm.shape)} differ')
    return a_sd.float() @ s_vfm


@MODELS.register_module()
class ContextDistillLoss(nn.Module):
    """L_ctx between S_clip and S_target (B, N, N).

    kind='l2' (CVPR): mean over rows i of ||S_target[i] - S_clip[i]||_2.
    kind='kl' (journal): mean over rows of KL(P_i || Q_i), P = softmax(S_target / tau_t), Q = softmax(S_clip / tau_s).
    Rows are averaged per image, then over images.

    Args:
        kind (str): 'kl' (journal) or 'l2' (CVPR). Defaults to 'kl'.
        tau_t (float): temperature of the target rows (KL only). Defaults to 0.1.
        tau_s (float): temperature of the student rows (KL only). Defaults to 0.1.
        loss_weight (float): lambda, the weight of the term. Defaults to 0.25.
    """

    def __init__(self, kind: str = 'kl', tau_t: float = 0.1, tau_s: float = 0.1, loss_weight: float = 0.25):
        super().__init__()
        if kind not in ('kl', 'l2'):
            raise ValueError(f"context loss kind must be 'kl' or 'l2', got '{kind}'")
        self.kind, self.tau_t, self.tau_s, self.loss_weight = kind, tau_t, tau_s, loss_weight

    def forward(self, s_clip: torch.Tensor, s_target: torch.Tensor) -> torch.Tensor:
        if s_clip.shape != s_target.shape:
            raise ValueError(f'student affinity {tuple(s_clip.shape)} and target {tuple(s_target.shape)} differ')
        s_target = s_target.detach().float()
        if self.kind == 'l2':
            per_row = (s_target - s_clip.float()).norm(dim=-1)
        else:
            log_p = F.log_softmax(s_target / self.tau_t, dim=-1)
            log_q = F.log_softmax(s_clip.float() / self.tau_s, dim=-1)
            per_row = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        return self.loss_weight * per_row.mean()
