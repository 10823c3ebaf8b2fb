"""F-ViT on mmdet 3.x with a frozen DeCLIP backbone, on tiny towers and the sample COCO set; the head's
classification, loss and test-time fusion against tests/reference/fvit_ref.py (written from CLIPSelf's F-ViT
@1c7fe9c without reading declip_mm); OV-COCO files and metric; DeCLIPViT + SimplePyramid in a stock mmdet config."""
import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from reference import fvit_ref

REPO = Path(__file__).resolve().parents[3]
TINY = 'DeCLIP-Tiny-EVA02-16'
NOVEL = {'cat', 'dog', 'quokka'}
SIZE = 128
BN = dict(type='BN', requires_grad=True)


@pytest.fixture(scope='module')
def embeddings(sample_root, tmp_path_factory):
    from tools.dump_class_embeddings import dump
    path = tmp_path_factory.mktemp('emb') / 'sample_tiny.pt'
    torch.manual_seed(0)
    names = dump(str(path), TINY, None, str(sample_root / 'coco/annotations/instances_sample.json'))
    return path, names


def tiny_fvit_cfg(sample_root, embeddings, work_dir, **head):
    """The OV-COCO B/16 config with tiny towers, the sample COCO set at 128 px, BN and plain fp32 optimisation."""
    path, names = embeddings
    cfg = Config.fromfile(str(REPO / 'configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py'))
    cfg.model.data_preprocessor.pad_size_divisor = SIZE
    cfg.model.backbone.update(model_name=TINY, pretrained=None, out_indices=(0, 1, 1, 2))
    cfg.model.neck = [dict(type='SimplePyramid', in_channels=64, norm_cfg=BN),
                      dict(type='FPN', in_channels=[64] * 4, out_channels=32, num_outs=5, norm_cfg=BN)]
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    rh = cfg.model.roi_head
    rh.bbox_roi_extractor.out_channels = 32
    rh.vlm_roi_extractor.out_channels = 32
    rh.bbox_head.update(dict(dict(in_channels=32, conv_out_channels=32, fc_out_channels=32, norm_cfg=BN,
                                  num_classes=len(names)), **head))
    rh.bbox_head.cls_predictor_cfg.update(embeddings=str(path), class_names=names)
    rh.bbox_head.loss_cls.class_weight = [0.0 if n in NOVEL else 1.0 for n in names] + [0.6]
    meta = dict(classes=tuple(names), base_classes=tuple(n for n in names if n not in NOVEL),
                novel_classes=tuple(n for n in names if n in NOVEL))
    ann = str(sample_root / 'coco/annotations/instances_sample.json')
    base_only = json.loads(Path(ann).read_text())                # training sees base annotations only
    novel_ids = {c['id'] for c in base_only['categories'] if c['name'] in NOVEL}
    base_only['annotations'] = [a for a in base_only['annotations'] if a['category_id'] not in novel_ids]
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    (Path(work_dir) / 'train_base.json').write_text(json.dumps(base_only))
    for loader, file in ((cfg.train_dataloader, str(Path(work_dir) / 'train_base.json')), (cfg.val_dataloader, ann)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root='', metainfo=meta, ann_file=file,
                              data_prefix=dict(img=str(sample_root / 'coco/images') + '/'))
    cfg.train_dataloader.dataset.pipeline[2].scale = (SIZE, SIZE)
    cfg.train_dataloader.dataset.pipeline[3].crop_size = (SIZE, SIZE)
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=True, min_size=0)
    cfg.val_dataloader.dataset.pipeline[1].scale = (SIZE, SIZE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = cfg.test_evaluator = dict(type='OVCocoMetric', ann_file=ann, metric='bbox')
    cfg.optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
                             clip_grad=dict(max_norm=1.0, norm_type=2))
    cfg.val_cfg, cfg.test_cfg = dict(type='ValLoop'), dict(type='TestLoop')
    cfg.auto_scale_lr.enable = False
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    return cfg


def batch_losses(model, batch, seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    return {k: float(sum(v) if isinstance(v, list) else v) for k, v in losses.items() if 'loss' in k}


@pytest.mark.slow
def test_fvit_trains_keeps_the_backbone_frozen_and_predicts(sample_root, embeddings, tmp_path):
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path / 'run')
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 1
    b16 = Config.fromfile(str(REPO / 'configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py'))
    cfg.default_hooks.checkpoint = b16.default_hooks.checkpoint          # the config's own checkpointing
    runner = Runner.from_cfg(cfg)
    model = runner.model
    frozen = copy.deepcopy(model.backbone.state_dict())
    runner.train()                                               # the Runner's loop, augmentation included
    # every epoch evaluated and checkpointed, none selected on the evaluation set: the last epoch is the result
    saved = sorted(p.name for p in (tmp_path / 'run').glob('*.pth'))
    assert saved == ['epoch_1.pth', 'epoch_2.pth'], saved
    assert (tmp_path / 'run' / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')
    # then a few iterations on one fixed batch: the loss goes down
    batch = next(iter(runner.train_dataloader))
    before = batch_losses(model, batch)
    for step in range(12):
        torch.manual_seed(step)
        model.train_step(copy.deepcopy(batch), runner.optim_wrapper)
    after = batch_losses(model, batch)
    assert sum(after.values()) < 0.9 * sum(before.values()), (before, after)
    assert after['loss_cls'] < before['loss_cls'] and after['loss_rpn_cls'] < before['loss_rpn_cls'], (before, after)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    temperature = model.roi_head.bbox_head.fc_cls.temperature
    assert temperature.requires_grad and float(temperature) != 50.0      # learned (and weight-decayed)

    metrics = runner.test()
    assert {'coco/novel_ap50', 'coco/base_ap50', 'coco/bbox_mAP_50'} <= set(metrics)
    model.eval()
    with torch.no_grad():
        out = model.test_step(next(iter(runner.test_dataloader)))
    pred = out[0].pred_instances
    assert pred.bboxes.shape[-1] == 4 and len(pred) <= 100
    assert (pred.scores >= 0.01).all() and (pred.scores <= 1).all() and (pred.labels < len(embeddings[1])).all()


def test_fusion_and_logits_equal_clipself(sample_root, embeddings, tmp_path):
    """The eval-time scores of the real head on real proposals against fvit_ref.reference_fused_scores, with the
    CLIP map pooled independently (torchvision roi_align at the proposals)."""
    from torchvision.ops import roi_align

    from declip_mm.models.detectors import FeatureMaps
    from mmdet.structures.bbox import bbox2roi
    init_default_scope('mmdet')
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path)
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    from mmdet.registry import DATASETS
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    data = model.data_preprocessor(dict(inputs=[dataset[0]['inputs']], data_samples=[dataset[0]['data_samples']]))
    head = model.roi_head.bbox_head
    seen = {}
    head.fc_cls.register_forward_hook(lambda m, args, out: seen.update(e=args[0], logits=out))
    with torch.no_grad():
        outputs = model.backbone(data['inputs'])
        feats = model.neck(outputs)
        proposals = model.rpn_head.predict(feats, data['data_samples'], rescale=False)
        rois = bbox2roi([p.bboxes for p in proposals])
        vlm = F.normalize(outputs[-1], dim=1)
        ours = model.roi_head._bbox_forward(FeatureMaps(feats, vlm), rois)['cls_score']
    assert len(rois) > 50
    text = head.fc_cls.text
    logits = fvit_ref.reference_cls_logits(seen['e'], text, head.fc_cls.temperature.detach())
    torch.testing.assert_close(seen['logits'], logits, rtol=0, atol=1e-4)
    pooled = roi_align(vlm, rois, output_size=1, spatial_scale=1 / 16, sampling_ratio=0, aligned=True).flatten(1)
    names = embeddings[1]
    novel = torch.tensor([n in NOVEL for n in names] + [False])
    want = fvit_ref.reference_fused_scores(logits, pooled, text, 75.0, 0.1, 0.8, novel)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)
    assert (ours.sum(-1) < 1 + 1e-6).all()                      # no renormalisation


def test_classification_loss_equals_clipself():
    from declip_mm.datasets.ov_detection import ov_coco_class_weight
    from declip_mm.models.losses import OVCrossEntropyLoss
    g = torch.Generator().manual_seed(0)
    weight = ov_coco_class_weight()
    assert tuple(weight) == fvit_ref.OVCOCO_CLASS_WEIGHT
    scores = torch.randn(40, 66, generator=g) * 5
    base_or_bg = [i for i, w in enumerate(weight) if w > 0]
    labels = torch.tensor(base_or_bg)[torch.randint(len(base_or_bg), (40,), generator=g)]
    label_weights = torch.ones(40)
    label_weights[::7] = 0
    loss = OVCrossEntropyLoss(class_weight=weight)
    ours = loss(scores, labels, label_weights, avg_factor=float((label_weights > 0).sum()))
    want = fvit_ref.reference_custom_ce(scores, labels, weight, label_weights)
    assert ours.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r'training targets of classes \[4\], whose weight is 0'):
        loss(scores, torch.full((40,), 4), label_weights, avg_factor=33.0)
    plain = torch.nn.functional.cross_entropy(scores, labels, weight=torch.tensor(weight), reduction='none')
    assert abs(ours.item() - float((plain * label_weights).sum() / (label_weights > 0).sum())) > 1e-3  # -inf matters


def test_lvis_class_weights_from_image_counts(tmp_path):
    from declip_mm.models.losses import OVCrossEntropyLoss
    cats = [dict(id=3, name='c', image_count=0), dict(id=1, name='a', image_count=5), dict(id=2, name='b', image_count=0)]
    (tmp_path / 'info.json').write_text(json.dumps(cats))
    loss = OVCrossEntropyLoss(class_weight=str(tmp_path / 'info.json'), bg_weight=0.9)
    assert loss.class_weight == [1.0, 0.0, 0.0, 0.9]
    with pytest.raises(ValueError, match='give bg_weight'):
        OVCrossEntropyLoss(class_weight=str(tmp_path / 'info.json'))


def test_class_embedding_files_are_checked_against_the_dataset(embeddings, tmp_path):
    from declip_mm.models.text.embedding_file import load_class_embeddings
    path, names = embeddings
    text = load_class_embeddings(str(path), names)
    assert text.shape == (len(names) + 1, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(len(names) + 1))
    swapped = [names[1], names[0]] + names[2:]
    with pytest.raises(ValueError, match='differ from the dataset'):
        load_class_embeddings(str(path), swapped)
    # CLIPSelf's format: name -> vector (order taken from the dataset)
    data = torch.load(path)
    torch.save({n: e for n, e in zip(data['names'], data['embeddings'])}, tmp_path / 'clipself.pt')
    torch.testing.assert_close(load_class_embeddings(str(tmp_path / 'clipself.pt'), swapped)[:2], text[[1, 0]])
    with pytest.raises(KeyError, match="no embedding for 1 classes: \\['zebra'\\]"):
        load_class_embeddings(str(tmp_path / 'clipself.pt'), names + ['zebra'])


def test_mismatches_fail_clearly(sample_root, embeddings, tmp_path):
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path, fc_out_channels=48)
    with pytest.raises(ValueError, match='dimension 32, but the class branch .* 48-d; set fc_out_channels'):
        MODELS.build(cfg.model)
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path)
    cfg.model.roi_head.vlm_roi_extractor.featmap_strides = [14]
    with pytest.raises(ValueError, match=r'featmap_strides=\[14\], but the CLIP map of DeCLIP-Tiny-EVA02-16 has stride 16'):
        MODELS.build(cfg.model)
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path)
    model = MODELS.build(cfg.model).eval()
    from mmengine.structures import InstanceData
    proposals = [InstanceData(bboxes=torch.tensor([[0.0, 0, 8, 8]]))]
    with pytest.raises(ValueError, match='predicts with the CLIP map'):   # a RoI head fed without the map
        model.roi_head.predict_bbox(tuple(torch.zeros(1, 32, 32 // s, 32 // s) for s in (4, 8, 16, 32)),
                                    [dict(img_shape=(32, 32))], proposals, model.test_cfg.rcnn)
    # a json whose categories are not in the order of classes: labels would pair with the wrong embeddings
    data = json.loads((sample_root / 'coco/annotations/instances_sample.json').read_text())
    data['categories'] = data['categories'][::-1]
    (tmp_path / 'reversed.json').write_text(json.dumps(data))
    from mmdet.registry import DATASETS
    with pytest.raises(ValueError, match="label 0 would be the category 'quokka' but classes\\[0\\] is 'aeroplane'"):
        DATASETS.build(dict(cfg.val_dataloader.dataset, ann_file=str(tmp_path / 'reversed.json')))


def test_dump_tool_needs_the_original_weights(tmp_path):
    from tools.dump_class_embeddings import main
    with pytest.raises(SystemExit):
        main([str(tmp_path / 'x.pt'), '--model-name', TINY, '--classes', 'coco_80'])


def test_last_tap_mode_changes_only_the_fourth_tap():
    from declip_mm.models import DeCLIPViT
    torch.manual_seed(0)
    a = DeCLIPViT(TINY, mode='csa', attn_scale=1.0, out_indices=(0, 1, 2), trainable='none')
    b = DeCLIPViT(TINY, mode='csa', attn_scale=1.0, out_indices=(0, 1, 2), trainable='none', last_tap_mode='maskclip')
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    out_a, out_b = a(x), b(x)
    for i in (0, 1, 3):                                          # taps 0, 1 and the dense CLIP map agree
        torch.testing.assert_close(out_a[i], out_b[i], rtol=0, atol=0)
    assert not torch.allclose(out_a[2], out_b[2])
    with torch.no_grad():
        maskclip = a.forward_features(x, mode='maskclip', out_indices=(2,)).intermediates[0]
    torch.testing.assert_close(out_b[2], maskclip, rtol=0, atol=1e-6)
    assert out_a[0].grad_fn is None and not a.train().training   # frozen: no graph, always eval


def test_ov_coco_split_and_constants_equal_the_references():
    from declip_mm.datasets.ov_detection import COCO_BASE_48, COCO_NOVEL_17, build_ov_coco, ov_coco_65
    assert ov_coco_65() == fvit_ref.COCO_65
    assert set(COCO_BASE_48) == set(fvit_ref.COCO_BASE_48) and set(COCO_NOVEL_17) == set(fvit_ref.COCO_NOVEL_17)
    from mmdet.datasets import CocoDataset
    ids = {**fvit_ref.COCO_65_IDS, 'traffic light': 10, 'dining table': 67, 'hair drier': 89}
    names = [n for n in CocoDataset.METAINFO['classes'] if n in ids]
    categories = [dict(id=ids[n], name=n, supercategory='x') for n in names]
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(60):
        images.append(dict(id=i, file_name=f'{i:012d}.jpg', width=640, height=480))
        for k in range(int(rng.integers(0, 4))):
            cat = categories[int(rng.integers(len(categories)))]
            annotations.append(dict(id=len(annotations) + 1, image_id=i, category_id=cat['id'], bbox=[1, 2, 30, 40],
                                    area=1200, iscrowd=int(rng.random() < 0.2)))
    instances = dict(info={}, licenses=[], images=images, annotations=annotations, categories=categories)
    for split in ('train_seen_2_65_cat', 'val_all_2'):
        ours = build_ov_coco(copy.deepcopy(instances), split)
        want = fvit_ref.reference_ovcoco_split(copy.deepcopy(instances), split)
        assert [c['id'] for c in ours['categories']] == [c['id'] for c in want['categories']]
        assert ours['annotations'] == want['annotations'] and ours['images'] == want['images']
        assert len(ours['categories']) == 65
    assert any(a['iscrowd'] for a in ours['annotations'])


def test_ov_coco_metric_on_hand_made_detections(tmp_path):
    """One base class detected perfectly (AP50 1); a novel class with two objects, one found and one false
    positive scored below it (precision 1 up to recall 0.5: AP50 = 51/101 on COCO's 101 recall points)."""
    from mmdet.evaluation import OVCocoMetric
    gt = dict(images=[dict(id=1, file_name='a.jpg', width=200, height=200)],
              categories=[dict(id=1, name='person'), dict(id=17, name='cat')],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 50, 50], area=2500, iscrowd=0),
                           dict(id=2, image_id=1, category_id=17, bbox=[100, 100, 40, 40], area=1600, iscrowd=0),
                           dict(id=3, image_id=1, category_id=17, bbox=[10, 120, 40, 40], area=1600, iscrowd=0)])
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    metric = OVCocoMetric(ann_file=str(tmp_path / 'gt.json'), metric='bbox')
    metric.dataset_meta = dict(classes=('person', 'cat'), base_classes=('person',), novel_classes=('cat',))
    pred = dict(bboxes=torch.tensor([[10., 10, 60, 60], [100., 100, 140, 140], [150., 10, 190, 50]]),
                scores=torch.tensor([0.9, 0.8, 0.7]), labels=torch.tensor([0, 1, 1]))
    metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=pred)])
    result = metric.compute_metrics(metric.results)
    assert result['base_ap50'] == pytest.approx(1.0)
    assert result['novel_ap50'] == pytest.approx(51 / 101, abs=1e-6)


def test_detection_configs_follow_clipself():
    root = REPO / 'configs/detection'
    b16 = Config.fromfile(str(root / 'fvit_declip-eva02-b16_ov-coco-640_3e.py'))
    head = b16.model.roi_head.bbox_head
    ref = fvit_ref.OVCOCO_B16_HEAD
    assert (head.vlm_temperature, head.alpha, head.beta, head.fc_out_channels, head.num_classes) == \
        (ref['vlm_temperature'], ref['alpha'], ref['beta'], ref['fc_out_channels'], ref['num_classes'])
    assert head.cls_predictor_cfg.temperature == ref['learned_temperature'] and head.cls_predictor_cfg.learn_temperature
    rcnn = b16.model.test_cfg.rcnn
    assert (rcnn.score_thr, rcnn.nms.iou_threshold, rcnn.max_per_img) == \
        (ref['score_thr'], ref['nms_iou'], ref['max_per_img'])
    assert tuple(head.loss_cls.class_weight) == fvit_ref.OVCOCO_CLASS_WEIGHT
    assert tuple(b16.metainfo.classes) == fvit_ref.COCO_65 == tuple(head.cls_predictor_cfg.class_names)
    assert b16.model.data_preprocessor.mean == [123.675, 116.28, 103.53]         # ImageNet statistics into EVA
    assert (b16.model.backbone.mode, b16.model.backbone.attn_scale, b16.model.backbone.trainable) == ('csa', 1.0, 'none')
    assert tuple(b16.model.backbone.out_indices) == (3, 5, 7, 11)
    opt = b16.optim_wrapper
    assert (opt.type, opt.loss_scale, opt.optimizer.lr, opt.optimizer.weight_decay, opt.clip_grad.max_norm) == \
        ('AmpOptimWrapper', 512.0, 1e-4, 0.1, 1.0)
    assert 'paramwise_cfg' not in opt and b16.auto_scale_lr == dict(enable=True, base_batch_size=64)
    assert b16.train_cfg.max_epochs == 3 and b16.train_dataloader.batch_size == 8
    l14 = Config.fromfile(str(root / 'fvit_declip-eva02-l14-336_ov-coco-896_3e.py'))
    assert tuple(l14.model.backbone.out_indices) == (6, 10, 14, 23)
    assert l14.model.rpn_head.anchor_generator.strides == [3.5, 7, 14, 28, 56]
    assert l14.model.roi_head.vlm_roi_extractor.featmap_strides == [14]
    assert l14.model.roi_head.bbox_head.fc_out_channels == 768 == l14.model.roi_head.vlm_roi_extractor.out_channels
    assert l14.val_dataloader.dataset.pipeline[1].scale == (896, 896) == (l14.model.data_preprocessor.pad_size_divisor,) * 2


@pytest.mark.slow
def test_declip_backbone_drops_into_a_stock_mmdet_config(sample_root, tmp_path):
    """mmdet's own Faster R-CNN R-50 FPN config, its backbone replaced by DeCLIPViT + SimplePyramid (the snippet of
    docs/detection.md), trained two iterations and used to predict."""
    import mmdet
    stock = Path(mmdet.__file__).parent / '.mim/configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
    names = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable',
             'dog', 'horse', 'motorbike', 'person', 'potted plant', 'sheep', 'sofa', 'train', 'tv/monitor', 'quokka')
    (tmp_path / 'cfg.py').write_text(f'''
_base_ = ['{stock}']
custom_imports = dict(imports=['declip_mm'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='DeCLIPViT', model_name='{TINY}', pretrained=None, out_indices=(0, 1, 1, 2),
                  trainable='none'),
    neck=[dict(type='SimplePyramid', in_channels=64, norm_cfg=dict(type='BN')),
          dict(type='FPN', in_channels=[64, 64, 64, 64], out_channels=256, num_outs=5)],
    data_preprocessor=dict(pad_size_divisor=32),
    roi_head=dict(bbox_head=dict(num_classes={len(names)})))
metainfo = dict(classes={names!r})
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root='', metainfo=metainfo, ann_file='{sample_root}/coco/annotations/instances_sample.json',
    data_prefix=dict(img='{sample_root}/coco/images/'), filter_cfg=dict(filter_empty_gt=True, min_size=0),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
              dict(type='Resize', scale=(160, 160), keep_ratio=True), dict(type='PackDetInputs')]))
train_cfg = dict(max_epochs=1, val_interval=10)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
env_cfg = dict(dist_cfg=dict(backend='gloo'))
default_hooks = dict(logger=dict(interval=1))
''')
    cfg = Config.fromfile(str(tmp_path / 'cfg.py'))
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    model = runner.model.eval()
    batch = next(iter(runner.train_dataloader))
    with torch.no_grad():
        out = model.test_step(batch)
    assert len(out) == 2 and out[0].pred_instances.bboxes.shape[-1] == 4


@pytest.mark.slow
def test_lvis_recipe_trains_and_predicts_masks(sample_root, embeddings, tmp_path):
    """The OV-LVIS B/16 config's model (norm RPN, class-agnostic mask head, json class weights) with tiny towers, on the
    sample COCO photos with their masks."""
    path, names = embeddings
    info = [dict(id=i + 1, name=n, image_count=0 if n in NOVEL else 3) for i, n in enumerate(names)]
    (tmp_path / 'info.json').write_text(json.dumps(info))
    cfg = tiny_fvit_cfg(sample_root, embeddings, tmp_path / 'run')
    lvis = Config.fromfile(str(REPO / 'configs/detection/fvit_declip-eva02-b16_ov-lvis-1024_48e.py'))
    assert lvis.model.rpn_head.type == 'NormRPNHead' and lvis.model.roi_head.mask_head.class_agnostic
    cfg.model.rpn_head.update(type='NormRPNHead', norm_cfg=BN)
    cfg.model.roi_head.update(mask_roi_extractor=dict(lvis.model.roi_head.mask_roi_extractor, out_channels=32),
                              mask_head=dict(lvis.model.roi_head.mask_head, in_channels=32, conv_out_channels=32,
                                             num_classes=len(names), norm_cfg=BN))
    cfg.model.roi_head.bbox_head.loss_cls = dict(type='OVCrossEntropyLoss', class_weight=str(tmp_path / 'info.json'),
                                                 bg_weight=0.9)
    cfg.model.train_cfg.rcnn.update(assigner=dict(cfg.model.train_cfg.rcnn.assigner, match_low_quality=True),
                                    mask_size=28)
    cfg.model.test_cfg.rcnn = lvis.model.test_cfg.rcnn
    cfg.model.data_preprocessor.pad_mask = True
    cfg.train_dataloader.dataset.pipeline[1] = dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
    cfg.val_dataloader.dataset.pipeline[2] = dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg.update(max_epochs=1, val_interval=100)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.eval()
    with torch.no_grad():
        out = model.test_step(next(iter(runner.test_dataloader)))
    pred = out[0].pred_instances
    assert pred.masks.shape[1:] == out[0].ori_shape and len(pred) <= 300 and (pred.scores >= 1e-4).all()


def test_lvis_metric_reports_rare_ap(tmp_path):
    """LVISMetric (the lvis package of the locked stack, through OVLVISMetric) on a hand-made case: the rare
    class found, the frequent class missed."""
    from declip_mm.evaluation import OVLVISMetric
    gt = dict(images=[dict(id=1, width=200, height=200, neg_category_ids=[], not_exhaustive_category_ids=[],
                           coco_url='a.jpg')],
              categories=[dict(id=1, name='aerosol_can', frequency='r', synonyms=[], image_count=1, instance_count=1),
                          dict(id=2, name='apple', frequency='f', synonyms=[], image_count=1, instance_count=1)],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 50, 50], area=2500,
                                segmentation=[[10, 10, 60, 10, 60, 60, 10, 60]]),
                           dict(id=2, image_id=1, category_id=2, bbox=[100, 100, 50, 50], area=2500,
                                segmentation=[[100, 100, 150, 100, 150, 150, 100, 150]])])
    (tmp_path / 'lvis.json').write_text(json.dumps(gt))
    metric = OVLVISMetric(ann_file=str(tmp_path / 'lvis.json'), metric='bbox')
    metric.dataset_meta = dict(classes=('aerosol_can', 'apple'))
    pred = dict(bboxes=torch.tensor([[10., 10, 60, 60], [0., 150, 20, 170]]), scores=torch.tensor([0.9, 0.8]),
                labels=torch.tensor([0, 1]))
    metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=pred)])
    result = metric.compute_metrics(metric.results)
    assert result['bbox_APr'] == pytest.approx(1.0) and result['bbox_APf'] == pytest.approx(0.0)
    assert 'float' not in np.__dict__ or np.float is float                 # the alias is not left behind


def test_ov_lvis_training_file_and_class_weights(tmp_path):
    """Rare annotations removed, 1203-style category list kept, image counts recounted: the json the loss reads."""
    from declip_mm.datasets.ov_detection import build_ov_lvis
    from declip_mm.models.losses import OVCrossEntropyLoss
    from tools.dataset_converters.ov_lvis import convert
    cats = [dict(id=1, name='a', frequency='f'), dict(id=2, name='b', frequency='r'), dict(id=3, name='c', frequency='c')]
    anns = [dict(id=i + 1, image_id=img, category_id=cat) for i, (img, cat) in enumerate(
        [(1, 1), (1, 2), (2, 2), (2, 3), (3, 1), (3, 1)])]
    train = dict(images=[dict(id=i) for i in (1, 2, 3)], annotations=anns, categories=cats)
    out = build_ov_lvis(train)
    assert [a['category_id'] for a in out['annotations']] == [1, 3, 1, 1] and len(out['images']) == 3
    assert [(c['id'], c['image_count'], c['instance_count']) for c in out['categories']] == [(1, 2, 3), (2, 0, 0), (3, 1, 1)]
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'lvis_v1_train.json').write_text(json.dumps(train))
    assert convert(str(tmp_path)) == dict(annotations=4, categories=3, novel=1)
    loss = OVCrossEntropyLoss(class_weight=str(tmp_path / 'annotations/lvis_v1_train_cat_norare_info.json'), bg_weight=0.9)
    assert loss.class_weight == [1.0, 0.0, 1.0, 0.9]
    with pytest.raises(ValueError, match='marks no category as rare'):
        build_ov_lvis(dict(train, categories=[dict(c, frequency='f') for c in cats]))


def test_lvis_configs_follow_clipself():
    root = REPO / 'configs/detection'
    b16 = Config.fromfile(str(root / 'fvit_declip-eva02-b16_ov-lvis-1024_48e.py'))
    head = b16.model.roi_head.bbox_head
    assert (head.num_classes, head.vlm_temperature, head.alpha, head.beta, head.loss_cls.bg_weight) == \
        (1203, 50.0, 0.1, 0.6, 0.9)
    info = 'data/lvis_v1/annotations/lvis_v1_train_cat_norare_info.json'   # the annotation categories (official names)
    assert head.cls_predictor_cfg.class_names == info == head.loss_cls.class_weight
    assert b16.train_dataloader.dataset.type == b16.val_dataloader.dataset.type == 'OVLVISV1Dataset'
    rcnn = b16.model.test_cfg.rcnn
    assert (rcnn.score_thr, rcnn.nms.iou_threshold, rcnn.max_per_img, rcnn.mask_thr_binary) == (1e-4, 0.5, 300, 0.5)
    assert b16.train_cfg.max_epochs == 48 and b16.param_scheduler[1].milestones == [32, 44]
    assert b16.val_evaluator.type == 'OVLVISMetric' and b16.val_dataloader.dataset.pipeline[1].scale == (1024, 1024)
    l14 = Config.fromfile(str(root / 'fvit_declip-eva02-l14-336_ov-lvis-896_48e.py'))
    assert l14.model.roi_head.bbox_head.beta == 0.4 and l14.model.roi_head.mask_roi_extractor.featmap_strides == \
        [3.5, 7, 14, 28]


DETECTION_CONFIGS = sorted(p.name for p in (REPO / 'configs/detection').glob('fvit_*.py'))


@pytest.mark.parametrize('name', DETECTION_CONFIGS)
def test_default_configs_report_the_last_epoch(name):
    """No checkpoint selection on the evaluation set (val = test: save_best would pick the epoch on the
    test data), a checkpoint every epoch and the last one kept (CLIPSelf: checkpoint_config interval 1, no
    save_best; OV-COCO keeps every epoch, OV-LVIS max_keep_ckpts=1 + save_last)."""
    cfg = Config.fromfile(str(REPO / 'configs/detection' / name))
    hook = cfg.default_hooks.checkpoint
    assert hook.type == 'CheckpointHook' and 'save_best' not in hook and 'rule' not in hook, hook
    assert hook.interval == 1 and hook.get('by_epoch', True) and hook.get('save_last', True)
    assert hook.get('max_keep_ckpts', -1) in (-1, 1)                     # all epochs (COCO) or the last (LVIS)
    assert ('lvis' in name) == (hook.get('max_keep_ckpts', -1) == 1)
    assert not any('save_best' in line for line in (REPO / 'configs/detection' / name).read_text().splitlines()
                   if not line.lstrip().startswith('#'))
    last = f"epoch_{cfg.train_cfg.max_epochs}.pth"
    header = (REPO / 'configs/detection' / name).read_text()
    assert ('tools/test.py' not in header) or last in header             # the test command evaluates the last epoch
    docs = (REPO / 'docs/detection.md').read_text()
    assert 'work_dirs/fvit_declip-eva02-b16_ov-coco-640_3e/epoch_3.pth' in docs and 'epoch_48.pth' in docs
    assert 'best_coco_novel_ap50_epoch' not in docs
