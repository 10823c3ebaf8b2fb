"""Proxy tokens, measured: how concentrated each block's attention of an open_clip ViT image tower is.

DeCLIP's motivation (arXiv 2505.04410): in CLIP's last blocks the patch tokens' attention concentrates on a few
"proxy" tokens, the same few keys from every query (low attention entropy, much mass on a handful of keys), which
costs local discriminability. :func:`attention_concentration` measures this per block, reading q and k through
the package's tower view (``DeCLIPViT.view``: ``norm1`` + ``qkv``, EVA's rotary embedding applied as the normal
block applies it), so the attention is the vanilla block's own ``softmax(q k^T / sqrt(d))``.

Per block, over the patch-token queries of every image and every head (each head's attention on its own, then
averaged; ``head_mean=True`` averages the attention over heads first, as the explorer's maps do):

=============  ===================================================================================================
entropy        H(a_i) / log(N) of the query's attention row over all N keys (CLS included): 1 = uniform, 0 = one key
top{k}         share of the row's mass on the image's k proxy keys: the k patch keys that receive the most total
               attention from all patch queries of the image (chosen per image and head, the same for every query)
cls            share of the row's mass on the CLS key
local          share of the row's mass on the query's own 3 x 3 neighbourhood of patch keys (itself included)
=============  ===================================================================================================

:func:`uniform_reference` gives the same statistics for uniform attention (entropy 1, top-k k/N, ...).
Shapes: B images, h heads, N = 1 + H*W tokens (CLS first), (H, W) the patch grid.
"""
import math
from typing import Dict, List, Sequence, Tuple, Union

import torch


def _top_ks(top_k: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    return (int(top_k),) if isinstance(top_k, int) else tuple(int(k) for k in top_k)


def _backbone(visual_or_backbone):
    """A DeCLIPViT, or a bare open_clip image tower wrapped in a view-carrying stand-in."""
    if hasattr(visual_or_backbone, 'view') and hasattr(visual_or_backbone, 'grid_of'):
        return visual_or_backbone
    from declip_mm.models.backbones.vision_towers import make_view

    class _Tower:                                               # what block_attentions reads of a DeCLIPViT
        def __init__(self, visual):
            self.view = make_view(visual)
            self.patch_size = self.view.patch_size[0]

        def grid_of(self, images):
            return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
    return _Tower(visual_or_backbone)


@torch.no_grad()
def block_attentions(visual_or_backbone, images: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
    """Every block's vanilla attention softmax(q k^T / sqrt(d)) on ``images``.

    Args:
        visual_or_backbone (DeCLIPViT | nn.Module): a DeCLIPViT or an open_clip image tower (``CLIP.visual``).
        images (Tensor): (B, 3, H*p, W*p) normalised images.

    Returns:
        (list of L tensors (B, h, N, N) float32, rows = queries, columns = keys; the grid (H, W)). The blocks run
        as the tower runs them (``view.run_block``); the last block in its vanilla form.
    """
    from declip_mm.models.backbones.vision_towers import split_heads
    bb = _backbone(visual_or_backbone)
    view = bb.view
    grid = bb.grid_of(images)
    x, rope = view.embed(images)
    out = []
    for block in view.blocks:
        q, k, _ = view.qkv(block, view.norm1(block, x))
        q, k = split_heads(q, view.num_heads), split_heads(k, view.num_heads)
        if rope is not None:                                     # EVA: rotary embedding on the patch tokens' q, k
            from timm.layers import apply_rot_embed_cat
            half = getattr(block.attn, 'rotate_half', False)
            q = torch.cat([q[:, :, :1], apply_rot_embed_cat(q[:, :, 1:], rope, half=half)], dim=2)
            k = torch.cat([k[:, :, :1], apply_rot_embed_cat(k[:, :, 1:], rope, half=half)], dim=2)
        logits = (q.float() @ k.float().transpose(-2, -1)) * q.shape[-1] ** -0.5
        out.append(logits.softmax(-1))
        x = view.run_block(block, x, rope)
    return out, grid


def neighbourhood_mask(grid: Tuple[int, int], radius: int = 1, device=None) -> torch.Tensor:
    """(H*W, H*W) bool: key j lies in query i's (2 radius + 1)^2 spatial neighbourhood (itself included)."""
    H, W = grid
    rows = torch.arange(H, device=device).repeat_interleave(W)
    cols = torch.arange(W, device=device).repeat(H)
    return ((rows[:, None] - rows[None]).abs() <= radius) & ((cols[:, None] - cols[None]).abs() <= radius)


def concentration_stats(attn: torch.Tensor, grid: Tuple[int, int], top_k: Union[int, Sequence[int]] = (1, 4),
                        head_mean: bool = False) -> Dict[str, torch.Tensor]:
    """Per-image statistics of one block's attention (module doc).

    Args:
        attn (Tensor): (B, h, N, N) attention rows (each sums to 1), CLS first, N = 1 + H*W.
        grid (tuple[int, int]): the patch grid (H, W).
        top_k (int | Sequence[int]): how many proxy keys; one 'top{k}' statistic per value. Defaults to (1, 4).
        head_mean (bool): average the attention over heads before the statistics. Defaults to False.

    Returns:
        dict: name -> (B,) tensor, each the mean over the image's patch queries (and heads).
    """
    attn = attn.float()
    if head_mean:
        attn = attn.mean(1, keepdim=True)
    B, h, N, _ = attn.shape
    H, W = grid
    if N != 1 + H * W:
        raise ValueError(f'attention over {N} tokens does not match 1 + {H}x{W}')
    rows = attn[:, :, 1:]                                        # (B, h, HW, N): patch queries
    entropy = -(rows * rows.clamp_min(1e-30).log()).sum(-1) / math.log(N)
    stats = dict(entropy=entropy.mean((1, 2)), cls=rows[..., 0].mean((1, 2)))
    received = rows[..., 1:].sum(2)                              # (B, h, HW): total attention per patch key
    order = received.argsort(-1, descending=True)
    for k in _top_ks(top_k):
        keys = order[..., :k]                                    # (B, h, k): the image's (and head's) proxies
        picked = rows[..., 1:].gather(-1, keys[:, :, None].expand(B, h, H * W, k))
        stats[f'top{k}'] = picked.sum(-1).mean((1, 2))
    mask = neighbourhood_mask(grid, device=attn.device).to(attn.dtype)
    stats['local'] = (rows[..., 1:] * mask).sum(-1).mean((1, 2))
    return stats


def uniform_reference(grid: Tuple[int, int], top_k: Union[int, Sequence[int]] = (1, 4)) -> Dict[str, float]:
    """The statistics of uniform attention (every row 1/N) on a (H, W) grid."""
    H, W = grid
    N = 1 + H * W
    ref = dict(entropy=1.0, cls=1 / N, local=float(neighbourhood_mask(grid).sum(1).float().mean()) / N)
    ref.update({f'top{k}': k / N for k in _top_ks(top_k)})
    return ref


@torch.no_grad()
def attention_concentration(visual_or_backbone, images: torch.Tensor, top_k: Union[int, Sequence[int]] = (1, 4),
                            batch_size: int = 16, head_mean: bool = False) -> List[Dict[str, float]]:
    """Per block, the attention concentration statistics (module doc) averaged over ``images``.

    Args:
        visual_or_backbone (DeCLIPViT | nn.Module): a DeCLIPViT or an open_clip image tower (``CLIP.visual``).
        images (Tensor): (B, 3, H*p, W*p) normalised images.
        top_k (int | Sequence[int]): proxy-key counts, one 'top{k}' statistic each. Defaults to (1, 4).
        batch_size (int): images per forward pass. Defaults to 16.
        head_mean (bool): average the attention over heads before the statistics. Defaults to False.

    Returns:
        list of L dicts (block 0 first): statistic name -> mean over images, patch queries and heads.
    """
    per_block: List[Dict[str, List[torch.Tensor]]] = []
    for start in range(0, len(images), batch_size):
        attns, grid = block_attentions(visual_or_backbone, images[start:start + batch_size])
        for i, attn in enumerate(attns):
            if i == len(per_block):
                per_block.append({})
            for name, value in concentration_stats(attn, grid, top_k, head_mean).items():
                per_block[i].setdefault(name, []).append(value)
    return [{name: float(torch.cat(values).mean()) for name, values in block.items()} for block in per_block]


__all__ = ['attention_concentration', 'block_attentions', 'concentration_stats', 'neighbourhood_mask',
           'uniform_reference']
