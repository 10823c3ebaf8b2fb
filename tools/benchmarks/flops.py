"""FLOP counts of the benchmarked workflows: a formula read off the model, and torch's counter as the check.

Only matrix-class operations are counted (matrix products, convolutions, attention's two products), each
multiply-add as 2 FLOP, as ``torch.utils.flop_counter`` does; norms, softmax, GELU, RoPE, resizing are not.

**ViT formula** (:func:`vit_flops`), for an image of h x w pixels, patch p, width C, ``N = 1 + (h/p)(w/p)``
tokens, ``P = N - 1`` patch tokens, batch B:

    F = B * [ 2 P (3 p^2) C                                   patch embedding (a stride-p convolution)
            + sum over blocks 0..L-2 of (2 N W_b + 4 N^2 C)   W_b: weights of the block's matrices
                                                              (q, k, v, output projection, MLP; read off the
                                                              model as the 2-D parameters), 4 N^2 C: q k^T
                                                              and A v over all heads
            + 2 N W_last + a 4 N^2 C                          last block in the mode: W_last = q, k, v and
                                                              output projection (+ MLP for 'vanilla' and
                                                              'maskclip'); a = 2 for 'csa', 1 for 'qq' / 'kk'
                                                              / 'vanilla', 0 for 'maskclip'
            + 2 P W_head ]                                    per-token head (LN_post + projection) on patches

**Protocols**: training-free segmentation (:func:`training_free_flops`) = the ViT on every window of the slide
grid + the cosine with the S text queries (2 P D S per window); region classification
(:func:`region_flops`) = the ViT on the padded image + region x class logits (2 R D K); feature export = the ViT
on the padded image. F-ViT, CAT-Seg and distillation are counted with :func:`flop_counter` on their warm-up
pass only (their heads, teachers and backward passes have no formula here).

**The counter.** :func:`flop_counter` is ``FlopCounterMode`` plus formulas for three kernels torch 2.14's
registry leaves out on the CPU: ``_scaled_dot_product_flash_attention_for_cpu`` (and its backward), which CPU
SDPA runs, and ``_native_multi_head_attention``, the fused path of ``nn.MultiheadAttention`` at inference
(OpenAI-style towers). Without them a CPU count misses every attention product (and, in OpenAI towers, the
q/k/v and output projections). tests/tools/test_benchmarks.py checks the formula against this counter on the tiny
presets, exactly.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs):
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _native_mha(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, *args, out_shape=None,
                **kwargs):
    """nn.MultiheadAttention's fused inference path: q/k/v projection, attention, output projection."""
    b, n, c = query
    d = c // num_heads
    return 2 * b * n * c * qkv_weight[0] + sdpa_flop_count((b, num_heads, n, d), (b, num_heads, n, d),
                                                           (b, num_heads, n, d)) + 2 * b * n * c * proj_weight[0]


def _extra_formulas():
    extra = {}
    for name, fn in (('_scaled_dot_product_flash_attention_for_cpu', _sdpa_cpu),
                     ('_scaled_dot_product_flash_attention_for_cpu_backward', _sdpa_cpu_backward),
                     ('_native_multi_head_attention', _native_mha)):
        op = getattr(aten, name, None)
        if op is not None:
            extra[op] = fn
    return extra


def flop_counter() -> FlopCounterMode:
    """torch's FlopCounterMode (no display) that also counts CPU SDPA and fused nn.MultiheadAttention."""
    return FlopCounterMode(display=False, custom_mapping=_extra_formulas())


def counted_flops(fn, *args, **kwargs) -> Tuple[int, object]:
    """(FLOPs torch counts while running ``fn(*args, **kwargs)``, its result)."""
    with flop_counter() as counter:
        out = fn(*args, **kwargs)
    return counter.get_total_flops(), out


# ----------------------------------------------------------------------------------------------- formula
def _matrix_weights(module: torch.nn.Module) -> int:
    """Elements of the 2-D parameters (the weight matrices) of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.dim() == 2)


def _head_weights(backbone) -> int:
    view = backbone.view
    if backbone.family == 'eva':
        t = view.trunk
        return _matrix_weights(t.head) + _matrix_weights(view.visual.head)
    return view.visual.proj.numel()


def _last_block_weights(backbone, mode: str) -> int:
    block = backbone.view.blocks[-1]
    if mode in ('vanilla', 'maskclip'):
        return _matrix_weights(block)
    unused = sum(p.numel() for p in backbone.view.unused_in_decoupled_block(block) if p.dim() == 2)
    return _matrix_weights(block) - unused


ATTENTIONS = dict(csa=2, qq=1, kk=1, vanilla=1, maskclip=0)


def vit_flops(backbone, h: int, w: int, mode: Optional[str] = None, batch: int = 1) -> int:
    """FLOPs of ``backbone.extract_dense`` / ``forward_features`` on a (batch, 3, h, w) input (module doc)."""
    p, c = backbone.patch_size, backbone.width
    mode = mode or backbone.mode
    patches = (h // p) * (w // p)
    n = patches + 1
    embed = 2 * patches * 3 * p * p * c
    blocks = sum(2 * n * _matrix_weights(b) + 4 * n * n * c for b in backbone.view.blocks[:-1])
    last = 2 * n * _last_block_weights(backbone, mode) + ATTENTIONS[mode] * 4 * n * n * c
    head = 2 * patches * _head_weights(backbone)
    return batch * (embed + blocks + last + head)


def window_grid(h: int, w: int, crop_size, stride) -> Sequence[Tuple[int, int, int, int]]:
    from declip_mm.models.segmentors.training_free import slide_windows
    return slide_windows(h, w, tuple(crop_size), tuple(stride))


def training_free_flops(model, h: int, w: int) -> int:
    """One (h, w) network input through ``TrainingFreeSegmentor.slide_inference`` (and the authors' loop, which
    does the same products): per window the ViT on the patch-padded window and the query cosines."""
    p = model.backbone.patch_size
    total = 0
    for y1, y2, x1, x2 in window_grid(h, w, model.test_cfg.crop_size, model.test_cfg.stride):
        wh, ww = math.ceil((y2 - y1) / p) * p, math.ceil((x2 - x1) / p) * p
        total += vit_flops(model.backbone, wh, ww, model.mode) + cosine_flops(model, wh // p * (ww // p))
    return total


def cosine_flops(model, tokens: int) -> int:
    """Cosines of ``tokens`` dense features with every text query: 2 x tokens x D x S."""
    queries = model.text_embeddings
    return 2 * tokens * queries.shape[1] * queries.shape[0]


def region_flops(classifier, h: int, w: int, regions: int) -> int:
    """RegionClassifier on an (h, w) input: the ViT on the patch-padded input, then R x K logits."""
    p = classifier.backbone.patch_size
    hp, wp = math.ceil(h / p) * p, math.ceil(w / p) * p
    emb = classifier.class_embeddings.embeddings
    return vit_flops(classifier.backbone, hp, wp, classifier.mode) + 2 * regions * emb.shape[1] * emb.shape[0]
