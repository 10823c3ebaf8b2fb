"""The authors' EVA-CLIP / DeCLIP checkpoint layout -> open_clip's EVA02 layout (timm ``Eva`` trunk).

EVA-CLIP (and DeCLIP, which fine-tunes it) saves a ``CustomCLIP`` state dict::

    visual.blocks.N.attn.q_proj.weight, visual.blocks.N.attn.q_bias, visual.blocks.N.attn.v_bias,
    visual.blocks.N.attn.inner_attn_ln.*, visual.blocks.N.mlp.{w1,w2,w3,ffn_ln}.*, visual.rope.freqs_*, ...
    text.*, logit_scale

open_clip builds the same network as ``visual.trunk.*`` (timm names). timm's own
``eva.checkpoint_filter_fn`` maps the visual keys; text keys are already open_clip's. Rotary tables
(``rope.*``, recomputed for every grid) and the text causal mask are dropped and reported as ignored.
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
