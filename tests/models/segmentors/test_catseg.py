"""CAT-Seg (CVPR'24) with a DeCLIP backbone: the aggregator, loss, fine-tuning rule, test protocol and
detectron2's mIoU against tests/reference/catseg_ref.py (written from CAT-Seg @6d3a188 and detectron2 @02b5c4e
without reading declip_mm); the configs through the Runner on tiny towers."""
from pathlib import Path

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


TINY = 'DeCLIP-Tiny-EVA02-16'


def tiny_catseg(names=('cat', 'dog', 'sky', 'grass', 'road')):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='CATSeg', backbone=dict(type='DeCLIPViT', model_name=TINY, mode='csa', attn_scale=1.0, out_indices=(0, 1)),
        text_model=TINY, class_names=list(names), clip_resolution=128,
        aggregator=dict(type='CATSegAggregator', text_dim=32, appearance_dim=32, feature_size=8, window=4, pad_len=16),
        test_cfg=dict(out_res=192, kernel=128, overlap=0.5),
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.7709383, 116.7460125, 104.09373615],
                               std=[68.5005327, 66.6321579, 70.3231630], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                               size=(128, 128))))


def test_only_the_named_clip_weights_train():
    model = tiny_catseg()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    clip = {n for n in trained if n.startswith(('backbone.', 'text_encoder.'))}
    depth = model.backbone.depth
    text_blocks = len(model.text_encoder.text.transformer.resblocks)
    assert clip == {f'backbone.visual.trunk.blocks.{i}.attn.{w}_proj.weight' for i in range(depth) for w in 'qv'} | \
        {f'text_encoder.text.transformer.resblocks.{i}.attn.in_proj_weight' for i in range(text_blocks)}
    assert all(p.requires_grad for p in model.aggregator.parameters())
    assert all(p.requires_grad for p in model.guidance_up.parameters())


def test_loss_equals_catseg_and_training_lowers_it():
    from declip_mm.models.segmentors import catseg_loss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 32, 32, generator=g)
    labels = torch.randint(0, 5, (2, 128, 128), generator=g)
    labels[:, :10] = 255
    torch.testing.assert_close(catseg_loss(logits, labels), catseg_ref.reference_bce_loss(logits, labels, 5))

    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = tiny_catseg()
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=g)
    samples = [SegDataSample(gt_sem_seg=PixelData(data=labels[i:i + 1])) for i in range(2)]
    for s in samples:
        s.set_metainfo(dict(img_shape=(128, 128), ori_shape=(128, 128)))
    data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), True)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(4):
        loss = model.loss(data['inputs'], data['data_samples'])['loss_bce']
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses


def test_predict_uses_the_sliding_window_protocol():
    from mmseg.structures import SegDataSample
    from declip_mm.models.segmentors.catseg_inference import sliding_window_probabilities
    model = tiny_catseg().eval()
    g = torch.Generator().manual_seed(2)
    image = torch.randint(0, 256, (3, 192, 256), dtype=torch.uint8, generator=g)
    sample = SegDataSample(metainfo=dict(img_shape=(192, 256), ori_shape=(150, 200)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])[0]
        raw = image.flip(0).float()                      # BGR -> RGB as the preprocessor, not normalised
        want = sliding_window_probabilities(raw, lambda c: model.logits(c, model.test_class_names, (1, 1)),
                                            ori_shape=(150, 200), clip_resolution=128, out_res=192, kernel=128,
                                            overlap=0.5)
    assert out.seg_logits.data.shape == (5, 150, 200)
    torch.testing.assert_close(out.seg_logits.data, want, rtol=0, atol=1e-4)     # normalise before / after the resize
    assert torch.equal(out.pred_sem_seg.data[0], out.seg_logits.data.argmax(0))


def test_catseg_vocabularies_and_pas20b_rule():
    from declip_mm.datasets.label_folder import catseg_vocabulary as load_catseg_class_names
    sizes = dict(coco=171, ade150=150, ade847=847, pc59=59, pc459=459, voc20=20, voc20b=59)
    for name, n in sizes.items():
        assert len(load_catseg_class_names(name)) == n, name
    assert load_catseg_class_names('ade847')[1] == 'building'          # 'building, edifice': the first synonym
    from mmseg.datasets import COCOStuffDataset
    assert load_catseg_class_names('coco') == list(COCOStuffDataset.METAINFO['classes'])
    pred = np.array([[0, 19, 20, 58], [3, 25, 20, 1]])
    assert np.array_equal(torch.as_tensor(pred).clamp(max=20).numpy(), catseg_ref.reference_voc20b_map(pred))
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    metric = D2IoUMetric(background_from=20)
    metric.dataset_meta = dict(classes=tuple(range(21)))
    gt = torch.tensor([[0, 19, 20, 20], [3, 255, 20, 1]])
    sample = SegDataSample(pred_sem_seg=PixelData(data=torch.as_tensor(pred)[None]), gt_sem_seg=PixelData(data=gt[None]))
    metric.process({}, [sample.to_dict()])
    assert metric.compute_metrics(metric.results)['mIoU'] == pytest.approx(100.0)


# git blob ids of CAT-Seg @6d3a188af95165147fe2f34a8237fa7d2633e784 `datasets/*.json` (git ls-tree 6d3a188 datasets/)
CATSEG_JSON_BLOBS = {
    'ade150.json': '58772475641879daf8ada3e5c5204773b576780a',
    'ade847.json': '5150122783f7330795ac28ca0dfeeb08bab8e3f3',
    'coco.json': '8feed8cb0c0a79d26879f3156ba22ad9557604cf',
    'pc459.json': 'a7554da8933c55cb57e2352466beccefb6ac2a89',
    'pc59.json': '5b1822edab9b73bac6a868349f0e18dda8923110',
    'voc20.json': 'b38e07ba1bd78eab8d3589a5f396c632fcfc13ac',
    'voc20b.json': '37f95f77b88dd8c94fca5702c71351b7704ea10e'}


def test_bundled_vocabularies_are_byte_identical_to_catseg():
    """Every bundled json has the git blob id of CAT-Seg's file (sha1 of 'blob <size>\\0' + the bytes): the same
    bytes, and every one of CAT-Seg's seven vocabularies is bundled."""
    import hashlib
    folder = Path(__file__).resolve().parents[3] / 'declip_mm' / 'vocabularies' / 'catseg'
    blobs = {}
    for path in sorted(folder.glob('*.json')):
        data = path.read_bytes()
        blobs[path.name] = hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
    assert blobs == CATSEG_JSON_BLOBS


@pytest.mark.slow
def test_catseg_configs_train_and_test_through_the_runner(sample_root, tmp_path):
    """The B/16 training config (solver, lr multipliers, clipping) with tiny towers: two iterations on the sample VOC
    photos, then the ADE-150 test config's protocol and d2 metric on them."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    repo = Path(__file__).resolve().parents[3]
    cfg = Config.fromfile(str(repo / 'configs/catseg/catseg_declip-eva02-b16_test-ade150.py'))
    names = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
             'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor']
    cfg.model.update(backbone=dict(cfg.model.backbone, model_name=TINY, pretrained=None, out_indices=(0, 1),
                                   input_size=128),
                     text_model=TINY, text_pretrained=None, class_names=names, test_class_names=names,
                     clip_resolution=128, test_cfg=dict(out_res=192, kernel=128, overlap=0.5),
                     aggregator=dict(cfg.model.aggregator, text_dim=32, appearance_dim=32, feature_size=8, window=4,
                                     pad_len=32))
    cfg.model.data_preprocessor.size = (128, 128)
    data = dict(type='LabelFolderSegDataset', data_root=str(sample_root / 'voc'), vocabulary=names,
                data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
        data, pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                        dict(type='RandomChoiceResize', scales=[(400, 128)], keep_ratio=True),
                        dict(type='RandomCrop', crop_size=(128, 128)), dict(type='PackSegInputs')]))
    cfg.test_dataloader.update(num_workers=0, dataset=dict(data, test_mode=True, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(800, 192), keep_ratio=True),
        dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
    cfg.train_cfg.update(max_iters=2, val_interval=100)
    cfg.param_scheduler[0].update(T_max=2, end=2)
    cfg.work_dir = str(tmp_path)
    cfg.env_cfg = dict(dist_cfg=dict(backend='gloo'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    groups = runner.optim_wrapper.optimizer.param_groups
    q_weight = runner.model.backbone.visual.trunk.blocks[0].attn.q_proj.weight
    clip_groups = {id(g) for g in groups for p in g['params'] if p is q_weight}
    assert {round(g['initial_lr'] / 2e-4, 6) for g in groups} == {1.0, 0.01}
    assert all(round(g['initial_lr'] / 2e-4, 6) == 0.01 for g in groups if id(g) in clip_groups)
    metrics = runner.test()
    assert {'d2/mIoU', 'd2/fwIoU', 'd2/mACC', 'd2/pACC'} <= set(metrics) and 0 <= metrics['d2/mIoU'] <= 100


def test_detectron2_checkpoint_import(tmp_path):
    """A synthetic DeCLIP_CATSeg detectron2 state dict (EVA-CLIP visual keys, rope tables, d2 prefixes) of a tiny model
    converts key for key; an unknown key stops the conversion with the list."""
    from test_backbone import to_eva_clip_format
    from tools.converters.catseg_d2_to_declip import convert
    model = tiny_catseg()
    torch.nn.init.normal_(model.aggregator.layers[0].attention.padding_tokens)
    d2 = {f'sem_seg_head.predictor.transformer.{k}': v for k, v in model.aggregator.state_dict().items()}
    d2.update({f'upsample{i + 1}.{k}': v for i in range(2) for k, v in model.guidance_up[i].state_dict().items()})
    d2.update({f'sem_seg_head.predictor.clip_model.{k}': v for k, v in to_eva_clip_format(model.backbone).items()})
    d2.update({f'sem_seg_head.predictor.clip_model.{k}': v for k, v in model.text_encoder.state_dict().items()})
    torch.save({'model': d2, 'iteration': 80000}, tmp_path / 'model_final.pth')
    repo = Path(__file__).resolve().parents[3]
    (tmp_path / 'cfg.py').write_text(f"""
_base_ = ['{repo}/configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py']
model = dict(backbone=dict(model_name='{TINY}', out_indices=(0, 1)), text_model='{TINY}', clip_resolution=128,
             class_names=['cat', 'dog', 'sky', 'grass', 'road'],
             aggregator=dict(text_dim=32, appearance_dim=32, feature_size=8, window=4, pad_len=16))
""")
    report = convert(str(tmp_path / 'model_final.pth'), str(tmp_path / 'ours.pth'), str(tmp_path / 'cfg.py'))
    assert 'sem_seg_head.predictor.clip_model.visual.rope.freqs_cos'[len('sem_seg_head.predictor.clip_model.'):] \
        in report.ignored and not report.missing and not report.unexpected
    converted = torch.load(tmp_path / 'ours.pth', weights_only=False)['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0, msg=key)
    d2['sem_seg_head.predictor.extra.weight'] = torch.zeros(1)
    torch.save({'model': d2}, tmp_path / 'bad.pth')
    with pytest.raises(KeyError, match='sem_seg_head.predictor.extra.weight'):
        convert(str(tmp_path / 'bad.pth'), str(tmp_path / 'x.pth'), str(tmp_path / 'cfg.py'))


def test_metrics_table_round_trips_exact_keys():
    """tools/test.py prints the metrics as a table; tools/eval_benchmarks.py reads back exactly the suite's key
    (d2/mIoU for CAT-Seg, never mmseg's mIoU beside it), from the last table printed."""
    from declip_mm.engine.runner_setup import metrics_table, read_metrics_table
    metrics = {'aAcc': np.float32(80.12), 'mIoU': 11.5, 'd2/mIoU': 42.17, 'd2/fwIoU': 1 / 3}
    log = 'noise | a | b |\n' + metrics_table({'mIoU': 1.0}) + '\nmore log\n' + metrics_table(metrics) + '\nbye\n'
    assert read_metrics_table(log) == {k: float(v) for k, v in metrics.items()}
    assert read_metrics_table(log)['d2/mIoU'] == 42.17 and read_metrics_table(log)['mIoU'] == 11.5
    assert read_metrics_table('mIoU: 12.0') == {}


@pytest.mark.slow
def test_catseg_suite_writes_the_six_benchmark_table(sample_root, tmp_path):
    """tools/eval_benchmarks.py --suite catseg runs tools/test.py on each test config (a tiny CAT-Seg on the sample
    VOC photos as 'voc20'; the other five missing) and writes the table with the paper's row."""
    import json
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[3]
    cfgs = tmp_path / 'cfgs'
    cfgs.mkdir()
    names = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
             'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor']
    (cfgs / 'tiny_voc20.py').write_text(f'''
_base_ = ['{repo}/configs/catseg/catseg_declip-eva02-b16_test-voc20.py']
names = {names!r}
model = dict(backbone=dict(model_name='{TINY}', pretrained=None, out_indices=(0, 1), input_size=128),
             text_model='{TINY}', text_pretrained=None, class_names=names, test_class_names=names,
             clip_resolution=128, test_cfg=dict(out_res=192, kernel=128, overlap=0.5),
             aggregator=dict(text_dim=32, appearance_dim=32, feature_size=8, window=4, pad_len=32),
             data_preprocessor=dict(size=(128, 128)))
test_dataloader = dict(num_workers=0, dataset=dict(_delete_=True, type='LabelFolderSegDataset',
    data_root='{sample_root / "voc"}', vocabulary=names, test_mode=True,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(800, 192), keep_ratio=True),
              dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
''')
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, str(repo / 'tools/eval_benchmarks.py'), 'none', '--suite', 'catseg',
                           '--configs-dir', str(cfgs), '--prefix', 'tiny_', '--out', str(out)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(repo)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert list(summary['results']) == ['ade847', 'pc459', 'ade150', 'pc59', 'voc20', 'voc20b']
    voc20 = summary['results']['voc20']
    assert voc20['status'] == 'ok' and voc20['metric'] == 'd2/mIoU' and 0 <= voc20['value'] <= 100
    # the value is the one mmengine logged for d2/mIoU in tools/test.py's own work dir
    logs = ''.join(p.read_text() for p in (out / 'voc20').rglob('*.log'))
    assert f"d2/mIoU: {voc20['value']:.4f}" in logs
    assert all(summary['results'][b]['status'].startswith('missing config')
               for b in ['ade847', 'pc459', 'ade150', 'pc59', 'voc20b'])
    table = (out / 'summary.md').read_text()
    assert f"| ours | n/a | n/a | n/a | n/a | {voc20['value']:.1f} | n/a | {voc20['value']:.1f} (partial) |" in table
    assert '| DeCLIP_CATSeg README, released checkpoint (EVA02-B/16) | 15.2 | 21.5 | 36.6 | 60.9 | 96.7 | 81.5 | 52.1 |' in table


@pytest.mark.parametrize('bench', ['ade847', 'pc459', 'ade150', 'pc59', 'voc20', 'voc20b'])
def test_l14_test_configs_are_the_b16_protocol_on_the_l14_model(bench):
    """Each L/14-336 test config = the B/16 test config's data, vocabulary and metric on the L/14 training config's
    model (blocks 7/15, CLIP at 336)."""
    from mmengine.config import Config
    root = Path(__file__).resolve().parents[3] / 'configs/catseg'
    b16 = Config.fromfile(str(root / f'catseg_declip-eva02-b16_test-{bench}.py'))
    l14 = Config.fromfile(str(root / f'catseg_declip-eva02-l14-336_test-{bench}.py'))
    l14_train = Config.fromfile(str(root / 'catseg_declip-eva02-l14-336_coco-stuff-336_80k.py'))
    assert l14.test_dataloader.dataset == b16.test_dataloader.dataset
    assert l14.test_evaluator == b16.test_evaluator
    assert l14.model.test_class_names == b16.model.test_class_names
    assert {k: v for k, v in l14.model.items() if k != 'test_class_names'} == \
        {k: v for k, v in l14_train.model.items() if k != 'test_class_names'}
    assert l14.model.backbone.model_name == 'EVA02-L-14-336' and tuple(l14.model.backbone.out_indices) == (7, 15)
    assert l14.model.clip_resolution == 336
