"""Import a CAT-Seg checkpoint of the DeCLIP_CATSeg branch (detectron2 keys) into our CATSeg model, with a full key
report: the authors' released CAT-Seg + DeCLIP EVA02-B/16 model then runs through configs/catseg/*.

    python tools/converters/catseg_d2_to_declip.py model_final.pth catseg_declip_b16.pth \
        [--config configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py]
    python tools/test.py configs/catseg/catseg_declip-eva02-b16_test-ade150.py catseg_declip_b16.pth

Mapping (CAT-Seg @6d3a188 / DeCLIP_CATSeg @06262d4 module names; our aggregator uses the same names, the class
aggregation's ``MLP`` included; every reference key is listed in tests/fixtures/reference/catseg_d2_state_dict_*.json,
recorded by instantiating the reference's own code):
    sem_seg_head.predictor.transformer.*        -> aggregator.*
    sem_seg_head.predictor.transformer.layers.{i}.swin_block.block_2.attn_mask
                                                 -> checked equal to our recomputed aggregator.layers.{i}...attn_mask,
                                                    reported as ignored (a different mask stops the conversion)
    upsample1.* / upsample2.*                    -> guidance_up.0.* / guidance_up.1.*
    sem_seg_head.predictor.clip_model.visual.*  -> backbone.visual.* (EVA-CLIP layout converted with timm's filter)
    sem_seg_head.predictor.clip_model.text.* / logit_scale -> text_encoder.*
Rotary tables and the text attention mask are recomputed, and reported as ignored. Any other missing or unexpected
key stops the conversion with the list (``--no-strict`` writes it anyway, still listing them).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[2]))  # this clone's declip_mm, whatever is installed
import argparse
import types

import torch
from mmengine.config import Config

import declip_mm  # noqa: F401
from declip_mm.models.backbones.eva_clip_checkpoint import convert_eva_clip_state_dict
from declip_mm.models.clip_factory import LoadReport, unwrap_state_dict
from declip_mm.utils import load_trusted_checkpoint

CLIP = 'sem_seg_head.predictor.clip_model.'
RENAMES = (('sem_seg_head.predictor.transformer.', 'aggregator.'), ('upsample1.', 'guidance_up.0.'),
           ('upsample2.', 'guidance_up.1.'))


def _rename(key: str):
    for old, new in RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def convert_head_state_dict(d2: dict, model) -> tuple:
    """(our state dict, ignored keys, unmapped keys) for the non-CLIP keys of a detectron2 CAT-Seg state dict: the
    aggregator and the two guidance ConvTs. ``model`` needs the ``aggregator`` (whose recomputed shift masks the
    checkpoint's saved ``attn_mask`` buffers must equal: ValueError otherwise)."""
    out, ignored, unmapped = {}, [], []
    ours = dict(model.named_buffers())
    for k, v in d2.items():
        if k.startswith(CLIP):
            continue
        new = _rename(k)
        if new is None:
            unmapped.append(k)
        elif new.endswith('.attn_mask') and new.startswith('aggregator.'):
            mine = ours.get(new)                   # named_buffers() leaves out the unshifted blocks' None
            if mine is None:
                unmapped.append(k)
                continue
            if tuple(v.shape) != tuple(mine.shape) or not torch.equal(v.to(mine), mine):
                raise ValueError(f'{k}: the checkpoint\'s shifted-window mask {tuple(v.shape)} differs from ours '
                                 f'({new}, {tuple(mine.shape)}): the config\'s feature_size / window do not match')
            ignored.append(k)
        else:
            out[new] = v
    return out, ignored, unmapped


def convert_state_dict(d2: dict, model) -> tuple:
    """(our state dict, ignored keys, unmapped keys) for a detectron2 CAT-Seg state dict and a built CATSeg."""
    clip = {k[len(CLIP):]: v for k, v in d2.items() if k.startswith(CLIP)}
    visual, ignored = convert_eva_clip_state_dict({k: v for k, v in clip.items() if k.startswith('visual.')},
                                                  types.SimpleNamespace(visual=model.backbone.visual))
    out = {f'backbone.{k}': v for k, v in visual.items()}
    for k, v in clip.items():
        if k.startswith('visual.'):
            continue
        if k == 'text.attn_mask':
            ignored.append(k)
            continue
        out[f'text_encoder.{k}'] = v
    head, head_ignored, unmapped = convert_head_state_dict(d2, model)
    out.update(head)
    return out, ignored + head_ignored, unmapped


def convert(src: str, dst: str, config: str, strict: bool = True) -> LoadReport:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = None
    cfg.model.text_pretrained = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    state, ignored, unmapped = convert_state_dict(unwrap_state_dict(load_trusted_checkpoint(src)), model)
    result = model.load_state_dict(state, strict=False)
    report = LoadReport(list(result.missing_keys), list(result.unexpected_keys) + unmapped, ignored)
    report.check(src, strict)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(converted_from=str(src), config=str(config))), dst)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help="the authors' detectron2 checkpoint (model_final.pth)")
    parser.add_argument('dst')
    parser.add_argument('--config', default='configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py')
    parser.add_argument('--no-strict', action='store_true')
    args = parser.parse_args(argv)
    report = convert(args.src, args.dst, args.config, not args.no_strict)
    print(f'wrote {args.dst}; ignored (recomputed): {len(report.ignored)}; missing: {report.missing}; '
          f'unexpected: {report.unexpected}')


if __name__ == '__main__':
    main()
