"""Attention scale and checkpoints as the authors' evaluation uses them: a config's scale overrides a checkpoint's,
tools/test.py loads a foreign CLIP weights file into the backbone and refuses unusable files."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from declip_mm.models import DeCLIPViT

REPO = Path(__file__).resolve().parents[3]
TINY = 'DeCLIP-Tiny-ViT-16'

from test_training_free_reference import segmentor_config  # noqa: E402

pytestmark = pytest.mark.reference


def test_config_attention_scale_overrides_a_checkpoint_with_a_warning(tmp_path):
    import logging
    from mmengine.logging import MMLogger
    torch.manual_seed(0)
    DeCLIPViT(TINY, mode='csa', attn_scale=1.0).save_checkpoint(str(tmp_path / 'b.pth'))
    assert DeCLIPViT(TINY, pretrained=str(tmp_path / 'b.pth')).attn_scale == 1.0
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = DeCLIPViT(TINY, pretrained=str(tmp_path / 'b.pth'), attn_scale='1/sqrt(d)')
    finally:
        logger.removeHandler(handler)
    head_dim = model.width // model.num_heads
    assert model.attn_scale == pytest.approx(1 / math.sqrt(head_dim)) and model.mode == 'csa'
    assert any(f'distilled with attn_scale=1.0; running it with attn_scale={1 / math.sqrt(head_dim)!r}'
               in r.getMessage() and r.levelno == logging.WARNING for r in records)
    with pytest.raises(ValueError, match="attn_scale must be a number, '1/sqrt"):
        DeCLIPViT(TINY, attn_scale='sqrt')
    with pytest.raises(ValueError, match="trained with mode='csa'"):
        DeCLIPViT(TINY, pretrained=str(tmp_path / 'b.pth'), mode='qq')


def full_clip_state_dict(model_name=TINY):
    """An open_clip-format CLIP weights file as people download them (visual.* and text tower keys)."""
    import open_clip
    torch.manual_seed(1)
    return open_clip.create_model(model_name).state_dict()


def test_test_tool_loads_a_foreign_clip_weights_file_into_the_backbone(tmp_path):
    from declip_mm.engine.runner_setup import attach_checkpoint
    weights = full_clip_state_dict()
    torch.save(weights, tmp_path / 'authors_release.pt')
    cfg = Config(dict(model=segmentor_config()))
    assert attach_checkpoint(cfg, str(tmp_path / 'authors_release.pt')) == 'backbone-weights'
    assert cfg.model.backbone.pretrained == str(tmp_path / 'authors_release.pt') and cfg.model.backbone.strict
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    for key, value in model.backbone.visual.state_dict().items():
        torch.testing.assert_close(value, weights[f'visual.{key}'], rtol=0, atol=0)
    # a CLIP file that does not fit the backbone: the key report, not the original CLIP
    del weights['visual.conv1.weight']
    torch.save(weights, tmp_path / 'bad.pt')
    cfg = Config(dict(model=segmentor_config()))
    attach_checkpoint(cfg, str(tmp_path / 'bad.pt'))
    with pytest.raises(KeyError, match='visual.conv1.weight'):
        MODELS.build(cfg.model)
    # neither this model's keys nor CLIP weights: refused, naming the file and its keys
    torch.save({'state_dict': {'head.fc.weight': torch.zeros(2, 2)}}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match=r"other.pth matches neither this model .*'head.fc.weight'"):
        attach_checkpoint(Config(dict(model=segmentor_config())), str(tmp_path / 'other.pth'))


def test_test_tool_refuses_unusable_files_on_the_command_line(tmp_path):
    torch.save({'head.fc.weight': torch.zeros(2, 2)}, tmp_path / 'other.pth')
    proc = subprocess.run([sys.executable, str(REPO / 'tools/test.py'),
                           str(REPO / 'configs/segmentation/training-free_declip-eva02-b16_voc21.py'),
                           str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w')],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode != 0 and 'matches neither this model' in proc.stderr


def test_test_tool_refuses_checkpoints_without_the_backbone(tmp_path):
    from declip_mm.engine.runner_setup import attach_checkpoint
    weights = {f'student.visual.{k}': v for k, v in full_clip_state_dict().items() if k.startswith('visual.')}
    torch.save({'state_dict': weights, 'meta': {'epoch': np.int64(6)}}, tmp_path / 'epoch_6.pth')
    with pytest.raises(ValueError, match='distillation checkpoint .* declip_backbone_final.pth'):
        attach_checkpoint(Config(dict(model=segmentor_config())), str(tmp_path / 'epoch_6.pth'))
    torch.save({'state_dict': {'neck.w': torch.zeros(1)}, 'meta': {}}, tmp_path / 'neck_only.pth')
    cfg = Config(dict(model=dict(segmentor_config(), neck=dict(type='FPN'))))
    with pytest.raises(ValueError, match='no backbone.\\* keys'):
        attach_checkpoint(cfg, str(tmp_path / 'neck_only.pth'))
