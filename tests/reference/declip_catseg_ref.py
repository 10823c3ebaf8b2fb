"""Independent reference for the authors' DeCLIP_CATSeg branch: the CLIP fine-tuning rule, the EVA dense
features fed to the cost volume, the guidance taps, the B/16 and L/14-336 configs and the test protocol.

Written from a reading of the public code (no code copied); torch only. Nothing here imports the package under
test, and the author of this module had not read declip_mm's CAT-Seg code when writing it.

Sources read (exact revisions)
------------------------------
[DB]  github.com/xiaomoguhz/DeCLIP, branch DeCLIP_CATSeg @ 06262d4930583d3cd2b42aa30535eb586c51afee
      - cat_seg/cat_seg_model.py          CATSeg.__init__ (clip_resolution, proj_dim, layer_indexes, hooks),
                                          CATSeg.forward (train path), inference_sliding_window, frozen_backbone
      - cat_seg/modeling/heads/cat_seg_head.py   CATSegHead.forward (no [:, 1:] slice for EVA)
      - cat_seg/modeling/transformer/cat_seg_predictor.py   eva_clip.create_model(...), prompt templates,
                                          get_text_embeds (first synonym, L2 norm, token cache, eval cache)
      - cat_seg/src/open_clip/eva_clip/eva_vit_model.py   Attention.forward / ss_attn, Block.forward /
                                          forward_without_rcffn, EVAVisionTransformer.encode_dense /
                                          rescale_positional_embedding
      - cat_seg/src/open_clip/eva_clip/model.py   CustomCLIP (text tower frozen in __init__, text.train(False),
                                          encode_dense -> F.normalize), _build_vision_tower / _build_text_tower
      - cat_seg/config.py                 add_cat_seg_config (CLIP_PIXEL_MEAN/STD, CACHE_DIR, CLIP_MULTIPLIER)
      - configs/eva_vitb_384.yaml, configs/eva_vitl_336.yaml
      - train_net.py                      Trainer.build_optimizer (lr / weight-decay groups, full-model clipping)
[DM]  github.com/xiaomoguhz/DeCLIP main @ 2c0b3decc89fc4072651a1fc832ca3be49e2dd76, for the files the branch
      carries under cat_seg/src/open_clip/eva_clip/ that the code index does not store as text (only their .pyc
      is listed at 06262d4; assumed unchanged): rope.py (VisionRotaryEmbeddingFast.recalculate),
      transformer.py (ResidualAttentionBlock / Attention: text `attn.in_proj_weight`), factory.py
      (load_checkpoint strict=False), model_configs/EVA02-CLIP-B-16.json, EVA02-CLIP-L-14-336.json.
[CS]  github.com/cvlab-kaist/CAT-Seg @ 6d3a188 (base): configs/config.yaml (_BASE_ of the branch yamls; the
      branch's copy is not stored as text and is assumed identical), eval.sh, cat_seg/cat_seg_model.py
      (inference_sliding_window, the OpenAI fine-tuning rule), cat_seg/third_party/model_vpt.py (OpenAI
      parameter names: q/k/v_proj_weight split out of nn.MultiheadAttention).
[D2]  detectron2 sem_seg_postprocess (crop to img_size, bilinear align_corners=False to the original size).

Function / data -> source map
-----------------------------
EVA_CLIP_PARAM_PATTERNS, OPENAI_CLIP_PARAM_PATTERNS, clip_parameter_names   [DB] eva_vit_model.py + model.py,
                                          [DM] transformer.py; [CS] third_party/model_vpt.py
trainable                                 [DB] cat_seg_model.py CATSeg.frozen_backbone; [CS] cat_seg_model.py
lr_multiplier, weight_decay               [DB] train_net.py Trainer.build_optimizer
lr_at                                     [CS] configs/config.yaml (WarmupCosineLR, WARMUP_ITERS 0), detectron2
rope_cos_sin                              [DM] rope.py VisionRotaryEmbeddingFast (__init__ / recalculate)
resize_pos_embed                          [DB] eva_vit_model.py rescale_positional_embedding
eva_block                                 [DB] eva_vit_model.py Block.forward + Attention.forward (subln, rope)
csa_attention, last_block_dense           [DB] eva_vit_model.py Attention.ss_attn + Block.forward_without_rcffn
dense_features                            [DB] eva_vit_model.py encode_dense + model.py CustomCLIP.encode_dense
eva_encode_dense                          [DB] encode_dense as a whole (all blocks) + CATSeg.__init__ hooks
guidance_maps                             [DB] cat_seg_model.py CATSeg.forward (res4/res5 from hooks)
class_prompts                             [DB] cat_seg_predictor.py get_text_embeds
clip_input                                [DB] cat_seg_model.py CATSeg.forward (train) / inference_sliding_window
sliding_window_inference                  [DB] = [CS] inference_sliding_window; [D2] sem_seg_postprocess
CONFIGS                                   [DB] configs/eva_vit*.yaml + [CS] configs/config.yaml + [DB] code
"""
import math

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------------------
# a) Parameter names of the reference models and the fine-tuning rule
# --------------------------------------------------------------------------------------------------------------

# Every parameter of the authors' EVA CustomCLIP (EVA02-CLIP-B-16 / -L-14-336 configs: subln=True, qkv_bias=True,
# naiveswiglu=True, rope=True (a buffer, no parameter), use_rel_pos_bias=False, ls_init_value=None (no gamma_1/2)).
# `{i}` is a vision block index, `{j}` a text block index. The text attention is either eva_clip's Attention
# (B-16: text xattn=true) or nn.MultiheadAttention (L-14-336: xattn=false); both expose the same four names.
EVA_CLIP_PARAM_PATTERNS = (
    'visual.cls_token',
    'visual.pos_embed',
    'visual.patch_embed.proj.weight',
    'visual.patch_embed.proj.bias',
    'visual.blocks.{i}.norm1.weight',
    'visual.blocks.{i}.norm1.bias',
    'visual.blocks.{i}.attn.q_bias',
    'visual.blocks.{i}.attn.v_bias',
    'visual.blocks.{i}.attn.q_proj.weight',
    'visual.blocks.{i}.attn.k_proj.weight',
    'visual.blocks.{i}.attn.v_proj.weight',
    'visual.blocks.{i}.attn.inner_attn_ln.weight',
    'visual.blocks.{i}.attn.inner_attn_ln.bias',
    'visual.blocks.{i}.attn.proj.weight',
    'visual.blocks.{i}.attn.proj.bias',
    'visual.blocks.{i}.norm2.weight',
    'visual.blocks.{i}.norm2.bias',
    'visual.blocks.{i}.mlp.w1.weight',
    'visual.blocks.{i}.mlp.w1.bias',
    'visual.blocks.{i}.mlp.w2.weight',
    'visual.blocks.{i}.mlp.w2.bias',
    'visual.blocks.{i}.mlp.ffn_ln.weight',
    'visual.blocks.{i}.mlp.ffn_ln.bias',
    'visual.blocks.{i}.mlp.w3.weight',
    'visual.blocks.{i}.mlp.w3.bias',
    'visual.norm.weight',
    'visual.norm.bias',
    'visual.head.weight',
    'visual.head.bias',
    'text.positional_embedding',
    'text.text_projection',
    'text.token_embedding.weight',
    'text.transformer.resblocks.{j}.ln_1.weight',
    'text.transformer.resblocks.{j}.ln_1.bias',
    'text.transformer.resblocks.{j}.attn.in_proj_weight',
    'text.transformer.resblocks.{j}.attn.in_proj_bias',
    'text.transformer.resblocks.{j}.attn.out_proj.weight',
    'text.transformer.resblocks.{j}.attn.out_proj.bias',
    'text.transformer.resblocks.{j}.ln_2.weight',
    'text.transformer.resblocks.{j}.ln_2.bias',
    'text.transformer.resblocks.{j}.mlp.c_fc.weight',
    'text.transformer.resblocks.{j}.mlp.c_fc.bias',
    'text.transformer.resblocks.{j}.mlp.c_proj.weight',
    'text.transformer.resblocks.{j}.mlp.c_proj.bias',
    'text.ln_final.weight',
    'text.ln_final.bias',
    'logit_scale',
)

# Every parameter of CAT-Seg's OpenAI CLIP (cat_seg/third_party/model_vpt.py, PROMPT_LENGTH 0 so no prompt_tokens).
# model_vpt's Attention splits nn.MultiheadAttention's in_proj_weight into q/k/v_proj_weight (in_proj_weight=None).
_OPENAI_BLOCK = ('attn.q_proj_weight', 'attn.k_proj_weight', 'attn.v_proj_weight', 'attn.in_proj_bias',
                 'attn.out_proj.weight', 'attn.out_proj.bias', 'ln_1.weight', 'ln_1.bias',
                 'mlp.c_fc.weight', 'mlp.c_fc.bias', 'mlp.c_proj.weight', 'mlp.c_proj.bias',
                 'ln_2.weight', 'ln_2.bias')
OPENAI_CLIP_PARAM_PATTERNS = (
    'positional_embedding', 'text_projection', 'logit_scale', 'token_embedding.weight',
    'ln_final.weight', 'ln_final.bias',
    'visual.class_embedding', 'visual.positional_embedding', 'visual.proj', 'visual.conv1.weight',
    'visual.ln_pre.weight', 'visual.ln_pre.bias', 'visual.ln_post.weight', 'visual.ln_post.bias',
) + tuple('transformer.resblocks.{j}.' + p for p in _OPENAI_BLOCK) \
  + tuple('visual.transformer.resblocks.{i}.' + p for p in _OPENAI_BLOCK)


def clip_parameter_names(model_family: str, vision_depth: int, text_depth: int) -> list:
    """All parameter names of the reference CLIP (as `clip_model.named_parameters()` yields them, order aside).

    model_family: 'eva' (DeCLIP branch, EVA CustomCLIP) or 'openai' (CAT-Seg model_vpt CLIP).
    """
    patterns = {'eva': EVA_CLIP_PARAM_PATTERNS, 'openai': OPENAI_CLIP_PARAM_PATTERNS}[model_family]
    names = []
    for p in patterns:
        if '{i}' in p:
            names += [p.format(i=i) for i in range(vision_depth)]
        elif '{j}' in p:
            names += [p.format(j=j) for j in range(text_depth)]
        else:
            names.append(p)
    return names


def trainable(name: str, model_family: str, clip_finetune: str = 'attention') -> bool:
    """Whether CLIP parameter `name` (relative to `predictor.clip_model`) has requires_grad after
    CATSeg.frozen_backbone ([DB] cat_seg_model.py @06262d4).

    EVA (any CLIP_PRETRAINED containing 'eva'; CLIP_FINETUNE is ignored):
      'visual.blocks' in name: train iff 'attn' in name and ('q_proj' in name or 'v_proj' in name)
        -> attn.q_proj.weight, attn.v_proj.weight of every vision block (q_bias / v_bias / k / proj frozen);
      'text.transformer' in name: train iff 'resblocks' in name and 'in_proj_weight' in name
        -> the whole packed q,k,v in-projection of every text block (in_proj_bias frozen);
      everything else frozen.
    OpenAI ([CS] cat_seg_model.py @6d3a188, same rule in [DB]): only names containing 'transformer' can train;
      'attention': 'attn' in name -> q_proj / v_proj only; elif 'position' in name -> train (matches no
      parameter: positional embeddings are not under '...transformer...'); 'full': all; 'prompt': 'prompt'.
    """
    if model_family == 'eva':
        if 'visual.blocks' in name:
            return 'attn' in name and ('q_proj' in name or 'v_proj' in name)
        if 'text.transformer' in name:
            return 'resblocks' in name and 'in_proj_weight' in name
        return False
    if model_family == 'openai':
        if 'transformer' not in name:
            return False
        if clip_finetune == 'prompt':
            return 'prompt' in name
        if clip_finetune == 'attention':
            if 'attn' in name:
                return 'q_proj' in name or 'v_proj' in name
            return 'position' in name
        return clip_finetune == 'full'
    raise ValueError(f'model_family must be "eva" or "openai", got {model_family!r}')


CLIP_MULTIPLIER = 0.01  # SOLVER.CLIP_MULTIPLIER in both yamls
BASE_LR = 2e-4
WEIGHT_DECAY = 1e-4          # [CS] configs/config.yaml SOLVER.WEIGHT_DECAY
WEIGHT_DECAY_NORM = 0.0      # detectron2 default SOLVER.WEIGHT_DECAY_NORM (not set by any yaml)
WEIGHT_DECAY_EMBED = 0.0     # cat_seg/config.py


def lr_multiplier(module_name: str) -> float:
    """lr factor of a trainable parameter owned by module `module_name` (full dotted name in the CATSeg model).

    [DB] train_net.py build_optimizer: x BACKBONE_MULTIPLIER (0.0) if 'backbone' in the module name (no such module:
    CATSeg.backbone is None), x CLIP_MULTIPLIER if 'clip_model' in the module name. So CLIP q/v (and text in_proj)
    get 2e-6; the aggregator, decoder and the two guidance ConvTs (CATSeg.upsample1/2) get the base lr.
    """
    factor = 1.0
    if 'backbone' in module_name:
        factor *= 0.0
    if 'clip_model' in module_name:
        factor *= CLIP_MULTIPLIER
    return factor


def weight_decay(module_type: str, param_name: str = '') -> float:
    """Weight decay of a parameter by its owning module's class name ([DB] train_net.py build_optimizer).

    Norm modules (BatchNorm*, SyncBatchNorm, GroupNorm, InstanceNorm*, LayerNorm, LocalResponseNorm) -> 0.0;
    nn.Embedding -> 0.0; 'relative_position_bias_table' / 'absolute_pos_embed' -> 0.0; everything else (biases
    included) -> 1e-4.
    """
    if 'relative_position_bias_table' in param_name or 'absolute_pos_embed' in param_name:
        return 0.0
    if module_type in ('BatchNorm1d', 'BatchNorm2d', 'BatchNorm3d', 'SyncBatchNorm', 'GroupNorm',
                       'InstanceNorm1d', 'InstanceNorm2d', 'InstanceNorm3d', 'LayerNorm', 'LocalResponseNorm'):
        return WEIGHT_DECAY_NORM
    if module_type == 'Embedding':
        return WEIGHT_DECAY_EMBED
    return WEIGHT_DECAY


GRAD_CLIP = dict(type='full_model', max_norm=0.01, norm_type=2.0)  # clip_grad_norm_ over all trainable params


def lr_at(iteration: int, base_lr: float = BASE_LR, max_iter: int = 80000) -> float:
    """detectron2 WarmupCosineLR with WARMUP_ITERS 0 and BASE_LR_END 0 ([CS] configs/config.yaml; d2
    build_lr_scheduler -> CosineParamScheduler(1, 0)): base_lr * (1 + cos(pi * t / max_iter)) / 2."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * iteration / max_iter))

# --------------------------------------------------------------------------------------------------------------
# b) EVA dense features (encode_dense(normalize=True, keep_shape=False, mode='csa'))
# --------------------------------------------------------------------------------------------------------------


def rope_cos_sin(grid: int, head_dim: int, pt_seq_len: int = 16, theta: float = 10000.0):
    """EVA's 2-D RoPE tables for a grid x grid token map: (grid*grid, head_dim) cos and sin.

    [DM] rope.py VisionRotaryEmbeddingFast(dim=head_dim//2, pt_seq_len, ft_seq_len): positions are
    t = arange(grid) / grid * pt_seq_len (the table is RE-COMPUTED for a new grid by `recalculate`, not
    interpolated); per axis freqs 1/theta^(2k/dim), k < dim/2, each repeated twice (interleaved pairs); the
    first head_dim/2 channels rotate with the row index, the last head_dim/2 with the column index.
    """
    dim = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    t = torch.arange(grid).float() / grid * pt_seq_len
    f = torch.einsum('t,f->tf', t, freqs).repeat_interleave(2, dim=-1)                    # (grid, dim)
    table = torch.cat([f[:, None, :].expand(grid, grid, dim), f[None, :, :].expand(grid, grid, dim)], dim=-1)
    table = table.reshape(grid * grid, head_dim)
    return table.cos(), table.sin()


def _rotate_pairs(x):
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...) on the last axis ([DM] rope.py rotate_half)."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(x.shape)


def apply_rope(x, cos, sin):
    """x: (B, heads, N_patches, head_dim); cos/sin: (N_patches, head_dim)."""
    return x * cos + _rotate_pairs(x) * sin


def resize_pos_embed(pos_embed, grid: int):
    """pos_embed (1, 1+g0*g0, D) -> (1, 1+grid*grid, D): CLS kept, patch part bicubic (align_corners=False)
    ([DB] eva_vit_model.py rescale_positional_embedding; identity when the grid is unchanged)."""
    g0 = int(round(math.sqrt(pos_embed.shape[1] - 1)))
    if g0 == grid:
        return pos_embed
    d = pos_embed.shape[2]
    patch = pos_embed[0, 1:].T.reshape(1, d, g0, g0)
    patch = F.interpolate(patch, (grid, grid), mode='bicubic', align_corners=False).reshape(d, grid * grid).T
    return torch.cat([pos_embed[:, :1], patch[None]], dim=1)


def _ln(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + '.weight'], sd[prefix + '.bias'], eps)


def _qkv(y, sd, p, num_heads):
    """q, k, v (B, heads, N, hd) of the subln EVA attention: q,v with q_bias/v_bias, k without bias."""
    b, n, _ = y.shape
    q = F.linear(y, sd[p + 'attn.q_proj.weight'], sd.get(p + 'attn.q_bias'))
    k = F.linear(y, sd[p + 'attn.k_proj.weight'])
    v = F.linear(y, sd[p + 'attn.v_proj.weight'], sd.get(p + 'attn.v_bias'))
    return [t.reshape(b, n, num_heads, -1).transpose(1, 2) for t in (q, k, v)]


def eva_block(x, sd, idx: int, num_heads: int, rope, eps: float = 1e-6):
    """One ordinary EVA02 block ([DB] Block.forward, postnorm False, no layer scale):
    x + attn(norm1(x)); then + SwiGLU(norm2(x)). Attention: RoPE on the patch tokens of q and k (CLS untouched),
    softmax(q k^T / sqrt(hd)) v, inner_attn_ln, proj. SwiGLU: w3(ffn_ln(silu(w1 x) * w2 x)).

    x: (B, 1+N, D); sd: authors'-layout state dict of `visual` (keys 'blocks.{i}....'); rope: (cos, sin) or None.
    """
    p = f'blocks.{idx}.'
    y = _ln(x, sd, p + 'norm1', eps)
    q, k, v = _qkv(y, sd, p, num_heads)
    if rope is not None:
        cos, sin = rope
        q = torch.cat([q[:, :, :1], apply_rope(q[:, :, 1:], cos, sin)], dim=2)
        k = torch.cat([k[:, :, :1], apply_rope(k[:, :, 1:], cos, sin)], dim=2)
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    out = _ln(out, sd, p + 'attn.inner_attn_ln', eps)
    x = x + F.linear(out, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
    y = _ln(x, sd, p + 'norm2', eps)
    hidden = F.silu(F.linear(y, sd[p + 'mlp.w1.weight'], sd[p + 'mlp.w1.bias'])) \
        * F.linear(y, sd[p + 'mlp.w2.weight'], sd[p + 'mlp.w2.bias'])
    hidden = _ln(hidden, sd, p + 'mlp.ffn_ln', eps)
    return x + F.linear(hidden, sd[p + 'mlp.w3.weight'], sd[p + 'mlp.w3.bias'])


def csa_attention(q, k, v, mode: str = 'csa', scale: float = 1.0):
    """The branch's self-self attention (Attention.ss_attn) on per-head tensors (B, heads, N, hd).

    'csa': softmax(s q q^T) + softmax(s k k^T)   (a SUM of the two softmaxes, rows sum to 2, not a mean)
    'qq': softmax(s q q^T);  'kk': softmax(s k k^T);  'vv': softmax(s v v^T)
    The branch uses s = 1 (the `# self.scale` factors are commented out) and no RoPE on q/k.
    All N tokens, CLS included, attend and are attended. Returns (B, N, heads*hd), heads concatenated.
    """
    def sm(a):
        return torch.softmax(scale * (a @ a.transpose(-2, -1)), dim=-1)
    if mode == 'csa':
        w = sm(q) + sm(k)
    elif mode == 'qq':
        w = sm(q)
    elif mode == 'kk':
        w = sm(k)
    elif mode == 'vv':
        w = sm(v)
    else:
        raise ValueError(f'mode must be csa/qq/kk/vv, got {mode!r}')
    out = w @ v
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def last_block_dense(x, sd, idx: int, num_heads: int, mode: str = 'csa', scale: float = 1.0, eps: float = 1e-6):
    """The last block as encode_dense runs it ([DB] Block.forward_without_rcffn):
    ss_attn(norm1(x)) -> inner_attn_ln -> proj. NO residual (neither x nor the CLS token is added) and NO MLP.

    x: (B, 1+N, D) input of the last block -> (B, 1+N, D) (CLS still in slot 0).
    """
    p = f'blocks.{idx}.'
    y = _ln(x, sd, p + 'norm1', eps)
    q, k, v = _qkv(y, sd, p, num_heads)
    out = csa_attention(q, k, v, mode=mode, scale=scale)
    out = _ln(out, sd, p + 'attn.inner_attn_ln', eps)
    return F.linear(out, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])


def dense_features(last_block_out, sd, eps: float = 1e-6):
    """(B, 1+N, D) last-block output -> (B, N, C): drop CLS, `visual.norm`, `visual.head` (Linear with bias),
    L2-normalise over C ([DB] encode_dense + CustomCLIP.encode_dense(normalize=True, keep_shape=False))."""
    x = _ln(last_block_out[:, 1:], sd, 'norm', eps)
    x = F.linear(x, sd['head.weight'], sd['head.bias'])
    return F.normalize(x, dim=-1)


def eva_encode_dense(image, sd, num_heads: int, patch_size: int, pt_seq_len: int = 16,
                     guidance_layers=(), mode: str = 'csa', scale: float = 1.0, eps: float = 1e-6):
    """The whole EVA dense path of the branch on a CLIP-normalised image (B, 3, H, W) at the CLIP resolution.

    patch embed (conv) -> [CLS] + patches -> + pos_embed (bicubic-resized when the grid changes) -> blocks
    0..L-2 as `eva_block` (RoPE recomputed for the grid) -> `last_block_dense` -> `dense_features`.
    Returns (features (B, N, C) L2-normed, {l: output of block l (B, 1+N, D)} for l in guidance_layers): the
    forward hooks of CATSeg.__init__ capture the ordinary block output (residual + MLP included); a hook on the
    last block would see the `forward_without_rcffn` output instead, but the B/L layer indexes never hit it.
    """
    x = F.conv2d(image, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=patch_size)
    b, d, gh, gw = x.shape
    if gh != gw:
        raise ValueError(f'eva_encode_dense: square token grid expected, got {gh}x{gw}')
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd['cls_token'].expand(b, -1, -1), x], dim=1) + resize_pos_embed(sd['pos_embed'], gh)
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    head_dim = d // num_heads
    rope = rope_cos_sin(gh, head_dim, pt_seq_len)
    taps = {}
    for i in range(depth - 1):
        x = eva_block(x, sd, i, num_heads, rope, eps)
        if i in guidance_layers:
            taps[i] = x
    x = last_block_dense(x, sd, depth - 1, num_heads, mode=mode, scale=scale, eps=eps)
    return dense_features(x, sd, eps), taps


def guidance_maps(block_output, grid: int = 24):
    """A hooked block output (B, 1+N, W) -> (B, W, grid, grid): CLS dropped, raw residual stream (no norm, no
    proj), row-major ([DB] CATSeg.forward: rearrange(layers[i][:, 1:, :], 'B (H W) C -> B C H W', H=24)).
    res4 = ConvT(W->256, k2, s2)(map of layer_indexes[0]); res5 = ConvT(W->128, k4, s4)(map of layer_indexes[1])."""
    b, n, w = block_output.shape
    if n - 1 != grid * grid:
        raise ValueError(f'guidance_maps: {n - 1} patch tokens is not {grid}x{grid}')
    return block_output[:, 1:].transpose(1, 2).reshape(b, w, grid, grid)


# --------------------------------------------------------------------------------------------------------------
# c) Text prompts, CLIP input, configs
# --------------------------------------------------------------------------------------------------------------

PROMPT_TEMPLATE = 'A photo of a {} in the scene'  # PROMPT_ENSEMBLE_TYPE "single" (no period)


def class_prompts(class_names):
    """One prompt per class, the first ', '-separated synonym only ([DB] get_text_embeds). The text features are
    encode_text(tokens) L2-normalised, shape (K, 1, C), recomputed every training step through the partly
    trainable text tower (tokens cached once), computed once and cached at eval."""
    return [PROMPT_TEMPLATE.format(n.split(', ')[0] if ', ' in n else n) for n in class_names]


CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)  # on 0..255 RGB ([DB] cat_seg/config.py)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.3231630)


def clip_input(images, clip_resolution: int):
    """(B, 3, h, w) RGB 0..255 crops -> CLIP input: (x - mean) / std, then bilinear (align_corners=False) to
    clip_resolution^2. The L/14-336 model trains on 384 crops resized here to 336 ([DB] CATSeg.forward)."""
    mean = torch.tensor(CLIP_PIXEL_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_PIXEL_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    x = (images - mean) / std
    return F.interpolate(x, size=(clip_resolution, clip_resolution), mode='bilinear', align_corners=False)


_COMMON = dict(
    train_crop=384,                 # INPUT.CROP.SIZE (384, 384), absolute
    train_min_size=384,             # INPUT.MIN_SIZE_TRAIN (384,), "choice"; max 1333 (d2 default)
    single_category_max_area=1.0,   # [CS] config.yaml
    color_aug_ssd=True,             # [CS] config.yaml
    random_flip='horizontal',       # d2 default, p 0.5
    size_divisibility=384,          # INPUT.SIZE_DIVISIBILITY: the train mapper pads bottom/right to 384
    pad_value_image=128, pad_value_seg=255,   # ([CS] mask_former_semantic_dataset_mapper.py)
    test_min_size=640, test_max_size=2560,
    test_sliding_window=True, sliding_kernel=384, sliding_overlap=0.333, sliding_out_res=640,
    pooling_sizes_train=(2, 2), pooling_sizes_test=(1, 1),
    feature_resolution=(24, 24), window_size=12, num_layers=2, num_heads=4, hidden_dim=128,
    decoder_dims=(64, 32), decoder_guidance_dims=(256, 128), decoder_guidance_proj_dims=(32, 16),
    text_guidance_proj_dim=128, appearance_guidance_proj_dim=128, attention_type='linear',
    pad_len=256, prompt_channels=1,  # [CS] model.py Aggregator defaults (no yaml sets pad_len); P = 1 template
    prompt_template=PROMPT_TEMPLATE, prompt_ensemble='single', first_synonym_only=True,
    text_features='L2-normalised encode_text, recomputed each step, (K,1,C) repeated over the batch',
    dense_mode='csa', attn_scale=1.0, dense_l2_normalised=True, drop_cls_in_head=False,
    num_classes=171, train_class_json='datasets/coco.json', ignore_value=255,
    clip_pixel_mean=CLIP_PIXEL_MEAN, clip_pixel_std=CLIP_PIXEL_STD,
    optimizer='AdamW', base_lr=BASE_LR, weight_decay=WEIGHT_DECAY, weight_decay_norm=WEIGHT_DECAY_NORM,
    lr_schedule='WarmupCosineLR, warmup 0', max_iter=80000, ims_per_batch=4,
    clip_multiplier=CLIP_MULTIPLIER, grad_clip_full_model=0.01,
    loss='BCE-with-logits, mean over B*H*W*K, ignore pixels all-zero targets (not excluded)',
    pretrained='MODEL.SEM_SEG_HEAD.CACHE_DIR: the DeCLIP checkpoint (eva_clip.create_model, strict=False)',
)

CONFIGS = {
    # [DB] configs/eva_vitb_384.yaml + CATSeg.__init__ (clip_resolution / proj_dim / layer_indexes by name)
    'EVA02-CLIP-B-16': dict(_COMMON, clip_resolution=384, patch_size=16, vision_width=768, vision_depth=12,
                            embed_dim=512, guidance_layers=(3, 7), text_guidance_dim=512,
                            appearance_guidance_dim=512, upsample_in_channels=768,
                            model_image_size=224, pt_seq_len=16),
    # [DB] configs/eva_vitl_336.yaml: crops are 384 and are RESIZED to 336 for CLIP (not 336 crops)
    'EVA02-CLIP-L-14-336': dict(_COMMON, clip_resolution=336, patch_size=14, vision_width=1024, vision_depth=24,
                                embed_dim=768, guidance_layers=(7, 15), text_guidance_dim=768,
                                appearance_guidance_dim=768, upsample_in_channels=1024,
                                model_image_size=336, pt_seq_len=16),
}

# --------------------------------------------------------------------------------------------------------------
# d) Test protocol (identical in [DB] and [CS]; only the feature call differs)
# --------------------------------------------------------------------------------------------------------------


def sliding_window_inference(image, predict, kernel: int = 384, overlap: float = 0.333, out_res: int = 640,
                             output_size=None):
    """[DB] CATSeg.inference_sliding_window on one image.

    image: (3, H, W) float RGB 0..255 (after the d2 test mapper's shortest-edge-640 resize).
    predict: callable (5, 3, kernel, kernel) 0..255 crops -> logits (5, K, h, w) (the network including
      clip_input). Crops: unfold of the image resized (bilinear) to out_res^2 with stride int(kernel*(1-overlap))
      (= 256: 4 windows in row-major order), then the whole image resized to kernel^2 as the 5th.
    Logits -> bilinear to kernel -> sigmoid; windows folded and divided by the coverage count; averaged with the
    global view bilinear-resized to out_res: (local + global) / 2; then bilinear to output_size (d2
    sem_seg_postprocess; default (H, W)). Returns (K, H_out, W_out) scores; the prediction is their argmax.
    """
    stride = int(kernel * (1 - overlap))
    unfold = torch.nn.Unfold(kernel_size=kernel, stride=stride)
    fold = torch.nn.Fold((out_res, out_res), kernel_size=kernel, stride=stride)
    full = F.interpolate(image[None], size=(out_res, out_res), mode='bilinear', align_corners=False)
    windows = unfold(full)[0].T.reshape(-1, 3, kernel, kernel)
    global_view = F.interpolate(image[None], size=(kernel, kernel), mode='bilinear', align_corners=False)
    crops = torch.cat([windows, global_view], dim=0)
    out = predict(crops)
    out = F.interpolate(out, size=(kernel, kernel), mode='bilinear', align_corners=False).sigmoid()
    global_out = F.interpolate(out[-1:], size=(out_res, out_res), mode='bilinear', align_corners=False)
    local = out[:-1]
    count = fold(unfold(torch.ones(1, 1, out_res, out_res, dtype=out.dtype, device=out.device)))
    local = fold(local.flatten(1).T[None]) / count
    merged = (local + global_out) / 2.0
    size = tuple(output_size) if output_size is not None else tuple(image.shape[-2:])
    return F.interpolate(merged, size=size, mode='bilinear', align_corners=False)[0]


def window_offsets(kernel: int = 384, overlap: float = 0.333, out_res: int = 640):
    """(top, left) of each local window in the order nn.Unfold emits them (row-major)."""
    stride = int(kernel * (1 - overlap))
    starts = list(range(0, out_res - kernel + 1, stride))
    return [(t, s) for t in starts for s in starts]


def d2_shortest_edge_size(h: int, w: int, short: int = 640, max_size: int = 2560):
    """d2 ResizeShortestEdge.get_output_shape: short side -> `short`, long side capped at max_size,
    rounded with int(x + 0.5). (The model then resizes to 640x640 regardless of this.)"""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)
