"""The Python API (OpenVocabSegmenter, OpenVocabDetector, DenseFeatureExtractor) on tiny random
towers and the sample photos: results against the benchmark path (segment_image) and independent computations."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from declip_mm.apis import (DenseFeatureExtractor, OpenVocabDetector, OpenVocabSegmenter, build_segmentor,
                            segment_image)
from declip_mm.apis.image_size import ImageSizeError

REPO = Path(__file__).resolve().parents[2]
TINY = 'DeCLIP-Tiny-ViT-16'
TINY_EVA = 'DeCLIP-Tiny-EVA02-16'


pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE


@pytest.fixture(scope='module')
def photo(sample_root):
    return np.array(Image.open(sample_root / 'voc/JPEGImages/2011_000003.jpg').convert('RGB'))


@pytest.fixture(scope='module')
def segmenter():
    torch.manual_seed(0)
    return OpenVocabSegmenter(TINY, precision='fp32')


def tiny_segmentation_config(tmp_path) -> Path:
    path = Path(tmp_path) / 'tiny_voc21.py'
    path.write_text(f"_base_ = ['{REPO}/configs/segmentation/training-free_declip-eva02-b16_voc21.py']\n"
                    f"model = dict(backbone=dict(model_name='{TINY}', pretrained=None),\n"
                    f"             text_encoder=dict(model_name='{TINY}', pretrained=None))\n")
    return path


def tiny_fvit_config(tmp_path) -> Path:
    """The OV-COCO B/16 F-ViT config with tiny towers at 128 px (as tests/models/detectors/test_detection.py), as a config file."""
    path = Path(tmp_path) / 'tiny_fvit.py'
    path.write_text(f"""_base_ = ['{REPO}/configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py']
BN = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(pad_size_divisor=128),
    backbone=dict(model_name='{TINY_EVA}', pretrained=None, out_indices=(0, 1, 1, 2)),
    neck=[dict(type='SimplePyramid', in_channels=64, norm_cfg=BN),
          dict(type='FPN', in_channels=[64] * 4, out_channels=32, num_outs=5, norm_cfg=BN)],
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), vlm_roi_extractor=dict(out_channels=32),
                  bbox_head=dict(in_channels=32, conv_out_channels=32, fc_out_channels=32, norm_cfg=BN)))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
""")
    return path


# ------------------------------------------------------------------ segmentation
def test_segmenter_equals_the_benchmark_path(segmenter, photo):
    res = segmenter(photo, 'cat,dog,sofa; couch')
    h, w = photo.shape[:2]
    assert res.labels.shape == (h, w) and res.labels.dtype == np.int64
    assert res.probs.shape == (3, h, w) and res.probs.dtype == np.float32
    assert res.class_names == ['cat', 'dog', 'sofa'] and res.background is None
    # a segmentor built from scratch for this vocabulary (same towers), run by segment_image
    ref = build_segmentor(backbone=segmenter.model.backbone, text_encoder=segmenter.text_encoder,
                          class_names=['cat', 'dog', 'sofa; couch'], mode='csa', logit_scale=40.0,
                          test_cfg=dict(mode='slide', crop_size=(336, 336), stride=(112, 112)))
    labels, probs = segment_image(ref, photo)
    assert (res.labels == labels).all()
    assert np.allclose(res.probs, probs.numpy(), atol=1e-6)
    assert (res.labels == res.probs.argmax(0)).all()                      # no background: no threshold
    areas = res.areas()
    assert abs(sum(areas.values()) - 1) < 1e-9
    assert areas['dog'] == pytest.approx((res.labels == 1).mean())
    scores = res.scores()
    assert scores['cat']['max_prob'] == pytest.approx(float(res.probs[0].max()))
    picture = res.overlay()
    assert picture.size[0] == w and picture.size[1] > h
    assert (np.array(res.label_image()) == res.labels).all()


def test_a_new_vocabulary_is_the_same_as_a_fresh_model(segmenter, photo):
    first = segmenter(photo, 'person,car').probs
    segmenter(photo, 'sky,tree,road')
    again = segmenter(photo, ['person', 'car'])
    assert np.array_equal(first, again.probs)
    one = segmenter(photo, 'cat')                                          # a one-word vocabulary
    assert one.class_names == ['cat'] and (one.labels == 0).all() and np.allclose(one.probs, 1)


def test_background_is_explicit_and_takes_low_confidence_pixels(segmenter, photo):
    plain = segmenter(photo, 'background,cat,dog')                        # first is 'background' by name only
    assert plain.background is None and (plain.labels == plain.probs.argmax(0)).all()
    best = plain.probs.max(0)
    threshold = float(np.median(best))
    segmenter.bg_thresh = threshold
    try:
        named = segmenter(photo, 'cat,background,dog', background='background')
        appended = segmenter(photo, 'cat,dog', background='background')
    finally:
        segmenter.bg_thresh = 0.2
    assert named.background == 'background' and named.background_index == 1
    expected = np.where(named.probs.max(0) < threshold, 1, named.probs.argmax(0))
    assert (named.labels == expected).all()
    assert 0.3 < (named.probs.max(0) < threshold).mean() < 0.7             # the threshold really acts
    assert appended.class_names == ['cat', 'dog', 'background'] and appended.background_index == 2
    assert (appended.labels == np.where(appended.probs.max(0) < threshold, 2, appended.probs.argmax(0))).all()


def test_image_kinds_and_sizes(segmenter, photo, tmp_path):
    gray = photo.mean(-1).astype(np.uint8)
    res = segmenter(gray, 'cat,dog')                                       # (H, W) array
    assert res.labels.shape == gray.shape and res.image.shape == (*gray.shape, 3)
    Image.fromarray(photo).save(tmp_path / 'p.png')
    assert np.array_equal(segmenter(str(tmp_path / 'p.png')).probs, segmenter(photo).probs)   # path = array
    tiny = segmenter(photo[:8, :10])                                      # smaller than one window
    assert tiny.labels.shape == (8, 10) and tiny.input_shape == (448, 560)
    strip = np.ascontiguousarray(np.tile(photo[:40], (1, 2, 1)))          # 40 x 1000: 25:1, short side 224
    res = segmenter(strip)
    assert res.labels.shape == (40, 1000) and res.input_shape == (224, 5600)
    with pytest.raises(ImageSizeError, match='aspect ratio'):
        segmenter(photo[:5, :400])
    cap = segmenter.max_output_pixels
    segmenter.max_output_pixels = 20000
    try:
        small = segmenter(photo)
    finally:
        segmenter.max_output_pixels = cap
    scale = (20000 / (photo.shape[0] * photo.shape[1])) ** 0.5             # 338 x 500 -> 116 x 172
    expected = (int(photo.shape[0] * scale), int(photo.shape[1] * scale))
    assert small.labels.shape == expected and small.probs.shape[1:] == expected and expected[0] * expected[1] <= 20000
    assert small.image.shape == (*expected, 3) and small.source_shape == photo.shape[:2]
    assert [r.labels.shape for r in segmenter([photo, gray])] == [photo.shape[:2]] * 2


def test_reduced_precision_runs_close_to_fp32(segmenter, photo):
    bf16 = OpenVocabSegmenter.__new__(OpenVocabSegmenter)
    bf16.__dict__.update(segmenter.__dict__, precision='bf16')
    a, b = segmenter(photo, 'cat,dog,person'), bf16(photo)
    assert b.probs.dtype == np.float32 and np.abs(a.probs - b.probs).max() < 0.1


def test_segmenter_from_config(tmp_path, photo):
    torch.manual_seed(0)
    seg = OpenVocabSegmenter.from_config(tiny_segmentation_config(tmp_path), precision='fp32')
    assert seg.bg_thresh == 0.4 and seg.model.logit_scale == 80.0 and seg.size_rule['short_side'] == 448
    res = seg(photo, 'cat,dog', background='background')
    assert res.class_names == ['cat', 'dog', 'background']
    assert (res.labels == np.where(res.probs.max(0) < 0.4, 2, res.probs.argmax(0))).all()
    with pytest.raises(ValueError, match='not a TrainingFreeSegmentor'):
        OpenVocabSegmenter.from_config(tiny_fvit_config(tmp_path))


# ------------------------------------------------------------------ dense features
@pytest.fixture(scope='module')
def extractor():
    torch.manual_seed(0)
    return DenseFeatureExtractor(TINY, precision='fp32', long_side=224, batch_size=2)


def test_dense_map_and_region_embeddings(extractor, photo):
    f = extractor(photo)
    assert photo.shape[:2] == (338, 500)                                   # -> 151 x 224 -> 10 x 14 tokens
    assert f.input_shape == (151, 224) and f.map.shape == (32, 10, 14) and f.stride == 16
    # the map against the backbone on an independently prepared input
    import cv2
    resized = cv2.resize(photo, (224, 151), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (torch.from_numpy(resized).permute(2, 0, 1) - torch.tensor([122.771, 116.746, 104.094])[:, None, None]) \
        / torch.tensor([68.501, 66.632, 70.323])[:, None, None]
    x = F.pad(x, (0, 0, 0, 9))[None]
    with torch.no_grad():
        ref = extractor.backbone.extract_dense(x, normalize=False)[0]
    assert torch.allclose(f.map, ref, atol=1e-5)
    assert torch.allclose(f.normalized().norm(dim=0), torch.ones(10, 14), atol=1e-5)
    # a box on token boundaries: RoIAlign 1x1 (aligned) = the mean of its tokens
    sy, sx = f.scale
    token_box = torch.tensor([[2, 3, 9, 8]], dtype=torch.float32)          # x1, y1, x2, y2 in tokens
    image_box = token_box * 16 / torch.tensor([sx, sy, sx, sy])
    emb = extractor.regions(f, image_box)
    expected = F.normalize(f.map[:, 3:8, 2:9].mean(dim=(1, 2)), dim=0)
    assert emb.shape == (1, 32) and torch.allclose(emb[0], expected, atol=1e-5)
    assert extractor.regions(photo, image_box.numpy()).shape == (1, 32)   # from the image directly
    with pytest.raises(ValueError, match='x2 > x1'):
        extractor.regions(f, [[10, 10, 5, 20]])


def test_mask_pooling(extractor, photo):
    f = extractor(photo)
    full = np.ones((1, *photo.shape[:2]), bool)
    h_tok, w_tok = round(338 * 14 / 500), 14                               # the image's cells on the grid
    expected = F.normalize(f.map[:, :h_tok, :w_tok].mean(dim=(1, 2)), dim=0)
    assert torch.allclose(extractor.masks(f, full)[0], expected, atol=1e-5)
    empty = np.zeros((1, *photo.shape[:2]), bool)
    assert torch.equal(extractor.masks(f, empty), torch.zeros(1, 32))
    with pytest.raises(ValueError, match='image size'):
        extractor.masks(f, full[:, :10])


def test_video_frames_are_batched_like_single_images(extractor, photo):
    frames = [photo, photo[::-1].copy(), photo[:, ::-1].copy()]
    maps = extractor.video(np.stack(frames))
    assert maps.shape == (3, 32, 10, 14)
    for frame, batched in zip(frames, maps):
        assert torch.allclose(batched, extractor(frame).map, atol=1e-4)
    with pytest.raises(ValueError, match='differ in size'):
        extractor.video([photo, photo[:100]])


def test_features_from_config_and_checkpoint(tmp_path, photo, extractor):
    path = tmp_path / 'backbone.pth'
    extractor.backbone.save_checkpoint(str(path))
    fx = DenseFeatureExtractor.from_config(tiny_segmentation_config(tmp_path), str(path), precision='fp32',
                                           long_side=224)
    assert torch.allclose(fx(photo).map, extractor(photo).map, atol=1e-6)        # saved, then loaded: equal


# ------------------------------------------------------------------ detection
@pytest.fixture(scope='module')
def detector_config(tmp_path_factory):
    return tiny_fvit_config(tmp_path_factory.mktemp('fvit'))


def test_detector_vocabulary_and_fusion_rule(detector_config, photo, tmp_path):
    torch.manual_seed(0)
    det = OpenVocabDetector(detector_config, precision='fp32', score_thr=0.0)
    res = det(photo, 'person,cat,sofa; couch')
    head = det.model.roi_head.bbox_head
    # rows: the ViLD-prompt embeddings of each class (synonyms averaged), then 'background'
    enc = det.text_encoder
    rows = torch.cat([enc.embed_synonyms(['person', 'cat']),
                      F.normalize(enc.embed_synonyms(['sofa', 'couch']).sum(0, keepdim=True), dim=-1),
                      enc.embed_synonyms(['background'])])
    assert torch.allclose(head.fc_cls.text, rows, atol=1e-6)
    assert head.novel.tolist() == [False, True, True, False]              # 'person' is an OV-COCO base class
    assert head.num_classes == 3 and res.class_names == ['person', 'cat', 'sofa']
    h, w = photo.shape[:2]
    assert res.boxes.shape == (len(res), 4) and len(res) > 0
    assert (res.boxes[:, 0] >= 0).all() and (res.boxes[:, 2] <= w + 1e-3).all() and (res.boxes[:, 3] <= h + 1e-3).all()
    assert (res.labels < 3).all() and (res.scores >= 0).all() and (res.scores <= 1).all()
    assert res.overlay().size == (w, h) and len(res.summary()['detections']) == len(res)
    # the same weights saved as a whole-model checkpoint and loaded again give the same detections
    ckpt = tmp_path / 'fvit.pth'
    torch.save(dict(state_dict=det.model.state_dict(), meta=dict()), ckpt)
    torch.manual_seed(0)
    det2 = OpenVocabDetector(detector_config, str(ckpt), precision='fp32', score_thr=0.0)
    res2 = det2(photo, 'person,cat,sofa; couch')
    assert np.allclose(res2.boxes, res.boxes, atol=1e-4) and np.allclose(res2.scores, res.scores, atol=1e-6)
    with pytest.raises(ValueError, match='background'):
        det(photo, 'cat,background')
    det.model.roi_head.test_cfg.score_thr = float(np.median(res.scores))
    thr = det(photo)
    assert (thr.scores >= np.median(res.scores)).all() and len(thr) < len(res)


def test_detector_refuses_a_backbone_only_checkpoint(detector_config, tmp_path):
    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    path = tmp_path / 'backbone.pth'
    DeCLIPViT(model_name=TINY_EVA).save_checkpoint(str(path))
    with pytest.raises(ValueError, match='trained heads'):
        OpenVocabDetector(detector_config, str(path))


def test_random_towers_of_a_real_model_are_announced(monkeypatch):
    import logging

    from declip_mm.apis import random_weights
    logged = []
    monkeypatch.setattr(random_weights, 'print_log', lambda msg, logger, level: logged.append((msg, level)))
    random_weights.warn_if_random('EVA02-B-16', backbone='x.pth', text_weights=None)
    random_weights.warn_if_random(TINY, backbone=None, text_weights=None)  # the tiny presets are random by design
    random_weights.warn_if_random('EVA02-B-16', backbone='x.pth', text_weights='merged2b_s8b_b131k')
    assert len(logged) == 1 and logged[0][1] == logging.WARNING
    assert logged[0][0].startswith('EVA02-B-16: text_weights not given') and 'RANDOMLY' in logged[0][0]


def test_concurrent_calls_with_different_vocabularies(segmenter, photo):
    """Two threads, two vocabularies: each result is the one its own vocabulary gives alone."""
    import threading
    small = np.ascontiguousarray(photo[:96, :128])
    alone = {v: segmenter(small, v).probs for v in ('cat,dog', 'sky,tree,road')}
    results, errors = {}, []

    def work(v):
        try:
            for _ in range(3):
                results.setdefault(v, []).append(segmenter(small, v).probs)
        except Exception as err:              # noqa: BLE001 (reported below)
            errors.append(err)
    threads = [threading.Thread(target=work, args=(v,)) for v in alone]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for v, probs in results.items():
        assert all(np.array_equal(p, alone[v]) for p in probs)


# ------------------------------------------------------------------ protocol defaults and overlays
def test_one_home_for_the_segmentation_defaults(segmenter):
    """OpenVocabSegmenter (None = the protocol's), TrainingFreeSegmentor and the command line take their defaults
    from declip_mm.constants.SEGMENTATION_PROTOCOL; the values are the benchmark protocol's."""
    import inspect

    from declip_mm.constants import SEGMENTATION_PROTOCOL as P
    from declip_mm.models.segmentors.training_free import TrainingFreeSegmentor
    assert (P.mode, P.logit_scale, P.bg_thresh, P.window, P.stride, P.short_side, P.max_long_side) == \
        ('csa', 40.0, 0.2, 336, 112, 448, 4096)
    assert segmenter.model.test_cfg == dict(mode='slide', crop_size=(336, 336), stride=(112, 112))
    assert (segmenter.model.logit_scale, segmenter.model.mode, segmenter.bg_thresh) == (40.0, 'csa', 0.2)
    assert segmenter.size_rule['short_side'] == 448 and segmenter.size_rule['max_long_side'] == 4096
    defaults = inspect.signature(TrainingFreeSegmentor).parameters
    assert defaults['logit_scale'].default == 40.0 and defaults['test_cfg'].default == P.test_cfg()
    assert P.test_cfg(window=0) == dict(mode='whole')


def legacy_overlay(image, labels, class_names, alpha=0.5):
    """The overlay as drawn before the visualisation module (PIL's default font, the seeded palette)."""
    from PIL import ImageDraw
    palette = np.random.default_rng(3).integers(40, 255, size=(len(class_names), 3)).astype(np.uint8)
    blend = (image * (1 - alpha) + palette[labels] * alpha).astype(np.uint8)
    present = list(np.unique(labels))
    canvas = Image.new('RGB', (image.shape[1], image.shape[0] + 18 * len(present) + 6), (255, 255, 255))
    canvas.paste(Image.fromarray(blend), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(present):
        y = image.shape[0] + 4 + 18 * i
        draw.rectangle([4, y, 18, y + 14], fill=tuple(int(v) for v in palette[c]))
        draw.text((24, y), class_names[c], fill=(0, 0, 0))
    return canvas


def legend_rows(picture, image_h, rows):
    """The name part (x >= 22) of each legend row of an overlay, as arrays."""
    a = np.array(picture)
    return [a[image_h + 4 + 18 * i - 2: image_h + 4 + 18 * i + 16, 22:] for i in range(rows)]


CJK_EMOJI = ['猫', 'ねこ', '\U0001F431']


def test_overlays_of_ascii_names_are_unchanged_and_share_one_palette(photo):
    from declip_mm.apis.visualization import class_palette, detection_overlay, segmentation_overlay
    image = np.ascontiguousarray(photo[:60, :90])
    labels = np.repeat(np.arange(3), 30)[None].repeat(60, 0)
    names = ['cat', 'dog', 'sofa']
    assert np.array_equal(np.array(segmentation_overlay(image, labels, names)),
                          np.array(legacy_overlay(image, labels, names)))
    boxes = np.array([[5., 5., 40., 40.], [50., 10., 85., 55.]])
    det = np.array(detection_overlay(image, boxes, np.array([0.9, 0.5]), np.array([0, 2]), names))
    palette = class_palette(3)
    assert (det[5, 20] == palette[0]).all() and (det[30, 85] == palette[2]).all()      # box outlines


def test_legend_draws_cjk_and_emoji_names(photo):
    """Class names in Chinese, Japanese and emoji are drawn with a font found here that has them (not as the default
    font's empty boxes); the emoji in colour."""
    import warnings

    from declip_mm.apis import fonts
    from declip_mm.apis.visualization import segmentation_overlay
    missing = [c for c in ''.join(CJK_EMOJI) if not any(f.covers(c) for f in fonts.fallback_faces())]
    if missing:
        pytest.skip(f'no font on this machine has {missing}: apt-get install fonts-noto-cjk fonts-noto-color-emoji')
    image = np.full((40, 120, 3), 128, np.uint8)
    labels = np.repeat(np.arange(3), 40)[None].repeat(40, 0)
    with warnings.catch_warnings():
        warnings.simplefilter('error', fonts.MissingGlyphWarning)
        drawn = legend_rows(segmentation_overlay(image, labels, CJK_EMOJI), 40, 3)
    boxes = legend_rows(legacy_overlay(image, labels, CJK_EMOJI), 40, 3)        # PIL's default font: boxes
    for name, row, box in zip(CJK_EMOJI, drawn, boxes):
        ink = (row < 200).any(-1)
        assert ink.sum() >= 12 * len(name) and not np.array_equal(row, box), name
    for name, row in zip(CJK_EMOJI[:2], drawn[:2]):                              # the CJK font's own glyphs
        face = next(f for f in fonts.fallback_faces() if all(f.covers(c) for c in name) and not f.color)
        alone = Image.new('RGB', (row.shape[1], row.shape[0]), (255, 255, 255))
        from PIL import ImageDraw
        ImageDraw.Draw(alone).text((2, 2 + fonts._default_font().getmetrics()[0]), name, fill=(0, 0, 0),
                                   font=face.font, anchor='ls')
        assert np.array_equal(row, np.array(alone)), name
    emoji = drawn[2].astype(int)
    assert ((emoji.max(-1) - emoji.min(-1)) > 60).sum() >= 10                    # coloured pixels


def test_legend_without_a_font_for_its_names_warns(photo, monkeypatch):
    """Where no font here has a character, the legend is still drawn (the default font's box) and a
    MissingGlyphWarning names the characters and what to install; names the default font has are unaffected."""
    from declip_mm.apis import fonts
    from declip_mm.apis.visualization import segmentation_overlay
    monkeypatch.setattr(fonts, 'fallback_faces', lambda: ())
    image = np.full((40, 120, 3), 128, np.uint8)
    labels = np.repeat(np.arange(3), 40)[None].repeat(40, 0)
    names = ['cat', '猫', 'dog']
    with pytest.warns(fonts.MissingGlyphWarning, match=r"'猫' \(U\+732B\).*apt-get install fonts-noto-cjk"):
        picture = segmentation_overlay(image, labels, names)
    assert np.array_equal(np.array(picture), np.array(legacy_overlay(image, labels, names)))
