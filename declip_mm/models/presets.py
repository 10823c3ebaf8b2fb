"""Tiny CLIP presets for tests and the CPU demo, built through the real code paths.

``DeCLIP-Tiny-ViT-16`` is an open_clip model config of the OpenAI/OpenCLIP family (open_clip's
``VisionTransformer``); ``DeCLIP-Tiny-EVA02-16`` is an open_clip config whose image tower is timm's ``Eva``
with every EVA02-CLIP feature (separate q/k/v, q/v biases, sub-LN, SwiGLU, 2-D RoPE). Both have a
width-64, 3-block, 4-head image tower on 16-pixel patches (224 px pretraining size, 14 x 14 grid), a
2-block text tower and a 32-d joint space: a forward takes milliseconds on a CPU.

Importing this module registers the JSON configs in ``model_configs/`` with open_clip and the tiny EVA
trunk with timm.
"""
from pathlib import Path

import open_clip
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.eva import Eva

from ..constants import TINY_MODELS  # noqa: F401  (the presets' names live there, for the light CLI)

MODEL_CONFIG_DIR = Path(__file__).parent / 'model_configs'


default_cfgs = generate_default_cfgs({  # timm reads this module-level name when registering the model
    'declip_tiny_eva02_patch16_clip_224': dict(input_size=(3, 224, 224), num_classes=32, url=''),
})


@register_model
def declip_tiny_eva02_patch16_clip_224(pretrained: bool = False, **kwargs) -> Eva:
    """EVA02-CLIP-B/16's architecture scaled down to width 64, depth 3, 4 heads (random weights only)."""
    if pretrained:
        raise ValueError('declip_tiny_eva02_patch16_clip_224 is a test preset and has no pretrained weights')
    model_args = dict(
        img_size=224, patch_size=16, embed_dim=64, depth=3, num_heads=4, qkv_fused=False, mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True, scale_mlp=True, scale_attn_inner=True, use_rot_pos_emb=True, ref_feat_shape=(16, 16),
        global_pool=kwargs.pop('global_pool', 'token'))
    return build_model_with_cfg(Eva, 'declip_tiny_eva02_patch16_clip_224', pretrained=False,
                                **dict(model_args, **kwargs))


if str(MODEL_CONFIG_DIR) not in {str(p) for p in open_clip.factory._MODEL_CONFIG_PATHS}:
    open_clip.add_model_config(MODEL_CONFIG_DIR)
