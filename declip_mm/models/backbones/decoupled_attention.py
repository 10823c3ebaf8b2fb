"""DeCLIP's decoupled last attention block (docs/method.md section 1), in one place.

Given the last block's input tokens x (B, N, C):

    x_n = LN1(x)
    q, k, v = x_n Wq + bq, x_n Wk (+ bk), x_n Wv + bv          # (B, h, N, d) after splitting heads
    A = softmax(s q q^T)                        mode 'qq'
      | softmax(s k k^T)                        mode 'kk'
      | softmax(s q q^T) + softmax(s k k^T)     mode 'csa'  (a sum of two softmaxes)
    content = OutProj(InnerLN(A v))             # heads merged; no residual, no MLP
    context = q (and k for 'csa')               # heads concatenated, with bias, before scaling

Each softmax(s a a^T) v is one call of PyTorch's scaled-dot-product attention, so the N x N matrix is
never materialised where SDPA has a fused kernel.
"""
from typing import NamedTuple, Tuple, Union

import torch
import torch.nn.functional as F

from .vision_towers import merge_heads, split_heads

DECOUPLED_MODES = ('qq', 'kk', 'csa')


class DecoupledOutput(NamedTuple):
    content: torch.Tensor                                              # (B, N, C)
    context: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]    # (B, N, C), or (q, k) for 'csa'


def decoupled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str, scale: float) -> torch.Tensor:
    """A v for (B, h, N, d) heads, with A the mode's self-self attention; returns (B, h, N, d)."""
    if mode == 'qq':
        return F.scaled_dot_product_attention(q, q, v, scale=scale)
    if mode == 'kk':
        return F.scaled_dot_product_attention(k, k, v, scale=scale)
    if mode == 'csa':
        return (F.scaled_dot_product_attention(q, q, v, scale=scale)
                + F.scaled_dot_product_attention(k, k, v, scale=scale))
    raise ValueError(f"decoupled mode must be one of {DECOUPLED_MODES}, got '{mode}'")


def decoupled_block(view, block, x: torch.Tensor, mode: str, scale: float) -> DecoupledOutput:
    """Run the decoupled form of ``block`` on tokens x (B, N, C) through a tower ``view``."""
    q, k, v = view.qkv(block, view.norm1(block, x))
    heads = view.num_heads
    out = decoupled_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads), mode, scale)
    content = view.attn_out(block, merge_heads(out))
    context = {'qq': q, 'kk': k, 'csa': (q, k)}[mode]
    return DecoupledOutput(content, context)


def maskclip_block(view, block, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP / CLIPSelf last block: value path only (v -> InnerLN -> OutProj), keeping residual and MLP."""
    v = view.qkv(block, view.norm1(block, x))[2]
    x = view.attn_residual(block, x, view.attn_out(block, v))
    return view.mlp_residual(block, x)
