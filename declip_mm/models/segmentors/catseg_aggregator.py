"""CAT-Seg's cost aggregation (CVPR'24; cvlab-kaist/CAT-Seg @6d3a188 ``cat_seg/modeling/transformer/model.py``;
docs/catseg.md), the CVPR'24 design (not the 2023 one of mmseg's ``projects/CAT-Seg``).

    cost  C = cos(dense CLIP features, class text embeddings)            (B, P, T, h, w)
    embed Conv7x7(P -> 128) per class                                   (B, 128, T, h, w)
    2 x [ spatial aggregation: 2 Swin blocks per class (window 12, shift 6, 4 heads, no relative position bias;
                               q, k see [LN(x), appearance guidance], v sees LN(x) only)
          class aggregation:   linear attention over the classes per location (padded to 256 learned slots;
                               q, k see [LN(x), text guidance]; pooled 2x2 in training, 1x1 at test;
                               output x + Up(x_pool + delta), i.e. 2x + delta at 1x1, kept as the reference) ]
    decoder: ConvT + appearance guidance of CLIP block 3 -> DoubleConv; ConvT + guidance of block 7 -> DoubleConv;
             Conv3x3 -> one logit per class                            (B, T, 4h, 4w)

More than 256 classes: each image keeps its 256 most relevant classes (max cost), the others get logit -100.
Module names follow the reference's, so its checkpoints map key for key (``tools/converters/catseg_d2_to_declip.py``;
the recorded reference layout: ``tests/fixtures/reference/catseg_d2_state_dict_{b16,l14}.json``): the class
aggregation's MLP is ``MLP`` as the reference's ``ClassTransformerLayer.MLP`` (checkpoints of ours saved before the
rename, with ``attention.mlp.*``, still load: ``ClassAggregation`` renames them on load). The shifted block's
``attn_mask`` has the reference's name but is recomputed, not stored (non-persistent): the reference saves it as a
persistent buffer, and the importer checks those saved masks against ours and reports them as ignored.

Speed (the CAT-Seg profile in docs/benchmarks.md): the class aggregation queries only the T real class slots (the
padding slots are keys and values; their own outputs were dropped, so computing them, and their MLP, was waste),
projects q / k from x and the per-image text guidance separately instead of concatenating a repeated guidance
(same weights, rounding differs by about 1e-7), and ``linear_attention`` lays q / k / v out by head once instead of
three permuted einsum copies (bit for bit the same result); the MLP's ReLU runs in place.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ...registry import MODELS


def _feature_map_by_head(t: torch.Tensor) -> torch.Tensor:
    """elu(t) + 1 of t (N, L, H, D), returned as a new contiguous (N, H, L, D) tensor: the layout the batched
    products of :func:`linear_attention` read without a permuted copy each. Without autograd the elu runs in place
    on the copy; with it, only the ``+ 1`` does (elu's backward reads its input, which stays untouched)."""
    t = t.transpose(1, 2).clone(memory_format=torch.contiguous_format)
    return F.elu(t, inplace=not (torch.is_grad_enabled() and t.requires_grad)).add_(1)


def linear_attention(q, k, v, eps: float = 1e-6):
    """"Transformers are RNNs" attention, elu + 1 feature map: q (N, L, H, D), k (N, S, H, D), v (N, S, H, E)
    -> (N, L, H, E) (a transposed view of a (N, H, L, E) tensor).

    The same operations, in the same order, as the reference's three einsums (bit for bit equal to them), but each
    operand is laid out by head once, so the batched products need no permuted copies, and the feature map and the
    scalings run in place (the CAT-Seg profile in docs/benchmarks.md: elu + 1 and those copies were its biggest
    costs after the matrix products)."""
    length = v.shape[1]
    q, k = _feature_map_by_head(q), _feature_map_by_head(k)                         # (N, H, L, D), (N, H, S, D)
    v = v.transpose(1, 2).clone(memory_format=torch.contiguous_format).div_(length)   # (N, H, S, E)
    kv = torch.matmul(k.transpose(-1, -2), v)                                          # (N, H, D, E)
    z = 1 / (torch.matmul(q, k.sum(dim=2).unsqueeze(-1)) + eps)                       # (N, H, L, 1)
    return torch.matmul(q, kv).mul_(z).mul_(length).transpose(1, 2)


def shifted_window_mask(size: int, window: int, shift: int) -> torch.Tensor:
    """(windows, window^2, window^2) mask: -100 between tokens of different regions after a cyclic shift."""
    regions = torch.zeros(size, size)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        regions[rows, cols] = i
    w = regions.view(size // window, window, size // window, window).permute(0, 2, 1, 3).reshape(-1, window ** 2)
    return (w[:, None] != w[:, :, None]).float() * -100.0


class GuidedAttention(nn.Module):
    """q, k from [x, guidance], v from x, ``heads`` heads; softmax window attention (with output projection) or
    linear attention (without, as the reference's class aggregation).

    The linear kind takes a guidance shared by groups of rows (the class aggregation's text guidance is one per
    image, the same at every location) and never concatenates it: q and k are ``x @ Wx^T + (guidance @ Wg^T + b)``,
    the guidance half once per group, with ``Wx | Wg`` the two column blocks of the same ``q`` / ``k`` weights (the
    state dict is unchanged; the sums round differently from the concatenated product, by about 1e-7)."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, kind: str):
        super().__init__()
        self.heads, self.kind = heads, kind
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim) if kind == 'softmax' else nn.Identity()

    @staticmethod
    def _guided_linear(linear: nn.Linear, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """``linear(cat([x, guidance[i // r]]))`` for x (N, L, C), guidance (G, L, Cg), r = N / G, without the
        concatenation or the repeated guidance."""
        c = x.shape[-1]
        out = F.linear(x, linear.weight[:, :c])
        shared = F.linear(guidance, linear.weight[:, c:], linear.bias)
        out.view(guidance.shape[0], -1, *out.shape[1:]).add_(shared.unsqueeze(1))
        return out

    def forward(self, x, guidance, mask: Optional[torch.Tensor] = None, num_queries: Optional[int] = None):
        """x (N, L, C), guidance (N, L, Cg) -> (N, L, C).

        Linear kind: guidance (G, L, Cg) with G dividing N, each guidance row shared by N / G consecutive rows of x;
        ``num_queries``: only the first ``num_queries`` positions are queried (all L are keys and values), the
        output is (N, num_queries, C)."""
        n, length, c = x.shape
        if self.kind == 'linear':
            queries = length if num_queries is None else num_queries
            q = self._guided_linear(self.q, x[:, :queries], guidance[:, :queries])
            k = self._guided_linear(self.k, x, guidance)
            q, k, v = (t.view(n, t.shape[1], self.heads, c // self.heads) for t in (q, k, self.v(x)))
            return linear_attention(q, k, v).reshape(n, queries, c)
        xg = torch.cat([x, guidance], dim=-1)
        q, k, v = (t.view(n, length, self.heads, c // self.heads) for t in (self.q(xg), self.k(xg), self.v(x)))
        attn = torch.einsum('nlhd,nshd->nhls', q, k) * (c // self.heads) ** -0.5
        if mask is not None:                                         # (windows, L, L), windows tile the batch
            attn = attn.view(-1, mask.shape[0], self.heads, length, length) + mask[None, :, None]
            attn = attn.view(n, self.heads, length, length)
        return self.proj(torch.einsum('nhls,nshd->nlhd', attn.softmax(-1), v).reshape(n, length, c))


class SwinBlock(nn.Module):
    """A Swin block whose attention also sees the appearance guidance (rolled with x)."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, size: int, window: int, shift: int):
        super().__init__()
        self.size, self.window, self.shift = size, window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = GuidedAttention(dim, guidance_dim, heads, 'softmax')
        self.mlp = Mlp(dim, 4 * dim)
        # the reference's name; recomputed from the config, never saved (the importer checks a checkpoint's copy)
        self.register_buffer('attn_mask', shifted_window_mask(size, window, shift) if shift else None,
                             persistent=False)

    def _windows(self, x):
        n, _, _, c = x.shape
        w, s = self.window, self.size // self.window
        return x.view(n, s, w, s, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)

    def _merge(self, x, n):
        w, s = self.window, self.size // self.window
        return x.view(n, s, s, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(n, self.size, self.size, -1)

    def forward(self, x, guidance):
        """x (N, h*w, C), guidance (N, h*w, Cg) -> (N, h*w, C)."""
        n, length, c = x.shape
        z = torch.cat([self.norm1(x), guidance], dim=-1).view(n, self.size, self.size, -1)
        if self.shift:
            z = torch.roll(z, (-self.shift, -self.shift), dims=(1, 2))
        z = self._windows(z)
        out = self.attn(z[..., :c], z[..., c:], self.attn_mask)
        out = self._merge(out, n)
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), dims=(1, 2))
        x = x + out.reshape(n, length, c)
        return x + self.mlp(self.norm2(x))


class SwinAggregation(nn.Module):
    """Two guided Swin blocks (shift 0, then window / 2) over each class's map; the appearance guidance is
    layer-normalised by this layer's own ``guidance_norm`` (CAT-Seg's ``SwinTransformerBlockWrapper``)."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, size: int, window: int):
        super().__init__()
        self.block_1 = SwinBlock(dim, guidance_dim, heads, size, window, 0)
        self.block_2 = SwinBlock(dim, guidance_dim, heads, size, window, window // 2)
        self.guidance_norm = nn.LayerNorm(guidance_dim)

    def forward(self, x, guidance):
        """x (N, h*w, C), guidance (N, h*w, Cg) -> (N, h*w, C)."""
        guidance = self.guidance_norm(guidance)
        return self.block_2(self.block_1(x, guidance), guidance)


class ClassAggregation(nn.Module):
    """Linear attention across the classes at every (pooled) location, padded to ``pad_len`` class slots
    (CAT-Seg's ``ClassTransformerLayer``; its MLP is named ``MLP`` there, so here too)."""

    def __init__(self, dim: int, guidance_dim: int, heads: int, pad_len: int):
        super().__init__()
        self.pad_len = pad_len
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = GuidedAttention(dim, guidance_dim, heads, 'linear')
        self.MLP = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(inplace=True), nn.Linear(4 * dim, dim))
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.padding_guidance = nn.Parameter(torch.zeros(1, 1, guidance_dim))
        self.register_load_state_dict_pre_hook(self._rename_legacy_mlp)

    @staticmethod
    def _rename_legacy_mlp(module, state_dict, prefix, *args):
        """Our checkpoints saved before the rename to the reference's name: ``<prefix>mlp.*`` -> ``<prefix>MLP.*``
        (in place, when the new name is absent)."""
        for key in [k for k in state_dict if k.startswith(prefix + 'mlp.')]:
            new = prefix + 'MLP.' + key[len(prefix) + len('mlp.'):]
            if new not in state_dict:
                state_dict[new] = state_dict.pop(key)

    def forward(self, x, guidance, pool: Sequence[int]):
        """x (B, C, T, h, w), guidance (B, T, Cg) -> (B, C, T, h, w)."""
        b, c, t, h, w = x.shape
        pooled = F.avg_pool2d(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), tuple(pool))
        hp, wp = pooled.shape[-2:]
        seq = pooled.view(b, t, c, hp * wp).permute(0, 3, 1, 2).reshape(b * hp * wp, t, c)
        g = guidance                                   # (B, T, Cg): shared by the hp * wp locations of an image
        if t < self.pad_len:
            padded = torch.cat([seq, self.padding_tokens.expand(seq.shape[0], self.pad_len - t, c)], dim=1)
            g = torch.cat([g, self.padding_guidance.expand(b, self.pad_len - t, -1)], dim=1)
        else:
            padded = seq
        # only the T class slots are queried: the padding slots are keys and values, their own outputs were dropped
        seq = seq + self.attention(self.norm1(padded), g, num_queries=t)
        seq = seq + self.MLP(self.norm2(seq))
        out = seq.view(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        out = F.interpolate(out, size=(h, w), mode='bilinear', align_corners=True)
        return x + out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)


class AggregatorLayer(nn.Module):
    """Spatial, then class aggregation."""

    def __init__(self, dim: int, guidance_dim: int, text_guidance_dim: int, heads: int, size: int, window: int,
                 pad_len: int):
        super().__init__()
        self.swin_block = SwinAggregation(dim, guidance_dim, heads, size, window)
        self.attention = ClassAggregation(dim, text_guidance_dim, heads, pad_len)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(cout // 16, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(cout // 16, cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.double_conv(x)


class Up(nn.Module):
    """ConvT (x2) to ``cin - guidance`` channels, the class-repeated projected guidance concatenated, DoubleConv."""

    def __init__(self, cin: int, cout: int, guidance: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin - guidance, 2, stride=2)
        self.conv = DoubleConv(cin, cout)

    def forward(self, x, guidance):
        x = self.up(x)
        return self.conv(torch.cat([x, guidance.repeat_interleave(x.shape[0] // guidance.shape[0], dim=0)], dim=1))


@MODELS.register_module()
class CATSegAggregator(nn.Module):
    """CAT-Seg's head: dense CLIP features + class text embeddings + decoder guidance -> per-class logits.

    Defaults are the CVPR'24 configs' for ViT-B (``vitb_384.yaml``).

    Args:
        text_dim (int): the width of the text embeddings, the CLIP joint-space width (512 for B, 768 for L).
            Defaults to 512.
        appearance_dim (int): the width of the dense CLIP features (the joint-space width). Defaults to 512.
        prompts (int): P, the prompts per class (CAT-Seg uses one). Defaults to 1.
        hidden_dim (int): the width of the cost embedding and the aggregation layers. Defaults to 128.
        proj_dim (int): the width of the appearance and text guidance projections. Defaults to 128.
        num_layers (int): aggregation layers (spatial, then class aggregation). Defaults to 2.
        heads (int): attention heads of both aggregations. Defaults to 4.
        feature_size (int): the side of the CLIP token grid. Defaults to 24.
        window (int): the Swin window side (the shifted block shifts by half of it). Defaults to 12.
        decoder_dims (Sequence[int]): the channels of the two decoder stages. Defaults to (64, 32).
        decoder_guidance_dims (Sequence[int]): the channels of the two upsampled CLIP-block guidances.
            Defaults to (256, 128).
        decoder_guidance_proj_dims (Sequence[int]): their channels after projection. Defaults to (32, 16).
        pad_len (int): class slots of the class aggregation; above it each image keeps its ``pad_len`` most
            relevant classes (0 = no padding, no selection). Defaults to 256.
    """

    def __init__(self, text_dim: int = 512, appearance_dim: int = 512, prompts: int = 1, hidden_dim: int = 128,
                 proj_dim: int = 128, num_layers: int = 2, heads: int = 4, feature_size: int = 24, window: int = 12,
                 decoder_dims: Sequence[int] = (64, 32), decoder_guidance_dims: Sequence[int] = (256, 128),
                 decoder_guidance_proj_dims: Sequence[int] = (32, 16), pad_len: int = 256):
        super().__init__()
        self.pad_len, self.feature_size = pad_len, feature_size
        self.conv1 = nn.Conv2d(prompts, hidden_dim, 7, padding=3)
        self.guidance_projection = nn.Sequential(nn.Conv2d(appearance_dim, proj_dim, 3, padding=1), nn.ReLU())
        self.text_guidance_projection = nn.Sequential(nn.Linear(text_dim, proj_dim), nn.ReLU())
        self.layers = nn.ModuleList(AggregatorLayer(hidden_dim, proj_dim, proj_dim, heads, feature_size, window, pad_len)
                                    for _ in range(num_layers))
        self.decoder_guidance_projection = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
            for cin, cout in zip(decoder_guidance_dims, decoder_guidance_proj_dims))
        self.decoder1 = Up(hidden_dim, decoder_dims[0], decoder_guidance_proj_dims[0])
        self.decoder2 = Up(decoder_dims[0], decoder_dims[1], decoder_guidance_proj_dims[1])
        self.head = nn.Conv2d(decoder_dims[1], 1, 3, padding=1)

    def select_classes(self, cost: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, pad_len) indices of each image's most relevant classes (max cost over prompts and pixels), or None
        when there are at most ``pad_len`` classes."""
        if self.pad_len <= 0 or cost.shape[2] <= self.pad_len:
            return None
        return cost.transpose(1, 2).flatten(2).max(dim=-1).values.topk(self.pad_len, dim=-1, sorted=False).indices

    def forward(self, dense: torch.Tensor, text: torch.Tensor, guidance: List[torch.Tensor],
                pool: Sequence[int] = (2, 2)) -> torch.Tensor:
        """dense (B, D, h, w); text (B, T, P, D); guidance: the two decoder guidances (B, 256, 2h, 2w),
        (B, 128, 4h, 4w); pool: the class-aggregation pooling ((2, 2) training, (1, 1) test).
        Returns logits (B, T, 4h, 4w)."""
        b, num_classes = text.shape[:2]
        dense, text = F.normalize(dense, dim=1), F.normalize(text, dim=-1)
        cost = torch.einsum('bchw,btpc->bpthw', dense, text)
        chosen = self.select_classes(cost)
        if chosen is not None:
            text = text.gather(1, chosen[:, :, None, None].expand(-1, -1, *text.shape[2:]))
            cost = torch.einsum('bchw,btpc->bpthw', dense, text)
        t, (h, w) = text.shape[1], cost.shape[-2:]
        x = self.conv1(cost.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w))
        x = x.view(b, t, -1, h, w).permute(0, 2, 1, 3, 4)                                      # (B, C, T, h, w)
        appearance = self.guidance_projection(dense).flatten(2).transpose(1, 2)               # (B, hw, Cg)
        appearance = appearance.repeat_interleave(t, dim=0)
        text_guidance = self.text_guidance_projection(F.normalize(text.mean(dim=2), dim=-1))   # (B, T, Cg)
        for layer in self.layers:
            c = x.shape[1]
            seq = layer.swin_block(x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c), appearance)
            x = layer.attention(seq.view(b, t, h, w, c).permute(0, 4, 1, 2, 3), text_guidance, pool)
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w)
        y = self.decoder1(y, self.decoder_guidance_projection[0](guidance[0]))
        y = self.decoder2(y, self.decoder_guidance_projection[1](guidance[1]))
        logits = self.head(y).view(b, t, *y.shape[-2:])
        if chosen is None:
            return logits
        out = logits.new_full((b, num_classes, *logits.shape[-2:]), -100.0)
        return out.scatter(1, chosen[:, :, None, None].expand_as(logits), logits)
