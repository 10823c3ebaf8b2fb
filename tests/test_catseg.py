"""Issue 10 (started): CAT-Seg's test protocol and detectron2's mIoU, against tests/reference/catseg_ref.py
(written from CAT-Seg @6d3a188 and detectron2 @02b5c4e without reading declip_mm)."""
import numpy as np
import torch
import pytest

from declip_mm.evaluation import D2IoUMetric
from declip_mm.models.segmentors.catseg_inference import sliding_window_probabilities, window_coverage
from reference import catseg_ref


def test_window_coverage_is_the_references():
    torch.testing.assert_close(window_coverage(640, 384, 256), catseg_ref.reference_coverage(640, 384, 256).float())
    assert set(window_coverage(640, 384, 256).unique().tolist()) == {1.0, 2.0, 4.0}


@pytest.mark.parametrize('clip_res, shape', [(384, (640, 853)), (336, (700, 640))])
def test_sliding_window_equals_catseg(clip_res, shape):
    """Windows + global view, CLIP normalisation, upsampling then sigmoid, fold / coverage, the average and the
    final resize, with a model whose output depends on the crop's content and position."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, *shape, generator=g) * 255
    weight = torch.randn(5, 3, 3, 3, generator=g)

    def model(crops):                                  # (N, 3, r, r) -> (N, 5, r / 16, r / 16) logits
        return torch.nn.functional.avg_pool2d(torch.nn.functional.conv2d(crops, weight, padding=1), 16)

    ours = sliding_window_probabilities(image, model, ori_shape=(480, 640), clip_resolution=clip_res)
    want = catseg_ref.reference_sliding_window(image[None], model, clip_res=clip_res, output_size=(480, 640))
    want = want[0] if want.dim() == 4 else want
    assert ours.shape == (5, 480, 640)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)


def test_d2_miou_equals_detectron2():
    """Random predictions over 12 classes where two classes are predicted but absent from every label (mmseg would
    count them as IoU 0) and ignore pixels are present."""
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for _ in range(4):
        gt = rng.integers(0, 10, (40, 50))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 12, gt.shape))
        pred[pred == 255] = 11
        preds.append(pred)
        gts.append(gt)
    ours, mmseg = D2IoUMetric(), IoUMetric()
    for metric in (ours, mmseg):
        metric.dataset_meta = dict(classes=tuple(f'c{i}' for i in range(12)))
        for pred, gt in zip(preds, gts):
            sample = SegDataSample(pred_sem_seg=PixelData(data=torch.from_numpy(pred)[None]),
                                   gt_sem_seg=PixelData(data=torch.from_numpy(gt)[None]))
            metric.process({}, [sample.to_dict()])
    got = ours.compute_metrics(ours.results)
    want = catseg_ref.reference_d2_miou(preds, gts, num_classes=12, ignore_label=255)
    for key in ('mIoU', 'fwIoU', 'mACC', 'pACC'):
        assert got[key] == pytest.approx(want[key], abs=0.006), key
    assert got['mIoU'] > mmseg.compute_metrics(mmseg.results)['mIoU'] + 1     # the averaging differs


def test_linear_attention_and_window_mask_equal_catseg():
    from declip_mm.models.segmentors.catseg_aggregator import linear_attention, shifted_window_mask
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, n, 4, 32, generator=g) for n in (7, 256, 256))
    torch.testing.assert_close(linear_attention(q, k, v), catseg_ref.reference_linear_attention(q, k, v),
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(shifted_window_mask(24, 12, 6), catseg_ref.reference_swin_shift_mask(24, 24, 12, 6))


def small_aggregator(**kwargs):
    from declip_mm.models.segmentors.catseg_aggregator import CATSegAggregator
    torch.manual_seed(0)
    return CATSegAggregator(text_dim=32, appearance_dim=32, feature_size=8, window=4, **kwargs)


def aggregator_inputs(b, t, g=None):
    g = g or torch.Generator().manual_seed(1)
    return (torch.randn(b, 32, 8, 8, generator=g), torch.randn(b, t, 1, 32, generator=g),
            [torch.randn(b, 256, 16, 16, generator=g), torch.randn(b, 128, 32, 32, generator=g)])


@pytest.mark.parametrize('pool', [(2, 2), (1, 1)])
def test_aggregator_shapes_padding_and_batch_independence(pool):
    """Fewer classes than pad slots (learned padding), per-image results independent of the batch (the mmseg
    port's guidance mix-up would fail this), gradients reach every trained part."""
    model = small_aggregator(pad_len=16)
    dense, text, guidance = aggregator_inputs(2, 5)
    logits = model(dense, text, guidance, pool)
    assert logits.shape == (2, 5, 32, 32)
    alone = model(dense[1:], text[1:], [x[1:] for x in guidance], pool)
    torch.testing.assert_close(logits[1:], alone, rtol=1e-4, atol=1e-5)
    logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if 'pad_' not in n)


def test_aggregator_keeps_the_most_relevant_classes_of_large_vocabularies():
    model = small_aggregator(pad_len=8)
    dense, text, guidance = aggregator_inputs(2, 20)
    cost = torch.einsum('bchw,btpc->bpthw', torch.nn.functional.normalize(dense, dim=1),
                        torch.nn.functional.normalize(text, dim=-1))
    chosen = model.select_classes(cost)
    want = catseg_ref.reference_topk_classes(cost, pad_len=8)
    assert [set(a.tolist()) for a in chosen] == [set(a.tolist()) for a in want]
    logits = model(dense, text, guidance, (1, 1))
    assert logits.shape == (2, 20, 32, 32)
    for i in range(2):
        dropped = sorted(set(range(20)) - set(chosen[i].tolist()))
        assert (logits[i, dropped] == -100).all() and (logits[i, chosen[i]] != -100).all()
