"""The dense mode of region classification.

The authors' zero_shot.py (DeCLIP main @2c0b3de, lines 18-32 and 80-90) pools boxes and masks from the map of
``--mode`` (``qq_vfm_distill`` -> 'qq' in both scripts and by default), at attention scale 1. So a checkpoint that does
not say its mode (the authors' ``.pt``, an open_clip file) is evaluated in 'qq' at scale 1 for both poolings; 'csa' is
one config key away (``model.mode``); a DeCLIPViT checkpoint that stores its mode and scale keeps them. Everything is
built as ``tools/test.py CONFIG FILE`` builds it: the real config, ``attach_checkpoint``, ``MODELS.build``.
"""
import logging
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import BaseDataElement

from declip_mm.engine.runner_setup import attach_checkpoint
from declip_mm.models import DeCLIPViT, create_clip

REPO = Path(__file__).resolve().parents[3]
REGION_CONFIG = REPO / 'configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py'
TINY = 'DeCLIP-Tiny-EVA02-16'
CLASSES = ['cat', 'dog', 'sky', 'grass', 'road']


def perturbed_clip(seed=0):
    torch.manual_seed(seed)
    clip, _ = create_clip(TINY)
    with torch.no_grad():
        for p in clip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return clip


def authors_pt(path):
    """A mode-less file in the authors' layout and training-checkpoint wrapper (tests/fixtures/reference)."""
    from test_authors_checkpoints import authors_training_checkpoint, layout
    from test_backbone import to_eva_clip_format
    clip = perturbed_clip()
    backbone = DeCLIPViT(TINY)
    backbone.visual.load_state_dict(clip.visual.state_dict())
    sd = to_eva_clip_format(backbone)
    sd.update({f'text.{k}': v for k, v in clip.text.state_dict().items()})
    sd['logit_scale'] = clip.logit_scale.detach()
    torch.save(authors_training_checkpoint(layout('declip_b16'), sd), path)
    return path


def open_clip_file(path):
    torch.save(perturbed_clip().state_dict(), path)
    return path


def build(checkpoint, **options):
    """The 560 config with the tiny tower, as tools/test.py CONFIG CHECKPOINT --cfg-options ... builds it."""
    cfg = Config.fromfile(str(REGION_CONFIG))
    cfg.model.backbone.model_name = TINY
    cfg.model.text_encoder = dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='none', embedding_cache=False)
    cfg.model.class_names = CLASSES
    cfg.merge_from_dict(options)
    attach_checkpoint(cfg, str(checkpoint))
    init_default_scope('declip_mm')
    from declip_mm.registry import MODELS
    return MODELS.build(cfg.model).eval()


def batch():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 96, 128, generator=g)
    seg = torch.zeros(96, 128, dtype=torch.int64)
    seg[10:60, 20:70], seg[40:90, 60:120] = 1, 2
    sample = BaseDataElement(gt_bboxes=torch.tensor([[20., 10., 70., 60.], [60., 40., 120., 90.], [0., 0., 128., 96.]]),
                             segment_ids=torch.tensor([1, 2, 0]), gt_seg_map=seg)
    return x, [sample]


def run(model):
    """Scores from the classifier's forward, and the dense modes it asked the backbone for."""
    asked = []
    extract = model.backbone.extract_dense

    def spy(images, mode=None, normalize=True):
        asked.append(mode)
        return extract(images, mode=mode, normalize=normalize)
    model.backbone.extract_dense = spy
    x, samples = batch()
    with torch.no_grad():
        out = model(x, samples)
    del model.backbone.extract_dense
    return out[0].pred_scores, asked


def expected(model, mode):
    """The same scores computed from the backbone's map in ``mode`` by hand: pool, normalise, cosines."""
    x, samples = batch()
    with torch.no_grad():
        dense = model.backbone.extract_dense(x, mode=mode, normalize=False)
        return model.class_embeddings.logits(model.region_embeddings(dense, samples)[0])


@pytest.mark.parametrize('pooling', ['box', 'mask'])
@pytest.mark.parametrize('make_file', [authors_pt, open_clip_file])
def test_a_modeless_checkpoint_runs_in_the_authors_qq_for_both_poolings(tmp_path, pooling, make_file):
    path = make_file(tmp_path / 'weights.pt')
    model = build(path, **{'model.pooling': pooling})
    assert (model.mode, model.mode_source) == ('qq', 'authors default')
    assert model.backbone.attn_scale == 1.0                     # the authors' ss_attn: no 1/sqrt(d)
    scores, asked = run(model)
    assert asked == ['qq']
    torch.testing.assert_close(scores, expected(model, 'qq'), rtol=0, atol=0)
    assert not torch.allclose(scores, expected(model, 'csa'), atol=1e-4)   # the mode changes the answer


@pytest.mark.parametrize('pooling', ['box', 'mask'])
def test_csa_is_a_config_key(tmp_path, pooling):
    path = authors_pt(tmp_path / 'DeCLIP_EVA-tiny_csa.pt')
    model = build(path, **{'model.pooling': pooling, 'model.mode': 'csa'})
    assert (model.mode, model.mode_source) == ('csa', 'config') and model.backbone.attn_scale == 1.0
    scores, asked = run(model)
    assert asked == ['csa']
    torch.testing.assert_close(scores, expected(model, 'csa'), rtol=0, atol=0)
    # the backbone's own key (what docs/evaluation.md used to advise) is honoured too
    model = build(path, **{'model.pooling': pooling, 'model.backbone.mode': 'csa'})
    assert (model.mode, model.mode_source, model.backbone.mode) == ('csa', 'backbone config', 'csa')
    assert run(model)[1] == ['csa']


def test_a_checkpoint_that_stores_its_mode_keeps_it(tmp_path):
    torch.manual_seed(0)
    ours = DeCLIPViT(TINY, mode='kk', attn_scale='1/sqrt(d)')
    ours.save_checkpoint(str(tmp_path / 'declip_backbone_final.pth'))
    model = build(tmp_path / 'declip_backbone_final.pth', **{'model.pooling': 'mask'})
    head_dim = model.backbone.width // model.backbone.num_heads
    assert (model.mode, model.mode_source) == ('kk', 'checkpoint')
    assert model.backbone.attn_scale == pytest.approx(1 / math.sqrt(head_dim))   # stored, not the authors' 1.0
    scores, asked = run(model)
    assert asked == ['kk']
    torch.testing.assert_close(scores, expected(model, 'kk'), rtol=0, atol=0)
    # an explicit classifier mode still wins, with a warning naming both
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = build(tmp_path / 'declip_backbone_final.pth', **{'model.mode': 'qq'})
    finally:
        logger.removeHandler(handler)
    assert (model.mode, model.mode_source) == ('qq', 'config')
    assert any("trained with mode='kk'" in r.getMessage() and r.levelno == logging.WARNING for r in records)


def test_the_region_configs_leave_the_mode_to_the_rule():
    for size in (560, 1024):
        cfg = Config.fromfile(str(REGION_CONFIG).replace('560', str(size)))
        assert cfg.model.mode is None and cfg.model.backbone.mode is None and cfg.model.backbone.attn_scale is None
