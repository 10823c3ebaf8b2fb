"""The training-free segmentor's sliding windows go through the backbone in batches bounded by a
memory budget, with the results of the one-window-at-a-time path (stock mmseg ``EncoderDecoder.slide_inference``
and the authors' DeCLIPSegmentation re-implemented in tests/reference/), on the real sample photos at sizes with
edge windows (the last window shifted back) and windows smaller than the crop and than a patch multiple."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import EncoderDecoder
from mmseg.structures import SegDataSample

from declip_mm.models.segmentors.training_free import (DEFAULT_WINDOW_BUDGET_MB, slide_windows,
                                                       window_activation_bytes)
from reference.declip_segmentation_ref import reference_segment
from test_training_free_reference import segmentor_config, voc_inputs

pytestmark = pytest.mark.reference

NAMES = ['background; sky; wall', 'person; people', 'cat', 'dog; puppy', 'sofa; couch', 'tvmonitor']


def build(model_name, crop, stride, **test_cfg):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    cfg = segmentor_config(logit_scale=40.0, bg_thresh=0.2,
                           test_cfg=dict(mode='slide', crop_size=(crop, crop), stride=(stride, stride), **test_cfg))
    cfg['class_names'] = NAMES
    cfg['backbone']['model_name'] = cfg['text_encoder']['model_name'] = model_name
    return MODELS.build(cfg).eval()


def count_forwards(model):
    """Record the batch size of every backbone call of ``model``."""
    sizes, extract = [], model.backbone.extract_dense

    def recording(images, *args, **kwargs):
        sizes.append(images.shape[0])
        return extract(images, *args, **kwargs)
    model.backbone.extract_dense = recording
    return sizes


def photo_batch(model, sample_root, short_side, count=1):
    """The first ``count`` sample photos through the configs' pipeline (same size: cropped to the first's)."""
    inputs = list(voc_inputs(sample_root, short_side))[:count]
    h = min(img.shape[0] for img, _ in inputs)
    w = min(img.shape[1] for img, _ in inputs)
    imgs = [torch.from_numpy(img[:h, :w].transpose(2, 0, 1).copy()) for img, _ in inputs]
    samples = [SegDataSample(metainfo=dict(ori_shape=(h + 7, w - 5), img_shape=(h, w))) for _ in inputs]
    batch = model.data_preprocessor(dict(inputs=imgs, data_samples=samples))
    return batch['inputs'], batch['data_samples']


def test_slide_windows_is_mmsegs_grid():
    # the grid stock mmseg slides over (recorded from EncoderDecoder.slide_inference on a dummy encode_decode)
    class Recorder(EncoderDecoder):
        def __init__(self, crop, stride):
            torch.nn.Module.__init__(self)
            self.test_cfg = ConfigDict(crop_size=crop, stride=stride)
            self.out_channels, self.boxes = 1, []

        def encode_decode(self, x, metas):
            self.boxes.append(x.shape)
            return x[:, :1]

    for h, w, crop, stride in [(120, 160, (96, 96), (32, 32)), (90, 135, (96, 96), (32, 32)),
                               (448, 597, (336, 336), (112, 112)), (50, 700, (96, 64), (40, 30))]:
        x = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w).expand(1, 3, h, w)
        recorder = Recorder(crop, stride)
        EncoderDecoder.slide_inference(recorder, x, [dict()])
        boxes = slide_windows(h, w, crop, stride)
        assert len(boxes) == len(recorder.boxes)
        assert all(shape[-2:] == (y2 - y1, x2 - x1) for shape, (y1, y2, x1, x2) in zip(recorder.boxes, boxes))
        assert len({(y2 - y1, x2 - x1) for y1, y2, x1, x2 in boxes}) == 1       # one window size per image
        assert boxes[-1][1] == h and boxes[-1][3] == w                         # the last window ends at the border
    assert len(slide_windows(448, 597, (336, 336), (112, 112))) == 8


@pytest.mark.parametrize('short_side, crop, stride', [(120, 96, 32), (90, 96, 32), (75, 64, 24)])
def test_batched_windows_equal_one_window_at_a_time(sample_root, tiny_name, short_side, crop, stride):
    """fp32: labels equal and probabilities within 1e-5 of the one-window path (ours with window_batch=1, stock
    mmseg's loop over our encode_decode) and of the authors' DeCLIPSegmentation; one forward per image."""
    batched = build(tiny_name, crop, stride)
    single = build(tiny_name, crop, stride, window_batch=1)
    x, samples = photo_batch(batched, sample_root, short_side)
    boxes = slide_windows(*x.shape[-2:], (crop, crop), (stride, stride))
    h, w = boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2]
    assert len(boxes) > 1 and (short_side > crop or (h % 16 and h < crop))   # edge windows / padded small ones
    dense_fn = lambda win: single.backbone.extract_dense(win, normalize=False)  # noqa: E731

    def reference(prob_thd):
        return reference_segment(x, dense_fn, single.text_embeddings, single.text_class_index.tolist(),
                                 logit_scale=40.0, prob_thd=prob_thd, crop_size=crop, stride=stride, patch_size=16,
                                 ori_shape=samples[0].ori_shape)
    with torch.no_grad():
        # a threshold with 30-70 % of the pixels below it, in the widest gap between pixel values there (no
        # pixel within 1e-5 of it, so rounding at 1e-7 cannot move a pixel across it)
        best = reference(0.0)[1].max(0).values.flatten().sort().values
        values = best[int(0.3 * len(best)):int(0.7 * len(best))].unique()
        gap = int((values[1:] - values[:-1]).argmax())
        assert values[gap + 1] - values[gap] > 2e-5
        thresh = float(values[gap] + values[gap + 1]) / 2
        ref_labels, ref_probs = reference(thresh)
        batched.bg_thresh = single.bg_thresh = thresh
        calls_batched, calls_single = count_forwards(batched), count_forwards(single)
        out = batched.predict(x, samples)[0]
        one = single.predict(x, samples)[0]
        stock = single.postprocess_result(EncoderDecoder.slide_inference(single, x, [s.metainfo for s in samples]),
                                          [s.clone() for s in samples])[0]
    assert calls_batched == [len(boxes)]
    assert calls_single[:len(boxes)] == [1] * len(boxes)
    for other in (one, stock):
        torch.testing.assert_close(out.seg_logits.data, other.seg_logits.data, rtol=0, atol=1e-5)
        assert torch.equal(out.pred_sem_seg.data, other.pred_sem_seg.data)
    torch.testing.assert_close(out.seg_logits.data, ref_probs, rtol=0, atol=1e-5)
    assert torch.equal(out.pred_sem_seg.data[0], ref_labels)
    assert out.seg_logits.data.shape == (len(NAMES), *samples[0].ori_shape)
    below = ref_probs.max(0).values < thresh
    assert 0.2 < below.double().mean() < 0.8 and (ref_labels[below] == 0).all()       # the threshold is active
    assert len(ref_labels[~below].unique()) >= 2


def test_window_groups_follow_the_budget_and_the_cap(sample_root):
    """Two images per batch: the windows go in groups of windows_per_forward // 2 (a short last group where the
    count does not divide), with the one-window path's result."""
    name, crop, stride = 'DeCLIP-Tiny-ViT-16', 96, 32
    reference = build(name, crop, stride, window_batch=1)
    x, samples = photo_batch(reference, sample_root, 130, count=2)
    n_windows = len(slide_windows(*x.shape[-2:], (crop, crop), (stride, stride)))
    per_window_mb = window_activation_bytes((crop // 16) ** 2 + 1, reference.backbone.width,
                                            reference.backbone.num_heads, 4) / 2 ** 20
    uneven = 0
    with torch.no_grad():
        want = reference.predict(x, [s.clone() for s in samples])
        for test_cfg, per_forward in [(dict(window_batch=14), 14),
                                      (dict(window_budget_mb=10.5 * per_window_mb), 10),
                                      (dict(window_budget_mb=10.5 * per_window_mb, window_batch=6), 6),
                                      (dict(window_batch=1), 1)]:
            model = build(name, crop, stride, **test_cfg)
            assert model.windows_per_forward(crop, crop) == per_forward, test_cfg
            group = max(1, per_forward // 2)                          # windows per forward, for 2 images each
            calls = count_forwards(model)
            got = model.predict(x, [s.clone() for s in samples])
            sizes = [2 * group] * (n_windows // group) + ([2 * (n_windows % group)] if n_windows % group else [])
            assert calls == sizes, test_cfg
            uneven += n_windows % group != 0
            for a, b in zip(got, want):
                torch.testing.assert_close(a.seg_logits.data, b.seg_logits.data, rtol=0, atol=1e-5)
                assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)
    assert n_windows > 7 and uneven >= 1


def test_default_budget_runs_every_window_of_the_paper_configs_in_one_forward():
    """ViT-B/16 (EVA02-B-16, 768 wide, 12 heads) and ViT-L/14 (1024, 16 heads) at 336 windows, stride 112, on the
    configs' image sizes: 448 short side (4:3 and 16:9) and Cityscapes' 560 x 1120."""
    for width, heads, patch in [(768, 12, 16), (1024, 16, 14)]:
        tokens = (336 // patch) ** 2 + 1
        fits = DEFAULT_WINDOW_BUDGET_MB * 2 ** 20 // window_activation_bytes(tokens, width, heads, 4)
        for h, w in [(448, 597), (448, 796), (560, 1120)]:
            assert len(slide_windows(h, w, (336, 336), (112, 112))) <= fits, (width, h, w)


def test_window_activation_estimate():
    # 8 x tokens x width for the residual stream, q/k/v and the MLP; heads x tokens^2 for the attention matrices
    assert window_activation_bytes(442, 768, 12, 4) == 4 * (8 * 442 * 768 + 12 * 442 ** 2)
    assert window_activation_bytes(10, 64, 4, 8) == 2 * window_activation_bytes(10, 64, 4, 4)


@pytest.mark.parametrize('test_cfg, match', [(dict(window_batch=0), 'window_batch must be a positive int'),
                                             (dict(window_batch=2.5), 'window_batch must be a positive int'),
                                             (dict(window_budget_mb=0), 'window_budget_mb must be a positive'),
                                             (dict(window_budget_mb='1GB'), 'window_budget_mb must be a positive')])
def test_bad_window_settings_are_refused_at_construction(test_cfg, match):
    with pytest.raises(ValueError, match=match):
        build('DeCLIP-Tiny-ViT-16', 96, 32, **test_cfg)


def test_set_class_vocabulary_equals_a_segmentor_built_with_it(sample_root):
    """Swapping the vocabulary of a built segmentor (the user APIs' per-call vocabularies) predicts exactly what a
    segmentor constructed with that vocabulary predicts; a background index outside it is refused."""
    import numpy as np
    from declip_mm.apis import build_segmentor, load_image, segment_image
    torch.manual_seed(0)
    backbone = dict(type='DeCLIPViT', model_name='DeCLIP-Tiny-ViT-16', attn_scale='1/sqrt(d)')
    text = dict(type='OpenCLIPTextEncoder', model_name='DeCLIP-Tiny-ViT-16', templates='simple', embedding_cache=False)
    kwargs = dict(mode='csa', bg_thresh=0.3, test_cfg=dict(mode='slide', crop_size=(96, 96), stride=(64, 64)))
    new = ['sky', 'cat', 'sofa; couch']
    built = build_segmentor(backbone, text, new, bg_index=2, **kwargs)
    swapped = build_segmentor(backbone, text, ['dog', 'tree'], **kwargs)
    swapped.backbone.load_state_dict(built.backbone.state_dict())
    swapped.set_class_vocabulary(built.class_embeddings, bg_index=2)
    assert swapped.class_names == new and (swapped.num_classes, swapped.out_channels) == (3, 4)
    image = load_image(sorted((sample_root / 'voc' / 'JPEGImages').glob('*.jpg'))[0])
    labels_a, probs_a = segment_image(built, image, short_side=128)
    labels_b, probs_b = segment_image(swapped, image, short_side=128)
    assert np.array_equal(labels_a, labels_b) and torch.equal(probs_a, probs_b)
    assert (labels_a == 2).any()                      # the threshold put pixels on the background index
    with pytest.raises(ValueError, match='bg_index 3 outside the 3 classes'):
        swapped.set_class_vocabulary(built.class_embeddings, bg_index=3)
