"""Proof that distillation trains — loss terms fall, DDP on 2 CPU processes equals 1 process,
a killed run resumed with --resume ends with the uninterrupted run's weights, the export loads."""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import set_random_seed

from declip_mm.datasets import declip_distill_collate
from declip_mm.models import DeCLIPViT
from declip_mm.registry import DATASETS, MODELS
from declip_mm.utils import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY_CFG = REPO / 'configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py'


def train(work_dir, *options, launcher_procs=0, wait=True, resume=False):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1' if launcher_procs else os.environ.get(
        'OMP_NUM_THREADS', '2'))
    args = [str(REPO / 'tools/train.py'), str(TINY_CFG), '--work-dir', str(work_dir)] + (['--resume'] if resume else [])
    if launcher_procs:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={launcher_procs}',
               f'--master_port={port}', *args, '--launcher', 'pytorch']
    else:
        cmd = [sys.executable, *args]
    if options:
        cmd += ['--cfg-options', *options]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return proc.stdout + proc.stderr


def scalars(work_dir):
    files = sorted(Path(work_dir).glob('*/vis_data/scalars.json'))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def photos_subset(sample_root, folder, n):
    folder.mkdir()
    for p in sorted((sample_root / 'photos').iterdir())[:n]:
        shutil.copy(p, folder / p.name)
    return folder


def evaluate_losses(model, cfg, photos):
    """Each loss term on a fixed set of samples (epoch 0 draws), summed over the images."""
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=None, img_dir=str(photos)))
    totals = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = model.data_preprocessor(declip_distill_collate([dataset[i]]))
            for k, v in model.loss(batch['inputs']).items():
                if k.startswith('loss'):
                    totals[k] = totals.get(k, 0.0) + float(v)
    return totals


@pytest.mark.slow
def test_tiny_distillation_lowers_every_loss_term_and_exports(sample_root, tmp_path):
    work = tmp_path / 'run'
    log = train(work)
    assert 'exported the DeCLIP backbone (ensemble alpha 0.7)' in log
    rows = [r for r in scalars(work) if 'loss' in r]
    assert len(rows) == 30 and all(r['data_skipped'] == 0 for r in rows)

    cfg = Config.fromfile(str(TINY_CFG))
    set_random_seed(0)                                     # what the Runner did before building the model
    model = MODELS.build(cfg.model)
    model.place_teachers()
    ckpt = load_checkpoint(str(work / 'epoch_6.pth'))['state_dict']
    frozen = 'student.visual.positional_embedding'         # not trained: proves the same initial weights
    torch.testing.assert_close(model.state_dict()[frozen], ckpt[frozen], rtol=0, atol=0)
    before = evaluate_losses(model, cfg, sample_root / 'photos')
    original = {k: v.clone() for k, v in model.student.state_dict().items()}
    model.load_state_dict(ckpt)
    after = evaluate_losses(model, cfg, sample_root / 'photos')
    assert set(before) == {'loss_context', 'loss_content', 'loss_rcc'}
    for term in before:
        assert after[term] < 0.85 * before[term], (term, before[term], after[term])

    # the exported backbone is the weight-space ensemble 0.7 * student + 0.3 * original, with metadata
    exported = DeCLIPViT('DeCLIP-Tiny-ViT-16', pretrained=str(work / 'declip_backbone_final.pth'))
    assert (exported.mode, exported.input_size) == ('csa', 224)
    for k, v in exported.state_dict().items():
        want = 0.7 * ckpt[f'student.{k}'] + 0.3 * original[k]
        torch.testing.assert_close(v, want, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_two_gloo_processes_follow_the_single_process_trajectory(sample_root, tmp_path):
    photos = photos_subset(sample_root, tmp_path / 'photos', 8)
    # per-image averaging: the reference's mean over all regions of a batch weighs images by their region
    # counts, so 2 x 1 image and 1 x 2 images only agree with average='image'
    common = [f'train_dataloader.dataset.img_dir={photos}', 'train_dataloader.dataset.data_root=',
              'train_cfg.max_epochs=2', 'model.content_loss.average=image', 'model.rcc_loss.average=image']
    train(tmp_path / 'one', *common, 'train_dataloader.batch_size=2')
    train(tmp_path / 'two', *common, 'train_dataloader.batch_size=1', launcher_procs=2)
    one, two = scalars(tmp_path / 'one'), scalars(tmp_path / 'two')
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        for term in ('loss', 'loss_context', 'loss_content', 'loss_rcc'):
            assert b[term] == pytest.approx(a[term], rel=1e-4, abs=1e-6), (term, a['step'])
    w1 = load_checkpoint(str(tmp_path / 'one' / 'epoch_2.pth'))['state_dict']
    w2 = load_checkpoint(str(tmp_path / 'two' / 'epoch_2.pth'))['state_dict']
    for k in w1:
        a, b = w1[k].clone(), w2[k].clone()
        if k.endswith('attn.in_proj_bias'):
            # the k bias of a softmax attention has an exactly-zero gradient (it shifts each logit row by a
            # constant); its float-noise gradient is rescaled by Adam to ~lr-sized steps, so it only stays
            # within lr x steps. Everything else must agree closely.
            c = a.shape[0] // 3
            assert (a[c:2 * c] - b[c:2 * c]).abs().max() < 1e-3 * 8
            a[c:2 * c] = b[c:2 * c] = 0
        torch.testing.assert_close(b, a, atol=2e-5, rtol=0, msg=k)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(sample_root, tmp_path):
    photos = photos_subset(sample_root, tmp_path / 'photos', 6)
    common = [f'train_dataloader.dataset.img_dir={photos}', 'train_dataloader.dataset.data_root=',
              'train_cfg.max_epochs=4']
    train(tmp_path / 'full', *common)

    killed = tmp_path / 'killed'
    proc = train(killed, *common, wait=False)
    deadline = time.time() + 300
    while not (killed / 'last_checkpoint').is_file():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / 'epoch_4.pth').exists(), 'the run finished before it could be killed'
    log = train(killed, *common, resume=True)
    assert 'resumed epoch' in log
    full = load_checkpoint(str(tmp_path / 'full' / 'epoch_4.pth'))
    resumed = load_checkpoint(str(killed / 'epoch_4.pth'))
    for k, v in full['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][k], v, atol=1e-6, rtol=0)


def test_teacher_cache_hits_and_matches(sample_root, tmp_path):
    cfg = Config.fromfile(str(TINY_CFG))
    set_random_seed(0)
    plain = MODELS.build(cfg.model)
    set_random_seed(0)
    cached = MODELS.build(dict(cfg.model, teacher_cache=str(tmp_path / 'cache')))
    for m in (plain, cached):
        m.place_teachers()
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=None, img_dir=str(sample_root / 'photos')))
    batch = plain.data_preprocessor(declip_distill_collate([dataset[0], dataset[1]]))['inputs']
    with torch.no_grad():
        want = plain.loss(batch)
        first = cached.loss(batch)
        again = cached.loss(batch)
    cache = cached.caches['vfm']
    assert (cache.misses, cache.hits) == (2, 2)
    assert len(list(cache.root.glob('*/*.pt'))) == 2
    for k in ('loss_context', 'loss_rcc'):
        assert float(first[k]) == pytest.approx(float(want[k]), rel=1e-2)   # fp16 storage
        assert float(again[k]) == pytest.approx(float(first[k]), rel=1e-6)


@pytest.mark.slow
def test_paper_config_trains_two_iterations_with_tiny_towers(sample_root, tmp_path):
    """The journal paper config as it is (AmpOptimWrapper, AdamW, 1-D parameters without decay, the authors'
    warm-up + cosine schedule, csa, SD completion, RCC), with tiny towers swapped in on the command line."""
    from reference.distill_recipe_ref import reference_cosine_lr
    from tiny_sd import make_tiny_sd
    sd = make_tiny_sd(tmp_path / 'sd')
    photos = photos_subset(sample_root, tmp_path / 'photos', 4)
    paper = REPO / 'configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py'
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([
        sys.executable, str(REPO / 'tools/train.py'), str(paper), '--work-dir', str(tmp_path / 'run'),
        '--cfg-options', 'model.student.model_name=DeCLIP-Tiny-EVA02-16', 'model.student.pretrained=None',
        'model.student.input_size=224', 'model.vfm_teacher.arch=dinov2_vits14_reg', 'model.vfm_teacher.checkpoint=None',
        'model.vfm_teacher.model_kwargs.embed_dim=48', 'model.vfm_teacher.model_kwargs.depth=2',
        'model.vfm_teacher.model_kwargs.num_heads=3', f'model.diffusion_teacher.folder={sd}',
        'model.diffusion_teacher.layers=[up_blocks.1.attentions.*.transformer_blocks.0.attn1]',
        'model.diffusion_teacher.dtype=fp32', 'model.vfm_teacher.dtype=fp32',
        'train_dataloader.dataset.data_root=', f'train_dataloader.dataset.img_dir={photos}',
        'train_dataloader.dataset.student_size=224', 'train_dataloader.dataset.sd_size=64',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1',
        # AmpOptimWrapper asserts a GPU; on a CPU the same optimiser, parameter groups and schedule run in fp32
        *([] if torch.cuda.is_available() else ['optim_wrapper.type=OptimWrapper'])],
        env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    rows = [r for r in scalars(tmp_path / 'run') if 'loss' in r]
    assert len(rows) == 2
    total = 2 * 6                                        # the schedule spans the config's 6 epochs of 2 iterations
    for step, row in enumerate(rows):
        assert row['lr'] == pytest.approx(reference_cosine_lr(step, 1e-5, 1000, total), rel=1e-6)
        assert all(math.isfinite(row[k]) for k in ('loss_context', 'loss_content', 'loss_rcc'))
    dumped = Config.fromfile(str(next((tmp_path / 'run').glob('*/vis_data/config.py'))))
    assert Config.fromfile(str(paper)).optim_wrapper.type == 'AmpOptimWrapper'
    assert dumped.param_scheduler[0].type == 'WarmupCosineLR' and dumped.optim_wrapper.optimizer.type == 'AdamW'
    assert (tmp_path / 'run' / 'declip_backbone_final.pth').is_file()


def test_teacher_cache_key_covers_weights_content_normalisation_and_view(sample_root, tmp_path):
    from declip_mm.models.distillers.teacher_cache import weights_digest
    weights = tmp_path / 'w.pth'
    weights.write_bytes(b'a' * 64)
    stat = os.stat(weights)
    before = weights_digest(weights)
    weights.write_bytes(b'b' * 64)                              # same path, size and mtime, other content
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights_digest(weights) != before and os.stat(weights).st_mtime_ns == stat.st_mtime_ns
    folder = tmp_path / 'sd'
    (folder / 'unet').mkdir(parents=True)
    (folder / 'unet' / 'w.bin').write_bytes(b'x')
    first = weights_digest(folder)
    (folder / 'unet' / 'w.bin').write_bytes(b'y')
    assert weights_digest(folder) != first

    cfg = Config.fromfile(str(TINY_CFG))
    root = tmp_path / 'cache'
    set_random_seed(0)
    model = MODELS.build(dict(cfg.model, teacher_cache=str(root)))
    other_norm = MODELS.build(dict(cfg.model, teacher_cache=str(root), data_preprocessor=dict(
        type='DistillDataPreprocessor', vfm_mean=(0.0, 0.0, 0.0))))
    assert model.caches['vfm'].root != other_norm.caches['vfm'].root
    model.place_teachers()
    for size in (224, 160):                                     # VFM views of 196 and 140 px: separate entries
        dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=None, student_size=size,
                                      img_dir=str(sample_root / 'photos')))
        batch = model.data_preprocessor(declip_distill_collate([dataset[0]]))['inputs']
        with torch.no_grad():
            model.loss(batch)
    entries = sorted(p.name for p in model.caches['vfm'].root.glob('*/*.pt'))
    assert len(entries) == 2 and entries[0].split('-')[0] == entries[1].split('-')[0]
    assert {e.split('-')[1] for e in entries} == {'196x196.pt', '140x140.pt'}


VAL_OPTIONS = {
    'model.data_preprocessor.eval_preprocessor': dict(
        type='mmseg.SegDataPreProcessor', mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    'model.val_segmentor': dict(
        text_encoder=dict(type='OpenCLIPTextEncoder', model_name='DeCLIP-Tiny-ViT-16', templates='simple',
                          embedding_cache=False),
        class_names='voc21', logit_scale=80.0, bg_thresh=0.4, test_cfg=dict(mode='whole')),
}


@pytest.mark.slow
def test_validation_during_distillation_uses_the_ensemble(sample_root, tmp_path):
    """The student is validated (training-free VOC21 on the sample photos) on the weight-space ensemble, and
    training continues from the raw student."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(TINY_CFG))
    cfg.merge_from_dict(VAL_OPTIONS)
    cfg.train_dataloader.dataset.data_root = str(sample_root)
    cfg.val_dataloader = dict(
        batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='mmseg.PascalVOCDataset', data_root=str(sample_root / 'voc'),
                     data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                     ann_file='ImageSets/Segmentation/val.txt',
                     pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(10000, 128), keep_ratio=True),
                               dict(type='mmseg.LoadAnnotations'), dict(type='mmseg.PackSegInputs')]))
    cfg.val_evaluator = dict(type='mmseg.IoUMetric', iou_metrics=['mIoU'])
    cfg.val_cfg = dict(type='ValLoop')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    distiller = runner.model
    raw = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    val_miou = [json.loads(line) for line in sorted(tmp_path.glob('*/vis_data/scalars.json'))[0].read_text()
                .splitlines() if 'mIoU' in line][-1]['mIoU']
    # after validation the raw student is back in place
    ckpt = load_checkpoint(str(tmp_path / 'epoch_1.pth'))['state_dict']
    for k, v in raw.items():
        torch.testing.assert_close(v, ckpt[f'student.{k}'], rtol=0, atol=0)
    # the logged mIoU is the ensemble's: evaluate 0.7 * student + 0.3 * original again, without the hook
    original = distiller.clip_teacher.state_dict()
    hook = [h for h in runner._hooks if type(h).__name__ == 'DeCLIPDistillHook'][0]
    runner._hooks.remove(hook)
    distiller.student.load_state_dict({k: 0.7 * v + 0.3 * original[k] for k, v in raw.items()})
    assert runner.val_loop.run()['mIoU'] == pytest.approx(val_miou, abs=0.01)
    distiller.student.load_state_dict(raw)
    assert runner.val_loop.run()['mIoU'] != pytest.approx(val_miou, abs=0.01)   # the raw student differs
