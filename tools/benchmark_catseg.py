"""Speed and peak memory of CAT-Seg (configs/catseg) with random weights: the test protocol (640 x 640, four 384 windows
and the global view) per image, and one training iteration (forward, backward, AdamW) at the config's crop size.

    python tools/benchmark_catseg.py [--config configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py]
        [--vocabulary ade150] [--batch 2] [--repeats 2] [--device cpu|cuda] [--skip-train] [--profile]
        [--markdown docs/benchmarks.md] [--allow-busy]

The cost depends on the architecture and the vocabulary size (at most 256 classes are aggregated), not on the values.
Memory: as tools/benchmark_detection.py (CUDA max_memory_allocated; CPU peak RSS reset before each measurement). FLOPs:
torch's counter on the warm-up pass / iteration (tools/benchmarks/flops.py); share of the fp32 matmul peak measured in
the same run. Timing (min and median), load watching and the markdown rows: tools/benchmarks/harness.py.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm and tools, not an installed one
import argparse

import torch
from mmengine.config import Config

from tools.benchmarks import harness
from tools.benchmarks.flops import counted_flops
from tools.benchmarks.harness import Column
from tools.benchmarks.roofline import add_profile, add_roofline

COLUMNS = [Column('config', 'config', is_key=True), Column('device', 'device', is_key=True),
           Column('test vocabulary', 'vocabulary_text', is_key=True)] + harness.TEST_AND_TRAIN_COLUMNS


def build(config, vocabulary, device):
    import declip_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.update(test_class_names=vocabulary, text_pretrained=None)
    cfg.model.backbone.pretrained = None
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model).to(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py')
    parser.add_argument('--vocabulary', default='ade150', help='the test vocabulary (ade847, pc459, ade150, ...)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--skip-train', action='store_true', help='time the test protocol only')
    parser.add_argument('--profile', action='store_true', help='profile one more test pass (top ops)')
    harness.add_arguments(parser, repeats=2)
    args = parser.parse_args(argv)
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    bench = harness.Bench('catseg', args, args.device, title='CAT-Seg')
    peaks = bench.measure_peaks(['fp32'])
    cfg, model = build(args.config, args.vocabulary, args.device)
    g = torch.Generator().manual_seed(0)
    label = f'CAT-Seg {model.backbone.model_name}'
    label = f'{label} (paper size)' if 'B-16' in label or 'L-14' in label else label

    model.eval()
    image = torch.randint(0, 256, (3, 640, 853), dtype=torch.uint8, generator=g)
    sample = SegDataSample(metainfo=dict(img_shape=(640, 853), ori_shape=(480, 640)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    with torch.no_grad():
        test_flops, _ = counted_flops(model.predict, data['inputs'], data['data_samples'])     # warm-up, counted
        base = harness.memory_start(args.device)
        test = bench.measure(lambda: model.predict(data['inputs'], data['data_samples']), warmup=0)
        test_mb = harness.memory_peak(args.device, base)
        if args.profile:
            add_profile(bench, 'CAT-Seg test', label, 'fp32',
                        lambda: model.predict(data['inputs'], data['data_samples']))
    add_roofline(bench, 'CAT-Seg test', label, f'640x853 -> 4 windows + global at 384, {args.vocabulary}', 'fp32',
                 'image', test, None, test_flops)
    row = dict(config=_Path(args.config).name, device=bench.machine['device_name'], vocabulary=args.vocabulary,
               classes=model.num_classes, vocabulary_text=f'{args.vocabulary} ({model.num_classes})',
               test_ms_per_image=1000 * test.min, test_ms_median=1000 * test.median, test_gflop=test_flops / 1e9,
               test_peak_share=test_flops / test.min / 1e9 / peaks['fp32'] if peaks.get('fp32') else None,
               test_peak_mb=round(test_mb), train_batch=None if args.skip_train else args.batch)
    states = [test.state]

    if not args.skip_train:
        model.train()
        crop = cfg.model.data_preprocessor.size[0]
        labels = torch.randint(0, len(model.class_names), (args.batch, 1, crop, crop), generator=g)
        samples = [SegDataSample(gt_sem_seg=PixelData(data=labels[i]), metainfo=dict(img_shape=(crop, crop)))
                   for i in range(args.batch)]
        batch = dict(inputs=list(torch.randint(0, 256, (args.batch, 3, crop, crop), dtype=torch.uint8, generator=g)),
                     data_samples=samples)
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=1e-4)

        def step():
            data = model.data_preprocessor(batch, True)
            loss = model.loss(data['inputs'], data['data_samples'])['loss_bce']
            optim.zero_grad()
            loss.backward()
            optim.step()

        train_flops, _ = counted_flops(step)                                                  # warm-up, counted
        base = harness.memory_start(args.device)
        train = bench.measure(step, warmup=0)
        train_mb = harness.memory_peak(args.device, base)
        add_roofline(bench, 'CAT-Seg training iteration', label, f'{crop}x{crop}, batch {args.batch}', 'fp32',
                     'iteration', train, None, train_flops)
        row.update(train_s_per_iter=train.min, train_s_median=train.median, train_gflop=train_flops / 1e9,
                   train_peak_share=train_flops / train.min / 1e9 / peaks['fp32'] if peaks.get('fp32') else None,
                   train_peak_mb=round(train_mb))
        states.append(train.state)
    bench.add(row, harness.merge_states(states))
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    raise SystemExit(main())
