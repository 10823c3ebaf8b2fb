"""Training-free segmentation against the authors' DeCLIPSegmentation (DeCLIP zero-shot branch @3b65d49, re-implemented
in tests/reference/declip_segmentation_ref.py), pixel for pixel on real photos, the benchmark configs' settings and
the user API's pipeline."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from reference.declip_segmentation_ref import reference_segment

REPO = Path(__file__).resolve().parents[3]
TINY = 'DeCLIP-Tiny-ViT-16'
CLIP_NORM = dict(mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323])

pytestmark = pytest.mark.reference


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
