"""The distillation recipe against DeCLIP main @2c0b3de (open_clip's cosine_lr, get_default_params, the content loss)
and DINOv2 @b8931f7 (interpolate_pos_encoding of the hub models)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from declip_mm.models import DeCLIPViT
from reference import distill_recipe_ref as dr_ref

REPO = Path(__file__).resolve().parents[3]
TINY = 'DeCLIP-Tiny-ViT-16'

pytestmark = pytest.mark.reference


def build_scheduled_optimizer(cfg_path, epoch_length):
    """The config's optim wrapper and param_scheduler, built as the Runner builds them (epoch conversion)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    init_default_scope('declip_mm')
    cfg = Config.fromfile(str(cfg_path))
    model = DeCLIPViT(TINY, mode='csa')                  # trainable='blocks', as the student
    # AmpOptimWrapper asserts a GPU; its optimizer and schedule are those of the plain wrapper
    wrapper = build_optim_wrapper(model, dict(cfg.optim_wrapper, type='OptimWrapper'))
    schedulers = []
    for s in cfg.param_scheduler:
        s = dict(s)
        convert = s.pop('convert_to_iter_based', False)
        cls = PARAM_SCHEDULERS.get(s.pop('type'))
        s['optimizer'] = wrapper
        schedulers.append(cls.build_iter_from_epoch(**s, epoch_length=epoch_length) if convert else cls(**s))
    return cfg, wrapper, schedulers


def test_schedule_is_the_authors_cosine_lr():
    """Every iteration of a 6-epoch run, against open_clip's cosine_lr as the authors call it."""
    epoch_length = 400
    cfg, wrapper, schedulers = build_scheduled_optimizer(
        REPO / 'configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py', epoch_length)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    groups = wrapper.param_groups
    for group in groups:                                 # AdamW, betas / eps, no decay on 1-D parameters
        (param,) = group['params']
        assert group['weight_decay'] == (0.0 if param.ndim == 1 else 0.1)
        assert (group['betas'], group['eps']) == ((0.9, 0.999), 1e-8)
    assert {p.ndim for g in groups for p in g['params']} >= {1, 2}
    total = epoch_length * cfg.train_cfg.max_epochs
    for step in range(total):
        want = dr_ref.reference_cosine_lr(step, 1e-5, 1000, total)
        assert wrapper.param_groups[0]['lr'] == pytest.approx(want, rel=1e-12, abs=1e-20), step
        for s in schedulers:
            s.step()
    assert dr_ref.reference_cosine_lr(999, 1e-5, 1000, total) == pytest.approx(1e-5)


@pytest.mark.parametrize('config, model_name', [
    ('declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py', 'EVA02-CLIP-B-16'),
    ('declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py', 'EVA02-CLIP-B-16'),
    ('declip-cvpr_eva02-l14-336_dinov2-l14reg_coco-560_6e.py', 'EVA02-CLIP-L-14-336'),
    ('declip_vit-b16_dinov2-b14reg_sd15_coco-560_6e.py', 'ViT-B-16'),
    ('declip_vit-l14-336_dinov2-l14reg_sd15_coco-448_6e.py', 'ViT-L-14-336')])
def test_adamw_settings_follow_the_authors_rule(config, model_name):
    cfg = Config.fromfile(str(REPO / 'configs/distill' / config))
    want = dr_ref.reference_adamw_hparams(model_name)
    opt = cfg.optim_wrapper.optimizer
    assert (tuple(opt.betas), opt.eps, opt.lr, opt.weight_decay) == (want['betas'], want['eps'], 1e-5, 0.1)


def test_cvpr_configs_are_the_authors_scripts():
    root = REPO / 'configs/distill'
    b16 = Config.fromfile(str(root / 'declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py'))
    assert (b16.model.student.mode, b16.model.student.attn_scale) == ('qq', 1.0)
    assert (b16.model.context_loss.kind, b16.model.context_loss.loss_weight) == ('l2', 0.1)
    assert b16.model.rcc_loss is None and b16.model.diffusion_teacher is None
    assert b16.train_dataloader.batch_size == 4 and b16.custom_hooks[0].alpha == 0.7
    l14 = Config.fromfile(str(root / 'declip-cvpr_eva02-l14-336_dinov2-l14reg_coco-560_6e.py'))
    data = l14.train_dataloader.dataset
    assert (l14.model.student.model_name, l14.model.student.mode, l14.model.student.attn_scale) == \
        ('EVA02-L-14-336', 'qq', 1.0)
    assert l14.model.vfm_teacher.arch == 'dinov2_vitl14_reg'
    assert (data.student_size, data.student_patch, data.vfm_patch, data.crop_size) == (560, 14, 14, 336)
    assert data.student_size // data.student_patch * data.vfm_patch == 560           # DINOv2-L at 560 px
    assert l14.train_dataloader.batch_size == 2 and l14.custom_hooks[0].alpha == 0.95
    journal = Config.fromfile(str(root / 'declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py'))
    assert journal.model.student.attn_scale == '1/sqrt(d)'


@pytest.mark.parametrize('arch, grid', [('dinov2_vits14_reg', (35, 35)), ('dinov2_vits14_reg', (20, 31)),
                                        ('dinov2_vits14', (35, 35)), ('dinov2_vits14', (12, 9))])
def test_dinov2_position_resize_equals_the_hub_models(arch, grid):
    from declip_mm.models.teachers.vfm import VFMTeacher
    torch.manual_seed(0)
    teacher = VFMTeacher(arch=arch, model_kwargs=dict(embed_dim=48, depth=1, num_heads=3, img_size=518))
    model = teacher.model
    n_prefix = 0 if model.no_embed_class else model.num_prefix_tokens     # timm drops the reg models' CLS slot
    source = teacher.source_pos_embed.clone() * 50                        # the 37 x 37 pretraining table
    teacher.source_pos_embed.copy_(source)
    official = source if n_prefix == 1 else torch.cat([torch.randn(1, 1, 48), source], dim=1)
    reg = arch.endswith('_reg')
    want = dr_ref.reference_dinov2_interpolate_pos_encoding(official, *grid, antialias=reg, offset=0.0 if reg else 0.1)
    teacher.set_grid(grid)
    torch.testing.assert_close(model.pos_embed[:, n_prefix:], want[:, 1:], rtol=0, atol=1e-5)


def test_content_loss_averages_over_all_regions_of_the_batch():
    from declip_mm.models.losses import ContentDistillLoss
    g = torch.Generator().manual_seed(0)
    counts = [5, 1, 3]
    student, teacher = torch.randn(9, 8, generator=g), torch.randn(9, 8, generator=g)
    ours = ContentDistillLoss(pooling='1x1')(student, teacher, counts)
    want = dr_ref.reference_content_loss(student.split(counts), teacher.split(counts))
    assert ours.item() == pytest.approx(want.item(), rel=1e-6)
    per_image = ContentDistillLoss(pooling='1x1', average='image')(student, teacher, counts)
    assert abs(per_image.item() - want.item()) > 1e-3                 # the option differs on uneven counts


def test_skipped_images_are_summed_and_losses_averaged_across_processes(monkeypatch):
    """DeCLIPDistiller.parse_losses with 2 processes (all_reduce emulated: the other process logged the same)."""
    from declip_mm.models.distillers import declip_distiller as module
    calls = []

    def fake_all_reduce(tensor, op):
        calls.append(op)
        if op == 'sum':
            tensor.mul_(2)

    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(module, 'all_reduce', fake_all_reduce)
    distiller = module.DeCLIPDistiller.__new__(module.DeCLIPDistiller)
    loss, logs = module.DeCLIPDistiller.parse_losses(distiller, dict(
        loss_context=torch.tensor(0.5), loss_content=torch.tensor(0.25), data_skipped=torch.tensor(3.0)))
    assert float(logs['data_skipped']) == 6.0
    assert float(logs['loss_context']) == 0.5 and float(loss) == pytest.approx(0.75)    # the local loss
    assert sorted(calls) == ['mean', 'mean', 'mean', 'sum']
