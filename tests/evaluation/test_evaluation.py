"""Training-free segmentation end to end on the sample VOC photos, metrics, background threshold,
synonyms, region classification."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image

from declip_mm.models import DeCLIPViT, TrainingFreeSegmentor
from declip_mm.models.segmentors import load_class_names

CLIP_NORM = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323])
TINY = 'DeCLIP-Tiny-ViT-16'


def segmentor_cfg(**kwargs):
    cfg = dict(type='TrainingFreeSegmentor',
               data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                                      **CLIP_NORM),
               backbone=dict(type='DeCLIPViT', model_name=TINY, trainable='none'),
               text_encoder=dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='simple', embedding_cache=False),
               class_names='voc21', logit_scale=80.0, bg_thresh=0.4)
    cfg.update(kwargs)
    return cfg


def voc_runner_cfg(sample_root, work_dir, test_cfg):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(10000, 160), keep_ratio=True),
                dict(type='declip_mm.LoadFullRangeAnnotations'), dict(type='PackSegInputs')]
    return Config(dict(
        default_scope='mmseg', work_dir=str(work_dir),
        model=segmentor_cfg(test_cfg=test_cfg),
        test_dataloader=dict(batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                             dataset=dict(type='PascalVOCDataset', data_root=str(sample_root / 'voc'),
                                          data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                                          ann_file='ImageSets/Segmentation/val.txt', pipeline=pipeline)),
        test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        test_cfg=dict(type='TestLoop'), default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        env_cfg=dict(dist_cfg=dict(backend='gloo')), randomness=dict(seed=0)))


@pytest.mark.parametrize('test_cfg', [dict(mode='slide', crop_size=(96, 96), stride=(32, 32)), dict(mode='whole')])
def test_training_free_segmentation_end_to_end(sample_root, tmp_path, test_cfg):
    runner = Runner.from_cfg(voc_runner_cfg(sample_root, tmp_path, test_cfg))
    metrics = runner.test()
    assert set(metrics) >= {'mIoU', 'aAcc'} and 0 <= metrics['mIoU'] <= 100
    # predictions come back at the original image size
    runner.model.eval()
    batch = next(iter(runner.test_dataloader))
    with torch.no_grad():
        out = runner.model.test_step(batch)[0]
    ori_h, ori_w = out.metainfo['ori_shape']
    assert out.pred_sem_seg.data.shape == (1, ori_h, ori_w)
    assert out.seg_logits.data.shape == (21, ori_h, ori_w)


def test_slide_equals_whole_when_one_window_covers_the_image():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    from mmseg.registry import MODELS
    model = MODELS.build(segmentor_cfg(test_cfg=dict(mode='whole'))).eval()
    x = torch.randn(1, 3, 96, 128)
    metas = [dict(ori_shape=(96, 128), img_shape=(96, 128), pad_shape=(96, 128), padding_size=[0, 0, 0, 0])]
    with torch.no_grad():
        whole = model.inference(x, metas)
        model.test_cfg = Config(dict(mode='slide', crop_size=(128, 128), stride=(64, 64)))
        slide = model.inference(x, metas)
    torch.testing.assert_close(slide, whole, rtol=0, atol=1e-5)


def test_window_output_is_the_cosine_with_every_query():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    from mmseg.registry import MODELS
    model = MODELS.build(segmentor_cfg(class_names=['sofa; couch', 'cat'], logit_scale=40.0, bg_thresh=0.0,
                                       test_cfg=dict(mode='whole'))).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        cosines = model.encode_decode(x, None)
        dense = model.backbone.extract_dense(x)                                 # (1, D, 4, 5), normalised
        text = model.text_embeddings                                            # sofa, couch, cat
        want = F.interpolate(torch.einsum('bdhw,sd->bshw', dense, text), size=(64, 80), mode='bilinear',
                             align_corners=False)
    assert model.class_names == ['sofa; couch', 'cat'] and text.shape[0] == 3 and model.out_channels == 3
    torch.testing.assert_close(cosines, want, rtol=0, atol=1e-5)


def test_background_threshold():
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    model = MODELS.build(segmentor_cfg(class_names=['background', 'cat', 'dog'], bg_thresh=0.5, logit_scale=1.0,
                                       test_cfg=dict(mode='whole'))).eval()
    # pixel (0,0): confident cat; (0,1): cat wins but only p=0.4; (1,0): dog 0.9; (1,1): background wins
    probs = torch.tensor([[[0.05, 0.3], [0.05, 0.5]], [[0.9, 0.4], [0.05, 0.3]], [[0.05, 0.3], [0.9, 0.2]]])
    logits = probs.log()[None]                             # softmax(log p) = p, one query per class
    sample = SegDataSample(metainfo=dict(ori_shape=(2, 2), img_shape=(2, 2), padding_size=[0, 0, 0, 0]))
    out = model.postprocess_result(logits, [sample])[0]
    torch.testing.assert_close(out.seg_logits.data, probs)
    assert out.pred_sem_seg.data[0].tolist() == [[1, 0], [2, 0]]
    model.bg_thresh = 0.0
    out = model.postprocess_result(logits, [SegDataSample(metainfo=sample.metainfo)])[0]
    assert out.pred_sem_seg.data[0].tolist() == [[1, 1], [2, 0]]


def test_iou_of_the_demo_equals_mmseg_iou_metric(sample_root):
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from declip_mm.apis import mean_iou
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for voc_id in ('2011_000003', '2011_000006', '2011_000025'):
        gt = np.array(Image.open(sample_root / 'voc' / 'SegmentationClass' / f'{voc_id}.png')).astype(np.int64)
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 21, gt.shape))
        pred[pred == 255] = 0
        gts.append(gt)
        preds.append(pred)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=tuple(f'c{i}' for i in range(21)))
    for gt, pred in zip(gts, preds):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(gt)[None])
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        metric.process([], [sample.to_dict()])
    want = metric.compute_metrics(metric.results)['mIoU']
    ours = mean_iou(preds, gts, num_classes=21)
    assert ours['mIoU'] == pytest.approx(want, abs=0.01)
    assert len(ours['per_image']) == 3


def test_class_name_files():
    for name, n in (('voc21', 21), ('voc20', 20), ('pc60', 60), ('pc59', 59), ('coco_object', 81),
                    ('coco_stuff', 171), ('cityscapes', 19), ('ade20k', 150), ('coco_panoptic', 133)):
        names = load_class_names(name)
        assert len(names) == n and all(names), name
    with pytest.raises(FileNotFoundError, match="'nope' is neither a file nor a bundled list"):
        load_class_names('nope')


def test_test_tool_restores_a_declip_checkpoint_mode(tmp_path):
    from declip_mm.engine.runner_setup import attach_checkpoint
    torch.manual_seed(0)
    DeCLIPViT(TINY, mode='qq', attn_scale=1.0).save_checkpoint(str(tmp_path / 'b.pth'))
    cfg = Config(dict(model=segmentor_cfg()))
    assert attach_checkpoint(cfg, str(tmp_path / 'b.pth')) == 'backbone'
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    assert (model.backbone.mode, model.backbone.attn_scale) == ('qq', 1.0)
    whole = {f'backbone.{k}': v for k, v in model.backbone.state_dict().items()}
    torch.save({'state_dict': whole, 'meta': {'hist': np.arange(2)}}, tmp_path / 'whole.pth')   # pickled: mmengine
    assert attach_checkpoint(cfg, str(tmp_path / 'whole.pth')) == 'load_from'
    torch.save({'state_dict': {}, 'meta': {'hist': np.arange(2)}}, tmp_path / 'empty.pth')
    with pytest.raises(ValueError, match='matches neither this model'):
        attach_checkpoint(cfg, str(tmp_path / 'empty.pth'))
    bad = Config(dict(model=dict(segmentor_cfg(), backbone=dict(type='DeCLIPViT', model_name='DeCLIP-Tiny-EVA02-16'))))
    with pytest.raises(ValueError, match="holds a 'DeCLIP-Tiny-ViT-16' backbone"):
        attach_checkpoint(bad, str(tmp_path / 'b.pth'))


# ------------------------------------------------------------------ region classification
def test_region_metric_on_hand_made_cases():
    from declip_mm.evaluation import RegionClassificationMetric
    from mmengine.structures import BaseDataElement
    metric = RegionClassificationMetric()
    # classes 0, 1 are things, 2 is stuff; top-5 lists per region
    regions = [  # (label, is_thing, ranked predictions)
        (0, True, [0, 1, 2, 3, 4]), (0, True, [1, 0, 2, 3, 4]),      # class 0: top1 1/2, top5 2/2
        (1, True, [2, 3, 4, 5, 6]),                                    # class 1: top1 0, top5 0
        (2, False, [2, 0, 1, 3, 4]), (2, False, [2, 1, 0, 3, 4]), (2, False, [0, 1, 3, 4, 2])]  # 2/3, 3/3
    sample = BaseDataElement(gt_labels=torch.tensor([r[0] for r in regions]),
                             is_thing=torch.tensor([r[1] for r in regions]),
                             pred_topk=torch.tensor([r[2] for r in regions]))
    metric.process({}, [sample])
    m = metric.compute_metrics(metric.results)
    assert m['thing_top1'] == pytest.approx(100 * (0.5 + 0) / 2)
    assert m['thing_top5'] == pytest.approx(100 * (1 + 0) / 2)
    two_thirds = float(np.float16(2 / 3))                 # per-class accuracies go through fp16, as the reference
    assert m['stuff_top1'] == pytest.approx(100 * two_thirds)
    assert m['stuff_top5'] == pytest.approx(100.0)
    assert m['all_top1'] == pytest.approx(100 * (0.5 + 0 + two_thirds) / 3)
    assert m['num_regions'] == 6


def make_panoptic(sample_root, out):
    """A COCO-panoptic-format copy of the sample COCO set (things: the sample's instances; stuff: 'ground')."""
    from pycocotools.coco import COCO
    coco = COCO(str(sample_root / 'coco/annotations/instances_sample.json'))
    cats = [dict(id=c['id'], name=c['name'], isthing=1) for c in coco.loadCats(coco.getCatIds())]
    cats.append(dict(id=200, name='ground', isthing=0))
    (out / 'pan').mkdir(parents=True)
    images, anns = [], []
    for img in coco.loadImgs(coco.getImgIds()):
        ids = np.zeros((img['height'], img['width']), np.int64)
        segments = []
        stuff_id = 1000
        ids[:] = stuff_id
        for a in coco.loadAnns(coco.getAnnIds(imgIds=[img['id']])):
            ids[coco.annToMask(a) > 0] = a['id']
        for seg_id in np.unique(ids):
            ys, xs = np.nonzero(ids == seg_id)
            cat = 200 if seg_id == stuff_id else coco.loadAnns([int(seg_id)])[0]['category_id']
            segments.append(dict(id=int(seg_id), category_id=cat, iscrowd=0, area=len(xs),
                                 bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                       int(ys.max() - ys.min() + 1)]))
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        name = img['file_name'].replace('.jpg', '.png')
        Image.fromarray(png).save(out / 'pan' / name)
        images.append(img)
        anns.append(dict(image_id=img['id'], file_name=name, segments_info=segments))
    (out / 'panoptic.json').write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return [c['name'] for c in sorted(cats, key=lambda c: c['id'])]


@pytest.mark.parametrize('pooling', ['box', 'mask'])
def test_region_classification_end_to_end(sample_root, tmp_path, pooling):
    names = make_panoptic(sample_root, tmp_path)
    cfg = Config.fromfile('configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py')
    cfg.model.backbone = dict(type='DeCLIPViT', model_name=TINY, trainable='none')
    cfg.model.text_encoder = dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='none', embedding_cache=False)
    cfg.model.class_names = names
    cfg.model.pooling = pooling
    cfg.test_pipeline[3].size = 256
    cfg.test_dataloader.update(num_workers=0, dataset=dict(
        type='COCOPanopticRegionDataset', data_root='', ann_file=str(tmp_path / 'panoptic.json'),
        data_prefix=dict(img=str(sample_root / 'coco/images'), seg=str(tmp_path / 'pan')),
        pipeline=cfg.test_pipeline, test_mode=True))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.env_cfg = dict(dist_cfg=dict(backend='gloo'))
    metrics = Runner.from_cfg(cfg).test()
    assert metrics['region/num_regions'] == 12 + 1 + 4        # 13 instances (12 VOC + quokka) + a stuff region each
    for key in ('thing_top1', 'thing_top5', 'stuff_top1', 'all_top5'):
        value = metrics[f'region/{key}']
        assert 0 <= value <= 100 and not math.isnan(value)


@pytest.mark.slow
def test_eval_all_benchmarks_script_writes_a_summary(sample_root, tmp_path):
    """tools/eval_training_free.py runs tools/test.py per benchmark (a plain mmseg-scope config) and summarises."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    cfgs = tmp_path / 'cfgs'
    cfgs.mkdir()
    (cfgs / 'tiny_voc21.py').write_text(f'''
_base_ = ['{repo}/configs/segmentation/training-free_declip-eva02-b16_voc21.py']
model = dict(backbone=dict(model_name='{TINY}', pretrained=None),
             text_encoder=dict(model_name='{TINY}', pretrained=None, templates='simple', embedding_cache=False),
             test_cfg=dict(crop_size=(96, 96), stride=(64, 64)))
test_dataloader = dict(num_workers=0, dataset=dict(data_root='{sample_root / "voc"}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(10000, 128), keep_ratio=True),
              dict(type='declip_mm.LoadFullRangeAnnotations'), dict(type='PackSegInputs')]))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
''')
    torch.manual_seed(0)
    DeCLIPViT(TINY, mode='csa').save_checkpoint(str(tmp_path / 'tiny.pth'))
    proc = subprocess.run([sys.executable, str(repo / 'tools/eval_training_free.py'), str(tmp_path / 'tiny.pth'),
                           '--configs-dir', str(cfgs), '--prefix', 'tiny_', '--benchmarks', 'voc21', 'ade20k',
                           '--out', str(tmp_path / 'out')], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    voc21 = summary['results']['voc21']
    assert voc21['status'] == 'ok' and voc21['metric'] == 'mIoU' and 0 <= voc21['value'] <= 100
    assert summary['results']['ade20k']['status'].startswith('missing config')
    assert summary['complete'] is False and summary['average'] == voc21['value']
    assert '(partial)' in (tmp_path / 'out' / 'summary.md').read_text()


def test_text_and_image_towers_must_match():
    from declip_mm.models import RegionClassifier
    with pytest.raises(ValueError, match="'DeCLIP-Tiny-EVA02-16' and backbone 'DeCLIP-Tiny-ViT-16' must be the same"):
        RegionClassifier(backbone=dict(type='DeCLIPViT', model_name=TINY),
                         text_encoder=dict(type='OpenCLIPTextEncoder', model_name='DeCLIP-Tiny-EVA02-16',
                                           templates='none', embedding_cache=False), class_names=['cat'])
