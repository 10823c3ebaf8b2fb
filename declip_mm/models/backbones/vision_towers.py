"""Uniform views over open_clip's two ViT families, so the decoupled forward is written once.

A view owns no parameters: it reads the open_clip image tower it wraps (``CLIP.visual``) and exposes the
few operations DeCLIP needs — embedding at any grid, running a block, the last block's pieces (LN1,
q/k/v, inner LN + output projection, LN2 + MLP) and the per-token head (LN_post + Proj).

* :class:`OpenAIViTView` — open_clip ``VisionTransformer`` (OpenAI / OpenCLIP ViT-B-16, ViT-L-14-336, ...):
  fused ``in_proj`` with q/k/v biases, no inner LN, learned absolute position embedding.
* :class:`EvaViTView` — open_clip ``TimmModel`` around timm's ``Eva`` (EVA02-B-16, EVA02-L-14-336, ...):
  separate q/k/v projections (q and v biases), EVA's inner sub-LN, SwiGLU MLP, absolute position embedding
  plus 2-D rotary embedding in every normal block.

Shapes: B batch, C width, h heads, d = C/h, (H, W) token grid, N = 1 + H*W tokens (CLS first), D joint
embedding dimension.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def interpolate_pos_embed(pos: torch.Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int]) -> torch.Tensor:
    """Resize position embeddings (1 + Hs*Ws, C) -> (1 + H*W, C): bicubic, align_corners=False, CLS untouched."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    channels = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(new_grid), mode='bicubic', align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(-1, channels).to(pos.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, h, N, d)."""
    B, N, C = x.shape
    return x.reshape(B, N, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, h, N, d) -> (B, N, C)."""
    B, h, N, d = x.shape
    return x.transpose(1, 2).reshape(B, N, h * d)


class OpenAIViTView:
    """View over open_clip's ``VisionTransformer``."""

    family = 'openai'

    def __init__(self, visual: nn.Module):
        if not visual.transformer.batch_first:
            raise ValueError('DeCLIPViT expects open_clip towers built with batch_first=True')
        self.visual = visual
        self.blocks = visual.transformer.resblocks
        self.patch_size = tuple(visual.conv1.kernel_size)
        self.width = visual.conv1.out_channels
        self.num_heads = self.blocks[0].attn.num_heads
        self.pretrain_grid = tuple(visual.grid_size)
        self.embed_dim = visual.proj.shape[1]

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, None]:
        """(B, 3, H*p, W*p) -> tokens (B, N, C) after ln_pre; no rotary embedding (None)."""
        v = self.visual
        x = v.conv1(images)
        grid = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(v.positional_embedding, self.pretrain_grid, grid).to(x.dtype)
        return v.ln_pre(x), None

    def run_block(self, block: nn.Module, x: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        return block(x)

    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.ln_1(x)

    def qkv(self, block: nn.Module, x_n: torch.Tensor):
        """LN1-ed tokens (B, N, C) -> q, k, v, each (B, N, C), biases included, no scaling."""
        attn = block.attn
        return F.linear(x_n, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)

    def attn_out(self, block: nn.Module, o: torch.Tensor) -> torch.Tensor:
        """OutProj(InnerLN(o)) for merged heads (B, N, C); OpenAI towers have no inner LN."""
        return block.attn.out_proj(o)

    def attn_residual(self, block: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        return x + block.ls_1(attn_out)

    def mlp_residual(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token LN_post + Proj: (B, L, C) -> (B, L, D)."""
        return self.visual.ln_post(tokens) @ self.visual.proj

    def unused_in_decoupled_block(self, block: nn.Module):
        """Parameters of the last block that the decoupled forward never reads (LN2, MLP, LayerScale 2)."""
        return list(block.ln_2.parameters()) + list(block.mlp.parameters()) + list(block.ls_2.parameters())

    def qk_params(self, block: nn.Module):
        """(q params, k params); None where q/k share a fused tensor with v and cannot be frozen alone."""
        return None, None

    def stem_params(self):
        v = self.visual
        return [v.conv1.weight, v.class_embedding, v.positional_embedding, *v.ln_pre.parameters()]

    def head_params(self):
        return [*self.visual.ln_post.parameters(), self.visual.proj]


class EvaViTView:
    """View over open_clip's ``TimmModel`` wrapping timm's ``Eva`` (EVA02-CLIP)."""

    family = 'eva'

    def __init__(self, visual: nn.Module):
        trunk = visual.trunk
        if trunk.reg_token is not None or trunk.no_embed_class or trunk.patch_drop is not None:
            raise ValueError('DeCLIPViT supports EVA towers with a CLS token, a CLS position and no registers')
        self.visual = visual
        self.trunk = trunk
        self.blocks = trunk.blocks
        self.patch_size = tuple(trunk.patch_embed.patch_size)
        self.width = trunk.embed_dim
        self.num_heads = self.blocks[0].attn.num_heads
        self.pretrain_grid = tuple(trunk.patch_embed.grid_size)
        self.embed_dim = trunk.head.out_features if isinstance(trunk.head, nn.Linear) else trunk.embed_dim
        self._rope_cache = {}

    def rope(self, grid: Tuple[int, int], device) -> Optional[torch.Tensor]:
        """Rotary sin/cos table (H*W, 2*d) for the actual grid, positions arange(n) / n * ref_grid (EVA02)."""
        rope = self.trunk.rope
        if rope is None:
            return None
        key = (tuple(grid), str(device))
        if key not in self._rope_cache:
            from timm.layers import build_rotary_pos_embed
            sin, cos = build_rotary_pos_embed(
                list(grid), bands=rope.bands, in_pixels=rope.in_pixels, ref_feat_shape=rope.ref_feat_shape,
                grid_offset=rope.grid_offset, grid_indexing=rope.grid_indexing, rotate_half=rope.rotate_half,
                device=device, dtype=torch.float32)
            self._rope_cache[key] = torch.cat([sin, cos], dim=-1)
        return self._rope_cache[key]

    def embed(self, images: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, 3, H*p, W*p) -> tokens (B, N, C), rotary embedding for the patch tokens."""
        t = self.trunk
        x = t.patch_embed.proj(images)
        grid = x.shape[-2:]
        x = t.patch_embed.norm(x.flatten(2).transpose(1, 2))
        x = torch.cat([t.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + interpolate_pos_embed(t.pos_embed[0], self.pretrain_grid, grid).to(x.dtype)
        return t.norm_pre(t.pos_drop(x)), self.rope(grid, x.device)

    def run_block(self, block: nn.Module, x: torch.Tensor, rope: Optional[torch.Tensor]) -> torch.Tensor:
        return block(x, rope=rope)

    def norm1(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return block.norm1(x)

    def qkv(self, block: nn.Module, x_n: torch.Tensor):
        """LN1-ed tokens (B, N, C) -> q, k, v, each (B, N, C): q and v biases, no k bias, no RoPE."""
        attn = block.attn
        if attn.qkv is None:
            return attn.q_proj(x_n), attn.k_proj(x_n), attn.v_proj(x_n)
        bias = None
        if attn.q_bias is not None:
            bias = torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
        return F.linear(x_n, attn.qkv.weight, bias).chunk(3, dim=-1)

    def attn_out(self, block: nn.Module, o: torch.Tensor) -> torch.Tensor:
        """OutProj(InnerLN(o)) for merged heads (B, N, C): EVA's sub-LN before the output projection."""
        attn = block.attn
        return attn.proj_drop(attn.proj(attn.norm(o)))

    def attn_residual(self, block: nn.Module, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        if block.gamma_1 is not None:
            attn_out = block.gamma_1 * attn_out
        return x + attn_out

    def mlp_residual(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = block.mlp(block.norm2(x))
        if block.gamma_2 is not None:
            out = block.gamma_2 * out
        return x + out

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token final norm + projection head: (B, L, C) -> (B, L, D)."""
        t = self.trunk
        return self.visual.head(t.head(t.fc_norm(t.norm(tokens))))

    def unused_in_decoupled_block(self, block: nn.Module):
        params = list(block.norm2.parameters()) + list(block.mlp.parameters())
        if block.gamma_2 is not None:
            params.append(block.gamma_2)
        return params

    def qk_params(self, block: nn.Module):
        attn = block.attn
        if attn.qkv is not None:
            return None, None
        return list(attn.q_proj.parameters()), list(attn.k_proj.parameters())

    def stem_params(self):
        t = self.trunk
        return [*t.patch_embed.parameters(), t.cls_token, t.pos_embed, *t.norm_pre.parameters()]

    def head_params(self):
        t = self.trunk
        return [*t.norm.parameters(), *t.fc_norm.parameters(), *t.head.parameters(), *self.visual.head.parameters()]


def make_view(visual: nn.Module):
    """Pick the view for an open_clip image tower."""
    if hasattr(visual, 'trunk'):
        from timm.models.eva import Eva
        if isinstance(visual.trunk, Eva):
            return EvaViTView(visual)
        raise TypeError(f'timm image tower {type(visual.trunk).__name__} is not an EVA ViT; DeCLIPViT supports '
                        'OpenAI/OpenCLIP ViTs and EVA02 ViTs')
    if hasattr(visual, 'transformer') and hasattr(visual, 'conv1'):
        if getattr(visual, 'attn_pool', None) is not None:
            raise TypeError('open_clip towers with attentional pooling are not supported by DeCLIPViT')
        return OpenAIViTView(visual)
    raise TypeError(f'{type(visual).__name__} is not an open_clip ViT image tower')
