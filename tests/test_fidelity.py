"""declip_mm against independent re-implementations of the REFERENCE behaviour (tests/reference/,
written from the authors' files without reading declip_mm; each module cites file@commit):

* training-free segmentation = the authors' DeCLIPSegmentation (DeCLIP zero-shot branch @3b65d49, ProxyCLIP
  @e7b767f class files), pixel for pixel on real photos with synonyms and the background threshold active;
* region classification = the authors' zero_shot.py (DeCLIP main @2c0b3de, = CLIPSelf's);
* the distillation recipe = DeCLIP main @2c0b3de (open_clip's cosine_lr, get_default_params, the content
  loss) and DINOv2 @b8931f7 (interpolate_pos_encoding of the hub models).
"""
import hashlib
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from declip_mm.models import DeCLIPViT
from declip_mm.models.text import split_synonyms
from declip_mm.models.text.vocabulary import CLASS_NAME_DIR, load_class_names
from reference.declip_segmentation_ref import reference_parse_class_file, reference_segment

REPO = Path(__file__).resolve().parents[1]
TINY = 'DeCLIP-Tiny-ViT-16'
CLIP_NORM = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323])
BENCHMARK_FILES = ('voc21', 'pc60', 'coco_object', 'voc20', 'pc59', 'coco_stuff', 'cityscapes', 'ade20k')


# ------------------------------------------------------------------ 1. install: the mmcv wheel check
def make_wheel(path: Path, with_ops: bool, entries: int = 4000) -> Path:
    """A wheel-shaped zip with a long listing; the compiled op (when present) is among the FIRST entries, which
    is what broke `unzip -l | grep -q` under pipefail (grep exits early, unzip dies of SIGPIPE)."""
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('mmcv/__init__.py', '')
        if with_ops:
            z.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF')
        for i in range(entries):
            z.writestr(f'mmcv/ops/csrc/common/file_{i:05d}.hpp', '')
        z.writestr('mmcv-2.1.0.dist-info/RECORD', '')
    return path


def run_check(wheel) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / 'tools/install/check_mmcv_wheel.py'), str(wheel)],
                          capture_output=True, text=True)


def test_mmcv_wheel_check_on_long_listings(tmp_path):
    good = run_check(make_wheel(tmp_path / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl', with_ops=True))
    assert good.returncode == 0 and 'mmcv/_ext.cpython-311-x86_64-linux-gnu.so' in good.stdout
    lite = run_check(make_wheel(tmp_path / 'lite.whl', with_ops=False))
    assert lite.returncode == 1 and 'no compiled ops' in lite.stderr
    (tmp_path / 'broken.whl').write_bytes(b'not a zip')
    broken = run_check(tmp_path / 'broken.whl')
    assert broken.returncode == 2 and 'not a readable wheel' in broken.stderr


def test_mmcv_wheel_check_on_the_installed_wheel():
    """The real wheel this environment was installed from (cached by make install), when it is there."""
    import os
    cache = Path(os.environ.get('DECLIP_CACHE', Path.home() / '.cache' / 'declip-mm')) / 'wheels'
    wheels = sorted(cache.glob('mmcv-2.1.0/*/mmcv-2.1.0-*.whl'))
    if not wheels:
        pytest.skip(f'no cached mmcv wheel under {cache}')
    result = run_check(wheels[0])
    assert result.returncode == 0, result.stderr
    assert 'mmcv/_ext' in result.stdout


# ------------------------------------------------------------------ 2. class-name files
# git blob ids of ProxyCLIP's configs/cls_*.txt @05c3c18 (the files DeCLIP's zero-shot branch reads)
REFERENCE_BLOBS = {'voc21': '5b8dc7e2', 'pc60': 'a6209938', 'coco_object': 'db0f4779', 'voc20': '3f073de0',
                   'pc59': 'f9fb2a22', 'coco_stuff': 'b76c5a67', 'cityscapes': 'a1560efb', 'ade20k': 'dba5aa2c'}
# the one collision the reference file itself has: 'bed' is a background word and class 60 of COCO-Object
REFERENCE_COLLISIONS = {'coco_object': {'bed'}}


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


@pytest.mark.parametrize('name', BENCHMARK_FILES)
def test_benchmark_class_files_are_the_references(name):
    path = CLASS_NAME_DIR / f'{name}.txt'
    assert git_blob(path).startswith(REFERENCE_BLOBS[name]), f'{path} differs from the reference file'
    ref_queries, ref_idx = reference_parse_class_file(path)
    classes = load_class_names(name)
    ours = [(q, k) for k, c in enumerate(classes) for q in split_synonyms(c)]
    # get_cls_idx keeps a trailing space ('wood ' in PC60); the tokenizer gives the same tokens either way
    assert ours == [(q.strip(), k) for q, k in zip(ref_queries, ref_idx)]


def test_background_lines_are_the_references():
    voc21, coco_object, pc60 = (load_class_names(n)[0] for n in ('voc21', 'coco_object', 'pc60'))
    assert 'background' not in split_synonyms(voc21) and len(split_synonyms(voc21)) == 26
    assert 'background' not in split_synonyms(coco_object) and len(split_synonyms(coco_object)) == 17
    assert split_synonyms(pc60) == ['background']
    assert 'sands' in split_synonyms(voc21)


@pytest.mark.parametrize('name', sorted(p.stem for p in CLASS_NAME_DIR.glob('*.txt')))
def test_no_name_in_two_classes(name):
    """Every bundled file: a name in two classes makes one of them unreachable (only the reference's own
    collision is accepted, since the benchmark is defined by that file)."""
    seen, clashes = {}, set()
    for k, cls in enumerate(load_class_names(name)):
        for q in split_synonyms(cls):
            if q in seen and seen[q] != k:
                clashes.add(q)
            seen.setdefault(q, k)
    assert clashes == REFERENCE_COLLISIONS.get(name, set()), f'{name}: {sorted(clashes)} name two classes'


def test_trailing_space_tokenizes_the_same():
    import open_clip
    from declip_mm.models.text.prompts import TEMPLATE_SETS
    tok = open_clip.get_tokenizer('EVA02-B-16')
    prompts = TEMPLATE_SETS['imagenet80']
    assert torch.equal(tok([t.format('wood ') for t in prompts]), tok([t.format('wood') for t in prompts]))


# ------------------------------------------------------------------ 3. training-free segmentation
def segmentor_config(**kwargs):
    return dict(type='TrainingFreeSegmentor',
                data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                                       **CLIP_NORM),
                backbone=dict(type='DeCLIPViT', model_name=TINY, trainable='none'),
                text_encoder=dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='simple',
                                  embedding_cache=False),
                class_names=['background', 'cat'], **kwargs)


def build_segmentor(class_names, logit_scale, bg_thresh, crop, stride):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    cfg = segmentor_config(logit_scale=logit_scale, bg_thresh=bg_thresh,
                           test_cfg=dict(mode='slide', crop_size=(crop, crop), stride=(stride, stride)))
    cfg['class_names'] = class_names
    return MODELS.build(cfg).eval().double()


def voc_inputs(sample_root, short_side):
    """Each sample VOC photo through the reference's test pipeline (mmcv Resize keep_ratio, CLIP normalisation)."""
    from mmcv.transforms import LoadImageFromFile, Resize
    for path in sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg')):
        results = Resize(scale=(4096, short_side), keep_ratio=True)(LoadImageFromFile()(dict(img_path=str(path))))
        yield results['img'], results['ori_shape']


@pytest.mark.parametrize('short_side, crop, stride', [(120, 96, 32), (90, 96, 32)])
def test_segmentation_equals_the_authors_declip_segmentation(sample_root, short_side, crop, stride):
    """Slide windows (and, at short side 90, windows smaller than the crop whose size is not a multiple of the
    patch: the centred padding path), synonyms as separate queries, the threshold active on real photos."""
    from mmseg.structures import SegDataSample
    names = ['background; sky; wall; floor', 'person; people', 'cat', 'dog; puppy', 'sofa; couch', 'tvmonitor']
    model = build_segmentor(names, logit_scale=80.0, bg_thresh=0.0, crop=crop, stride=stride)
    queries, query_idx = model.text_embeddings, model.text_class_index.tolist()
    assert len(queries) == 12 and query_idx[:4] == [0, 0, 0, 0]
    dense_fn = lambda x: model.backbone.extract_dense(x, normalize=False)  # noqa: E731
    checked = 0
    for img, ori_shape in voc_inputs(sample_root, short_side):
        batch = model.data_preprocessor(dict(inputs=[torch.from_numpy(img.transpose(2, 0, 1).copy())],
                                             data_samples=[SegDataSample(metainfo=dict(
                                                 ori_shape=ori_shape, img_shape=img.shape[:2]))]))
        x = batch['inputs'].double()
        _, ref_probs = reference_segment(x, dense_fn, queries, query_idx, logit_scale=80.0, prob_thd=0.0,
                                         crop_size=crop, stride=stride, patch_size=16, ori_shape=ori_shape)
        # about half the pixels fall below it; set in the widest gap between pixel values near the median, not on
        # a pixel's value (where a 1e-16 rounding difference flips that pixel)
        best = ref_probs.max(0).values.flatten().sort().values
        values = best[int(0.4 * len(best)):int(0.6 * len(best))].unique()
        gap = int((values[1:] - values[:-1]).argmax())
        thresh = float(values[gap] + values[gap + 1]) / 2
        ref_pred, ref_probs = reference_segment(x, dense_fn, queries, query_idx, logit_scale=80.0,
                                                prob_thd=thresh, crop_size=crop, stride=stride, patch_size=16,
                                                ori_shape=ori_shape)
        model.bg_thresh = thresh
        with torch.no_grad():
            out = model.predict(x, batch['data_samples'])[0]
        assert out.seg_logits.data.shape == ref_probs.shape == (6, *ori_shape)
        torch.testing.assert_close(out.seg_logits.data, ref_probs, rtol=0, atol=1e-10)
        assert torch.equal(out.pred_sem_seg.data[0], ref_pred)
        assert 0.3 < (ref_pred == 0).double().mean() < 0.9 and len(ref_pred.unique()) >= 2   # threshold active
        checked += 1
    assert checked == 3


def test_max_over_synonyms_is_taken_on_probabilities_not_logits():
    """A case where the old semantics (max over synonym logits, then softmax over classes) picks another class:
    two near-identical synonyms split the softmax mass, yet the class keeps the max of their probabilities."""
    from declip_mm.models.text import ClassEmbeddings
    emb = torch.eye(3)
    classes = ClassEmbeddings(emb, torch.tensor([0, 0, 1]), ['a; b', 'c'])
    logits = torch.tensor([[2.0], [2.0], [2.5]])[..., None]           # (S=3, 1, 1): queries a, b, c
    probs = classes.class_probabilities(logits, dim=0)[:, 0, 0]
    p = torch.softmax(torch.tensor([2.0, 2.0, 2.5]), 0)
    torch.testing.assert_close(probs, torch.stack([p[0], p[2]]))
    old = torch.softmax(torch.tensor([2.0, 2.5]), 0)                   # max on logits, softmax over classes
    # with a background threshold of 0.5 the reference sends this pixel to background, the old semantics not
    assert probs.max() < 0.5 <= old.max() and probs.sum() < 1


def test_benchmark_configs_follow_the_authors_settings():
    from reference.declip_segmentation_ref import REFERENCE_SETTINGS, REFERENCE_SLIDE
    configs = {p.stem.split('_')[-1].replace('-', '_'): p
               for p in sorted((REPO / 'configs/segmentation').glob('training-free_*.py'))}
    assert sorted(configs) == sorted(REFERENCE_SETTINGS)
    for name, ref in REFERENCE_SETTINGS.items():
        cfg = Config.fromfile(str(configs[name]))
        assert (cfg.model.logit_scale, cfg.model.bg_thresh) == (ref['logit_scale'], ref['prob_thd']), name
        assert cfg.model.class_names == name
        assert cfg.model.test_cfg == dict(mode='slide', crop_size=(REFERENCE_SLIDE['crop_size'],) * 2,
                                          stride=(REFERENCE_SLIDE['stride'],) * 2)
        resize = cfg.test_dataloader.dataset.pipeline[1]
        assert (resize.type, resize.scale, resize.keep_ratio) == ('Resize', ref['scale'], True), name
        assert cfg.test_dataloader.dataset.pipeline[2].type == 'declip_mm.LoadFullRangeAnnotations'   # full size, 16 bit
        assert cfg.model.backbone.attn_scale == '1/sqrt(d)', name


# ------------------------------------------------------------------ 4. attention scale and checkpoints
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


# ------------------------------------------------------------------ 5. region classification
from reference import region_classification_ref as rc_ref  # noqa: E402


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


# ------------------------------------------------------------------ 6. distillation recipe
from reference import distill_recipe_ref as dr_ref  # noqa: E402


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


def test_segment_image_api_equals_the_benchmark_pipeline(sample_root):
    """declip_mm.apis.segment_image on an RGB array = the benchmark config's pipeline (mmcv Resize keep_ratio on the
    BGR file, SegDataPreProcessor with bgr_to_rgb) + predict, probabilities and labels."""
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import PackSegInputs
    from mmseg.registry import MODELS, TRANSFORMS
    from declip_mm.apis import build_segmentor, segment_image
    torch.manual_seed(0)
    model = build_segmentor(backbone=dict(type='DeCLIPViT', model_name=TINY, trainable='none'),
                            text_encoder=dict(type='OpenCLIPTextEncoder', model_name=TINY, templates='simple',
                                              embedding_cache=False),
                            class_names='voc21', logit_scale=80.0, bg_thresh=0.4, mode='csa',
                            test_cfg=dict(mode='slide', crop_size=(96, 96), stride=(64, 64)))
    path = sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[0]
    labels, probs = segment_image(model, np.array(Image.open(path).convert('RGB')), short_side=128)
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(REPO / 'configs/segmentation/training-free_declip-eva02-b16_voc21.py'))
    resize = TRANSFORMS.build(dict(cfg.test_dataloader.dataset.pipeline[1], scale=(4096, 128)))
    packed = PackSegInputs()(resize(LoadImageFromFile()(dict(img_path=str(path)))))
    config_pre = MODELS.build(cfg.model.data_preprocessor)
    data = config_pre(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]), False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])[0]
    torch.testing.assert_close(probs, out.seg_logits.data, rtol=0, atol=1e-6)
    assert np.array_equal(labels, out.pred_sem_seg.data[0].numpy())


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


def test_install_script_uses_the_tested_wheel_check():
    script = (REPO / 'tools/install/setup_env.sh').read_text()
    assert script.count('run_logged "$ENV/bin/python" "$REPO/tools/install/check_mmcv_wheel.py" "$whl"') == 2
    assert 'unzip -l' not in script and '| grep -q' not in script


def test_mask_grid_sizes_round_as_the_reference():
    """Aspect ratios whose grid side lands on .5 (150 x 500 at grid 35: 10.5 -> 10) and others."""
    from declip_mm.models.classifiers.region_classifier import masks_to_grid
    rng = np.random.default_rng(0)
    for h, w, grid in ((150, 500, 35), (500, 150, 35), (427, 640, 35), (360, 640, 14), (333, 500, 40)):
        mask = np.zeros((h, w), bool)
        mask[rng.integers(0, h // 2):, rng.integers(0, w // 2):rng.integers(w // 2 + 1, w)] = True
        ours = masks_to_grid(torch.from_numpy(mask)[None], (grid, grid))[0]
        assert torch.equal(ours, rc_ref.reference_mask_to_grid(mask, grid)), (h, w, grid)


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
