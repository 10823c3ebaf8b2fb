"""Region classification against the authors' zero_shot.py (DeCLIP main @2c0b3de, = CLIPSelf's;
tests/reference/region_classification_ref.py): prompts, text embeddings, regions, pooling, metric, resolutions, mask
grids."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from declip_mm.models.text.vocabulary import load_class_names
from reference import region_classification_ref as rc_ref

REPO = Path(__file__).resolve().parents[3]
TINY = 'DeCLIP-Tiny-ViT-16'
CLIP_NORM = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323])

pytestmark = pytest.mark.reference


def test_vild_prompts_equal_the_references():
    from declip_mm.models.text.prompts import vild_prompts
    names = load_class_names('coco_panoptic') + ['apple', 'Egg_roll', 'sofa/couch', 'st.', 'umbrella']
    for name in names:
        assert vild_prompts(name) == rc_ref.reference_prompts(name), name
    assert len(vild_prompts('apple')) == 63 and vild_prompts('apple')[8] == 'This is a photo of an apple.'


def test_coco_panoptic_names_are_the_raw_category_names():
    from mmdet.datasets import CocoPanopticDataset
    assert tuple(load_class_names('coco_panoptic')) == tuple(CocoPanopticDataset.METAINFO['classes'])


def test_vild_text_embedding_equals_the_reference():
    from declip_mm.registry import MODELS
    enc = MODELS.build(dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='vild', embedding_cache=False))
    encode = lambda prompts: enc.clip.encode_text(enc.tokenizer(prompts))  # noqa: E731  raw text-tower outputs
    names = ['person', 'wall-other-merged', 'apple']
    with torch.no_grad():
        ours = enc(names).embeddings
        want = torch.stack([rc_ref.reference_text_embedding(encode, n) for n in names])
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)


def make_panoptic_world(sample_root, out: Path):
    """A COCO-panoptic annotation of the real sample photos: things (crowd ones too), several stuff segments
    (one whose mask box is below 8 x 8 only without the reference's + 1), tiny things, and one image with
    more than 100 segments."""
    import json
    rng = np.random.default_rng(0)
    photos = sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[:2]
    cats = [dict(id=1, name='person', isthing=1), dict(id=18, name='dog', isthing=1),
            dict(id=124, name='tree-merged', isthing=0), dict(id=187, name='sky-other-merged', isthing=0),
            dict(id=199, name='wall-other-merged', isthing=0)]
    (out / 'pan').mkdir(parents=True)
    images, anns = [], []
    for n, photo in enumerate(photos):
        w, h = Image.open(photo).size
        ids = np.full((h, w), 1000, np.int64)                  # stuff 'sky' everywhere first
        segs = [dict(id=1000, category_id=187, iscrowd=0)]
        ids[h // 2:, :] = 1001
        segs.append(dict(id=1001, category_id=199, iscrowd=0))
        ids[5:13, 7:15] = 1002                                  # 8 x 8 pixels: mask box 7 x 7 = 49 < 64, skipped
        segs.append(dict(id=1002, category_id=124, iscrowd=0))
        count = 120 if n == 0 else 12
        for k in range(count):
            y, x = int(rng.integers(20, h - 40)), int(rng.integers(20, w - 40))
            sh, sw = int(rng.integers(2, 30)), int(rng.integers(2, 30))
            ids[y:y + sh, x:x + sw] = 2000 + k
            segs.append(dict(id=2000 + k, category_id=int(rng.choice([1, 18])), iscrowd=int(k % 5 == 0)))
        present = set(np.unique(ids).tolist())
        segs = [s for s in segs if s['id'] in present]
        for s in segs:
            ys, xs = np.nonzero(ids == s['id'])
            s['bbox'] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            s['area'] = int(len(xs))
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(png).save(out / 'pan' / f'{photo.stem}.png')
        images.append(dict(id=n + 1, file_name=photo.name, width=w, height=h))
        anns.append(dict(image_id=n + 1, file_name=f'{photo.stem}.png', segments_info=segs))
    (out / 'panoptic.json').write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return dict(images=images, annotations=anns, categories=cats, photos=photos)


def region_dataset(world_root, sample_root, size):
    from declip_mm.registry import DATASETS
    cfg = Config.fromfile(str(REPO / 'configs/region_classification/'
                              'region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py'))
    cfg.test_pipeline[3].size = size
    return DATASETS.build(dict(cfg.test_dataloader.dataset, data_root='', ann_file=str(world_root / 'panoptic.json'),
                               data_prefix=dict(img=str(sample_root / 'voc' / 'JPEGImages'),
                                                seg=str(world_root / 'pan')), pipeline=cfg.test_pipeline))


def test_regions_and_preprocessing_equal_the_references(sample_root, tmp_path):
    world = make_panoptic_world(sample_root, tmp_path)
    dataset = region_dataset(tmp_path, sample_root, 560)
    from mmengine.model import ImgDataPreprocessor
    pre = ImgDataPreprocessor(bgr_to_rgb=True, pad_size_divisor=1, **CLIP_NORM)
    assert len(dataset) == 2
    for i, ann in enumerate(world['annotations']):
        item = dataset[i]
        sample = item['data_samples']
        png = np.array(Image.open(tmp_path / 'pan' / ann['file_name']).convert('RGB'))
        regions = rc_ref.reference_regions(rc_ref.reference_rgb2id(png), ann['segments_info'], world['categories'])
        x, scale = rc_ref.reference_preprocess(Image.open(world['photos'][i]).convert('RGB'), 560)
        assert sample.segment_ids.tolist() == [r['segment_id'] for r in regions]
        assert sample.gt_labels.tolist() == [r['label'] for r in regions]
        assert sample.is_thing.tolist() == [bool(r['isthing']) for r in regions]
        want_boxes = rc_ref.reference_boxes_to_input([r['box_xyxy'] for r in regions], scale)
        torch.testing.assert_close(sample.gt_bboxes, want_boxes, rtol=0, atol=1e-4)
        ours = pre(dict(inputs=[item['inputs']], data_samples=[sample]))['inputs'][0]
        torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)
    first = set(dataset[0]['data_samples'].segment_ids.tolist())
    considered = {s['id'] for s in world['annotations'][0]['segments_info'][:100]}
    assert 1002 not in first and first <= considered          # the 8 x 8 stuff segment; the first 100 entries
    assert len(world['annotations'][0]['segments_info']) > 100
    assert any(s['iscrowd'] for s in world['annotations'][1]['segments_info']
               if s['id'] in dataset[1]['data_samples'].segment_ids.tolist())


@pytest.mark.parametrize('pooling', ['box', 'mask'])
def test_region_pooling_equals_the_references(sample_root, tmp_path, pooling):
    world = make_panoptic_world(sample_root, tmp_path)
    dataset = region_dataset(tmp_path, sample_root, 224)
    from declip_mm.registry import MODELS
    init_default_scope('declip_mm')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='RegionClassifier', data_preprocessor=dict(type='ImgDataPreprocessor', bgr_to_rgb=True, **CLIP_NORM),
        backbone=dict(type='DeCLIPViT', model_name=TINY, trainable='none'),
        text_encoder=dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='vild', embedding_cache=False),
        class_names=[c['name'] for c in world['categories']], pooling=pooling)).eval()
    for i, ann in enumerate(world['annotations']):
        batch = model.data_preprocessor(dict(inputs=[dataset[i]['inputs']], data_samples=[dataset[i]['data_samples']]))
        with torch.no_grad():
            dense = model.backbone.extract_dense(batch['inputs'], normalize=False)     # raw tokens (1, D, 14, 14)
            ours = model.region_embeddings(dense, batch['data_samples'])[0]
        sample = batch['data_samples'][0]
        if pooling == 'box':
            want = rc_ref.reference_box_pool(dense, sample.gt_bboxes, patch_size=16)
        else:
            png = np.array(Image.open(tmp_path / 'pan' / ann['file_name']).convert('RGB'))
            ids = rc_ref.reference_rgb2id(png)
            want = rc_ref.reference_mask_pool(dense, [ids == s for s in sample.segment_ids.tolist()])
        torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)
        if pooling == 'mask':
            assert (want.norm(dim=-1) == 0).any()              # a segment with no grid cell: zero, still counted


def test_region_metric_equals_the_reference():
    from declip_mm.evaluation import RegionClassificationMetric
    from mmengine.structures import BaseDataElement
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 12, (300,), generator=g)
    labels[labels == 7] = 6                                   # a class with no region is skipped
    scores = torch.randn(300, 12, generator=g) + 2.5 * torch.nn.functional.one_hot(labels, 12)
    is_thing = labels < 8
    metric = RegionClassificationMetric()
    for chunk in range(3):                                     # three images
        sel = slice(100 * chunk, 100 * (chunk + 1))
        metric.process({}, [BaseDataElement(gt_labels=labels[sel], is_thing=is_thing[sel],
                                            pred_topk=scores[sel].topk(5, dim=-1).indices)])
    ours = metric.compute_metrics(metric.results)
    want = rc_ref.reference_metric(scores, labels, is_thing)
    for group in ('thing', 'stuff'):
        for k in (1, 5):
            assert ours[f'{group}_top{k}'] == pytest.approx(100 * want[f'{group}.macc{k}'], abs=1e-9)


def test_region_configs_use_the_reference_resolutions():
    root = REPO / 'configs/region_classification'
    for size in (560, 1024):
        cfg = Config.fromfile(str(root / f'region-cls_declip-eva02-b16_coco-panoptic-val2017-{size}.py'))
        steps = [t.type for t in cfg.test_dataloader.dataset.pipeline]
        assert steps == ['LoadImageFromFile', 'LoadPanopticSegmentIds', 'PanopticRegionBoxes', 'ResizeLongestPad',
                         'PackRegionInputs']
        assert cfg.test_dataloader.dataset.pipeline[3].size == size
        assert cfg.model.text_encoder.templates == 'vild' and cfg.model.class_names == 'coco_panoptic'
        assert cfg.test_dataloader.dataset.max_segments == 100


def test_mask_grid_sizes_round_as_the_reference():
    """Aspect ratios whose grid side lands on .5 (150 x 500 at grid 35: 10.5 -> 10) and others."""
    from declip_mm.models.classifiers.region_classifier import masks_to_grid
    rng = np.random.default_rng(0)
    for h, w, grid in ((150, 500, 35), (500, 150, 35), (427, 640, 35), (360, 640, 14), (333, 500, 40)):
        mask = np.zeros((h, w), bool)
        mask[rng.integers(0, h // 2):, rng.integers(0, w // 2):rng.integers(w // 2 + 1, w)] = True
        ours = masks_to_grid(torch.from_numpy(mask)[None], (grid, grid))[0]
        assert torch.equal(ours, rc_ref.reference_mask_to_grid(mask, grid)), (h, w, grid)
