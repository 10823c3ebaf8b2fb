"""The proof world's pixel-space diffusion teacher: pretraining, caching, loading, the grouping probe."""
import json

import pytest
import torch

from declip_mm.models import DiffusionTeacher
from projects.proof_world.proof_world import world
from projects.proof_world.proof_world.diffusion_pretrain import (attention_grouping, pretrain_diffusion,
                                                                 read_diffusion_report)


@pytest.fixture(scope='module')
def tiny_world(tmp_path_factory):
    return world.write_world(tmp_path_factory.mktemp('world'), n_train=6, n_val=4, size=64, seed=3)


def test_pretrain_diffusion_writes_a_loadable_cached_folder(tiny_world, tmp_path):
    kwargs = dict(steps=2, batch_size=4, cache_dir=str(tmp_path / 'cache'), progress=False, probe_scenes=(1, 3))
    folder, cfg = pretrain_diffusion(tiny_world, **kwargs)
    assert (folder / 'unet' / 'config.json').is_file() and (folder / 'scheduler' / 'scheduler_config.json').is_file()
    assert json.loads((folder / 'unet' / 'config.json').read_text())['_class_name'] == 'UNet2DModel'
    report = read_diffusion_report(folder)
    assert len(report['losses']) == 2 and report['recipe']['steps'] == 2 and report['threads'] >= 1
    probe = report['grouping_probe']
    assert probe['trained']['images'] == 2 and 0 <= probe['random_init']['diffusion_auc'] <= 1
    assert cfg == dict(type='DiffusionTeacher', folder=str(folder), timestep=100,
                       layers=['mid_block.attentions.*', 'up_blocks.1.attentions.*'], dtype='fp32')
    teacher = DiffusionTeacher(**{k: v for k, v in cfg.items() if k != 'type'})
    size = teacher.unet.config.sample_size
    a_sd = teacher(torch.rand(2, 3, size, size) * 2 - 1, (16, 16))
    assert a_sd.shape == (2, 256, 256)
    torch.testing.assert_close(a_sd.sum(-1), torch.ones(2, 256), atol=1e-5, rtol=0)
    stamp = (folder / 'unet' / 'config.json').stat().st_mtime_ns
    again, _ = pretrain_diffusion(tiny_world, **kwargs)                     # cached: nothing trains
    assert again == folder and (folder / 'unet' / 'config.json').stat().st_mtime_ns == stamp
    copy, copy_cfg = pretrain_diffusion(tiny_world, out_path=tmp_path / 'out', **kwargs)
    assert (copy / 'unet' / 'config.json').is_file() and copy_cfg['folder'] == str(copy)
    other, _ = pretrain_diffusion(tiny_world, **dict(kwargs, steps=1, probe_scenes=None))
    assert other != folder and 'grouping_probe' not in read_diffusion_report(other)


def test_attention_grouping_with_a_vfm(tiny_world, tmp_path):
    from declip_mm.models import VFMTeacher
    from projects.proof_world.proof_world.diffusion_pretrain import diffusion_teacher_cfg, random_init_folder
    cfg = diffusion_teacher_cfg(random_init_folder(tmp_path / 'random'))
    teacher = DiffusionTeacher(**{k: v for k, v in cfg.items() if k != 'type'})
    vfm = VFMTeacher('dinov2_vits14_reg', model_kwargs=dict(img_size=64, patch_size=8, embed_dim=32, depth=1,
                                                            num_heads=2))
    out = attention_grouping(teacher, tiny_world, (0, 2), vfm=vfm, vfm_size=128)
    assert out['images'] == 2 and set(out) >= {'diffusion_auc', 'vfm_auc', 'completed_auc'}

