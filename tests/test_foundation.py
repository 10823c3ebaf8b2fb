"""Compiled mmcv ops, registry reach from mmdet/mmseg configs, sample data, train/test/resume."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def test_mmcv_ops_are_compiled():
    from mmcv.ops import nms, roi_align
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward'])
    assert hasattr(ext, 'nms')
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # box 1 overlaps box 0 with IoU 0.81
    feat = torch.arange(16.).reshape(1, 1, 4, 4)
    out = roi_align(feat, torch.tensor([[0, 0., 0., 2., 2.]]), (1, 1), 1.0, 0, 'avg', True)
    assert out.item() == pytest.approx(feat[0, 0, :2, :2].mean().item())


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_declip_type_builds_from_downstream_config(tmp_path, scope):
    """A plain mmdet / mmseg config reaches DeCLIPViT by bare name through custom_imports."""
    cfg_file = tmp_path / f'{scope}_cfg.py'
    cfg_file.write_text(textwrap.dedent(f"""
        default_scope = '{scope}'
        custom_imports = dict(imports=['declip_mm'], allow_failed_imports=False)
        backbone = dict(type='DeCLIPViT', model_name='DeCLIP-Tiny-ViT-16', mode='csa', out_indices=(0, 2))
    """))
    code = textwrap.dedent(f"""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from {scope}.registry import MODELS
        cfg = Config.fromfile({str(cfg_file)!r})
        init_default_scope(cfg.default_scope)
        model = MODELS.build(cfg.backbone)
        import torch
        outs = model(torch.randn(1, 3, 64, 96))
        print(type(model).__module__, [tuple(o.shape) for o in outs])
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith('declip_mm.models.backbones.declip_vit')
    assert '(1, 64, 4, 6), (1, 64, 4, 6), (1, 32, 4, 6)' in line


def test_declip_scope_lookup():
    from mmengine.registry import MODELS as ROOT
    from declip_mm.models import DeCLIPViT
    from declip_mm.registry import MODELS
    assert MODELS.scope == 'declip_mm'
    assert MODELS.get('DeCLIPViT') is DeCLIPViT
    assert ROOT.get('declip_mm.DeCLIPViT') is DeCLIPViT


def test_sample_data_layout_and_checksums(sample_root):
    from PIL import Image
    from declip_mm.datasets import sample_data as sd
    voc = sample_root / 'voc'
    ids = (voc / 'ImageSets' / 'Segmentation' / 'val.txt').read_text().split()
    assert ids == list(sd.VOC_IDS)
    for voc_id in ids:
        img = Image.open(voc / 'JPEGImages' / f'{voc_id}.jpg')
        mask = np.array(Image.open(voc / 'SegmentationClass' / f'{voc_id}.png'))
        assert mask.shape == (img.size[1], img.size[0])
        values = set(np.unique(mask).tolist())
        assert values <= set(range(21)) | {255} and len(values - {0, 255}) >= 1
    # every kept file is the checked one
    for voc_id in ids:
        data = (voc / 'JPEGImages' / f'{voc_id}.jpg').read_bytes()
        member = f'{sd._LABELME}data_dataset_voc/JPEGImages/{voc_id}.jpg'
        assert sd.sha256_bytes(data) == sd.SHA256['labelme'][member]
    photos = sorted(p.name for p in (sample_root / 'photos').iterdir())
    assert len(photos) == 9 and 'quokka.jpg' in photos and 'astronaut.png' in photos

    from pycocotools.coco import COCO
    coco = COCO(str(sample_root / 'coco' / 'annotations' / 'instances_sample.json'))
    assert len(coco.getImgIds()) == 4 and len(coco.getCatIds()) == 21
    quokka = coco.loadImgs(coco.getImgIds())[-1]
    assert quokka['file_name'] == 'quokka.jpg' and (quokka['width'], quokka['height']) == (960, 643)
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[quokka['id']]))[0]
    assert ann['bbox'] == [148.0, 50.0, 402.0, 592.0]
    assert coco.annToMask(ann).sum() > 0.5 * ann['area']
    for img in coco.loadImgs(coco.getImgIds()):
        assert (sample_root / 'coco' / 'images' / img['file_name']).is_file()


def test_sample_data_with_mmseg_and_mmdet_datasets(sample_root):
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import PascalVOCDataset
    voc = PascalVOCDataset(data_root=str(sample_root / 'voc'), data_prefix=dict(img_path='JPEGImages',
                           seg_map_path='SegmentationClass'), ann_file='ImageSets/Segmentation/val.txt',
                           pipeline=[])
    assert len(voc) == 3 and voc[0]['seg_map_path'].endswith('.png')
    classes = tuple(json.load(open(sample_root / 'coco/annotations/instances_sample.json'))['categories'][i]['name']
                    for i in range(21))
    det = CocoDataset(data_root=str(sample_root / 'coco'), ann_file='annotations/instances_sample.json',
                      data_prefix=dict(img='images/'), metainfo=dict(classes=classes), pipeline=[])
    assert len(det) == 4
    assert det[3]['instances'][0]['bbox_label'] == 20


def test_sample_data_checksum_mismatch_is_an_error(monkeypatch, tmp_path):
    from declip_mm.datasets import sample_data as sd
    member = 'imgaug/quokka.jpg'
    monkeypatch.setitem(sd.SHA256, 'imgaug', {member: '0' * 64})
    with pytest.raises(sd.SampleDataError, match='checksum mismatch for imgaug/quokka.jpg'):
        sd.read_members('imgaug')


def test_sample_data_unreachable_index_is_a_clear_error(monkeypatch, tmp_path):
    from declip_mm.datasets import sample_data as sd
    monkeypatch.setenv('DECLIP_CACHE', str(tmp_path))
    monkeypatch.setitem(sd.PACKAGES, 'imgaug', dict(requirement='imgaug==0.0.0.999', kind='wheel',
                                                     pattern='imgaug-0.0.0.999-*.whl'))
    with pytest.raises(sd.SampleDataError, match='could not download imgaug==0.0.0.999'):
        sd.download_package('imgaug')


TOY_TASK = '''
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from declip_mm.registry import DATASETS, METRICS, MODELS


@MODELS.register_module()
class ToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, inputs, target, mode='tensor'):
        pred = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((pred - target) ** 2).mean())
        return [dict(pred=p, target=t) for p, t in zip(pred, target)]


@DATASETS.register_module()
class ToyData(torch.utils.data.Dataset):
    def __init__(self, n=32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([[1.], [-2.], [0.5]]) + 0.3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], target=self.y[i])


@METRICS.register_module()
class ToyMSE(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results += [float((s['pred'] - s['target']) ** 2) for s in data_samples]

    def compute_metrics(self, results):
        return dict(mse=sum(results) / len(results))
'''

TOY_CONFIG = '''
default_scope = 'declip_mm'
custom_imports = dict(imports=['declip_mm', 'toy_task'], allow_failed_imports=False)
model = dict(type='ToyRegressor')
_loader = dict(batch_size=4, num_workers=0, dataset=dict(type='ToyData'), collate_fn=dict(type='default_collate'))
train_dataloader = dict(_loader, sampler=dict(type='DefaultSampler', shuffle=True))
test_dataloader = dict(_loader, sampler=dict(type='DefaultSampler', shuffle=False))
test_evaluator = dict(type='ToyMSE')
test_cfg = dict(type='TestLoop')
train_cfg = dict(by_epoch=False, max_iters=4)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
randomness = dict(seed=0)
'''


def _run_tool(tool, args, cwd):
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{cwd}')
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / tool), *args], capture_output=True, text=True,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_checkpoint_resume_and_test(tmp_path):
    from declip_mm.utils import load_checkpoint
    (tmp_path / 'toy_task.py').write_text(TOY_TASK)
    (tmp_path / 'toy_cfg.py').write_text(TOY_CONFIG)

    _run_tool('train.py', ['toy_cfg.py', '--work-dir', 'full'], tmp_path)
    full = load_checkpoint(str(tmp_path / 'full' / 'iter_4.pth'))
    assert full['meta']['iter'] == 4 and (tmp_path / 'full' / 'iter_2.pth').is_file()

    # a run stopped after iteration 2 and resumed ends with the uninterrupted run's weights
    _run_tool('train.py', ['toy_cfg.py', '--work-dir', 'part', '--cfg-options', 'train_cfg.max_iters=2'], tmp_path)
    log = _run_tool('train.py', ['toy_cfg.py', '--work-dir', 'part', '--resume'], tmp_path)
    assert 'resumed epoch: 0, iter: 2' in log
    resumed = load_checkpoint(str(tmp_path / 'part' / 'iter_4.pth'))
    for key, value in full['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][key], value, rtol=0, atol=0)
    assert set(resumed['optimizer']['state']) == set(full['optimizer']['state'])

    log = _run_tool('test.py', ['toy_cfg.py', 'full/iter_4.pth', '--work-dir', 'test', '--out', 'preds.pkl'],
                    tmp_path)
    assert 'mse:' in log and (tmp_path / 'preds.pkl').is_file()


def test_safe_checkpoint_loader_is_registered(tmp_path):
    """mmengine reads a checkpoint with numpy objects (as its own) on torch >= 2.6 through our safe loader."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from declip_mm.utils import load_checkpoint
    from declip_mm.utils.checkpoint_io import _mmengine_loader
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict={'w': torch.ones(2)}, meta=dict(hist=np.arange(3))), path)
    assert CheckpointLoader._get_checkpoint_loader(str(path)) is _mmengine_loader
    loaded = CheckpointLoader.load_checkpoint(str(path))
    assert loaded['meta']['hist'].tolist() == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint(str(tmp_path / 'missing.pth'))


PLAIN_MMDET_CONFIG = '''
default_scope = 'mmdet'
custom_imports = dict(imports=['declip_mm'], allow_failed_imports=False)
classes = {classes}
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN'), norm_eval=False, style='pytorch'),
    neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=32, start_level=0, add_extra_convs='on_input',
              num_outs=5),
    bbox_head=dict(type='RetinaHead', num_classes=len(classes), in_channels=32, stacked_convs=1, feat_channels=32,
                   anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                                         ratios=[1.0], strides=[8, 16, 32, 64, 128]),
                   bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4, target_stds=[1.0] * 4),
                   loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1), sampler=dict(type='PseudoSampler'), allowed_border=-1,
                   pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=20))
_data = dict(type='CocoDataset', data_root='{root}', ann_file='annotations/instances_sample.json',
             data_prefix=dict(img='images/'), metainfo=dict(classes=classes))
train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                        dataset=dict(_data, filter_cfg=dict(filter_empty_gt=True), pipeline=[
                            dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                            dict(type='Resize', scale=(256, 256), keep_ratio=True), dict(type='PackDetInputs')]))
test_dataloader = dict(batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(_data, test_mode=True, pipeline=[
                           dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 256), keep_ratio=True),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                                 'scale_factor'))]))
test_evaluator = dict(type='CocoMetric', ann_file='{root}/annotations/instances_sample.json', metric='bbox')
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100)
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-4))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
'''


@pytest.mark.slow
def test_train_and_test_tools_run_a_plain_mmdet_config(sample_root, tmp_path):
    classes = tuple(c['name'] for c in json.load(open(sample_root / 'coco/annotations/instances_sample.json'))[
        'categories'])
    (tmp_path / 'retinanet_sample.py').write_text(PLAIN_MMDET_CONFIG.format(classes=classes,
                                                                            root=sample_root / 'coco'))
    _run_tool('train.py', ['retinanet_sample.py', '--work-dir', 'det'], tmp_path)
    assert (tmp_path / 'det' / 'iter_2.pth').is_file()
    log = _run_tool('test.py', ['retinanet_sample.py', 'det/iter_2.pth', '--work-dir', 'det_test'], tmp_path)
    assert 'coco/bbox_mAP:' in log
