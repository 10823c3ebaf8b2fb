"""The authors' EVA-CLIP / DeCLIP checkpoint layout -> open_clip's EVA02 layout (timm ``Eva`` trunk).

EVA-CLIP (and DeCLIP, which fine-tunes it without adding modules) saves a ``CustomCLIP`` state dict::

    visual.cls_token, visual.pos_embed, visual.patch_embed.proj.*, visual.rope.freqs_{cos,sin},
    visual.blocks.N.attn.{q_bias, v_bias, q_proj.weight, k_proj.weight, v_proj.weight, inner_attn_ln.*, proj.*},
    visual.blocks.N.attn.rope.freqs_{cos,sin}  (the shared rotary module, saved once more per block),
    visual.blocks.N.{norm1, norm2}.*, visual.blocks.N.mlp.{w1, w2, ffn_ln, w3}.*, visual.norm.*, visual.head.*,
    text.*, logit_scale

(recorded from the reference model code: tests/fixtures/reference/declip_authors_pt_{b16,l14}.json, xiaomoguhz/DeCLIP
@2c0b3de, and eva02_clip_b16.json, baaivision/EVA @5623d08). open_clip builds the same network as
``visual.trunk.*`` (timm names). timm's own ``eva.checkpoint_filter_fn`` maps the visual keys; text keys are already
open_clip's. Rotary tables (every ``rope`` key: recomputed for every grid; the reference's loader deletes them as
well) and a text causal mask, if a file has one, are dropped and reported as ignored.
"""
from typing import Dict, List, Tuple

import torch


def is_eva_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return 'visual.pos_embed' in state_dict and 'visual.trunk.pos_embed' not in state_dict


def convert_eva_clip_state_dict(state_dict: Dict[str, torch.Tensor], clip_model) -> Tuple[Dict, List[str]]:
    """Return (open_clip state dict, ignored keys) for an authors'-format EVA-CLIP/DeCLIP state dict."""
    from timm.models.eva import checkpoint_filter_fn
    trunk = getattr(clip_model.visual, 'trunk', None)
    if trunk is None:
        raise ValueError('an EVA-CLIP checkpoint (visual.blocks.*, visual.pos_embed) needs an EVA02 open_clip model '
                         f'(e.g. EVA02-B-16), not {type(clip_model.visual).__name__}')
    ignored = [k for k in state_dict if k.startswith('visual.') and 'rope' in k]
    ignored += [k for k in state_dict if k == 'text.attn_mask']
    visual = checkpoint_filter_fn({k: v for k, v in state_dict.items() if k.startswith('visual.')}, trunk)
    out = {f'visual.trunk.{k}': v for k, v in visual.items()}
    out.update({k: v for k, v in state_dict.items() if not k.startswith('visual.') and k not in ignored})
    return out, ignored
