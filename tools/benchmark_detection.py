"""Speed and peak memory of F-ViT (configs/detection) with random weights: test ms per image and one training
iteration (forward, backward, AdamW) at the config's resolution.

    python tools/benchmark_detection.py [--config configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py]
        [--batch 2] [--repeats 3] [--device cpu|cuda] [--skip-train] [--profile] [--markdown docs/benchmarks.md]

The architecture, not the values, sets the cost: the backbone has random weights and the class embeddings are
random unit vectors. On a CPU, SyncBN becomes BN (SyncBN needs a process group and CUDA) and training runs in
fp32 (AmpOptimWrapper needs a GPU); on CUDA the config's fp16 AMP is used. Memory: peak extra memory over the
loaded model (CUDA: max_memory_allocated; CPU: the process's peak RSS, reset before each measurement). FLOPs:
torch's counter (tools/benchmarks/flops.py ``flop_counter``) on the warm-up pass / iteration; share of the matmul
peak of the same precision measured in the same run. Timing (min and median), load watching and the markdown rows:
tools/benchmarks/harness.py.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import tempfile

import torch
from mmengine.config import Config, ConfigDict

from tools.benchmarks import harness
from tools.benchmarks.flops import counted_flops, vit_flops
from tools.benchmarks.harness import Column
from tools.benchmarks.roofline import add_profile, add_roofline


def replace_syncbn(cfg):
    if isinstance(cfg, dict):
        return {k: (dict(v, type='BN') if isinstance(v, dict) and v.get('type') == 'SyncBN' else replace_syncbn(v))
                for k, v in cfg.items()}
    if isinstance(cfg, list):
        return [replace_syncbn(v) for v in cfg]
    return cfg


def build(config: str, device: str, embeddings_dir: str):
    import declip_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from declip_mm.datasets.ov_detection import class_names_from
    from declip_mm.models.text.embedding_file import save_class_embeddings
    cfg = Config.fromfile(config)
    head = cfg.model.roi_head.bbox_head
    names = class_names_from(head.cls_predictor_cfg.class_names)
    path = f'{embeddings_dir}/random.pt'
    save_class_embeddings(path, names + ['background'], torch.randn(len(names) + 1, head.fc_out_channels))
    head.cls_predictor_cfg.embeddings = path
    if isinstance(head.loss_cls.class_weight, str):
        head.loss_cls = dict(type='OVCrossEntropyLoss', class_weight=[1.0] * len(names) + [0.9])
    cfg.model.backbone.pretrained = None
    model_cfg = cfg.model if device == 'cuda' else ConfigDict(replace_syncbn(cfg.model.to_dict()))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return cfg, MODELS.build(model_cfg).to(device)


def fake_batch(size: int, batch: int, base_classes, device: str):
    """Random images with 8 random boxes each, labelled with base classes (training sees no novel one)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    base = torch.tensor(base_classes)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g))
        xy = torch.rand(8, 2, generator=g) * size * 0.6
        wh = 16 + torch.rand(8, 2, generator=g) * size * 0.3
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0),
                                             pad_shape=(size, size), batch_input_shape=(size, size)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=base[torch.randint(0, len(base), (8,), generator=g)])
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


COLUMNS = [Column('config', 'config', is_key=True), Column('device', 'device', is_key=True),
           Column('size', 'size', is_key=True), Column('precision', 'precision', is_key=True)] + \
    harness.TEST_AND_TRAIN_COLUMNS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py')
    parser.add_argument('--batch', type=int, default=2, help='images per training iteration')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--skip-train', action='store_true', help='time the test pass only')
    parser.add_argument('--profile', action='store_true', help='profile one more test pass (top ops)')
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    bench = harness.Bench('detection', args, args.device, title='Detection')
    amp = args.device == 'cuda'
    dtype = 'fp16' if amp else 'fp32'
    peaks = bench.measure_peaks(['fp32', 'fp16'] if amp else ['fp32'])
    with tempfile.TemporaryDirectory() as tmp:
        cfg, model = build(args.config, args.device, tmp)
    size = cfg.model.data_preprocessor.pad_size_divisor
    weights = model.roi_head.bbox_head.loss_cls.class_weight[:-1]
    base_classes = [c for c, w in enumerate(weights) if w > 0]
    name = f'F-ViT {model.backbone.model_name}'
    label = f'{name} (paper size)' if 'B-16' in name or 'L-14' in name else name

    model.eval()
    data = model.data_preprocessor(fake_batch(size, 1, base_classes, args.device), False)
    with torch.no_grad(), torch.autocast(args.device, enabled=amp, dtype=torch.float16):
        test_flops, _ = counted_flops(model.predict, data['inputs'], data['data_samples'])     # warm-up, counted
        base = harness.memory_start(args.device)
        test = bench.measure(lambda: model.predict(data['inputs'], data['data_samples']), warmup=0)
        test_mb = harness.memory_peak(args.device, base)
        if args.profile:
            add_profile(bench, 'F-ViT test', label, dtype, lambda: model.predict(data['inputs'], data['data_samples']))
    backbone_flops = vit_flops(model.backbone, size, size, model.backbone.mode)
    add_roofline(bench, 'F-ViT test', label, f'{size}x{size}, 1000 proposals', dtype, 'image', test, None, test_flops)
    row = dict(config=_Path(args.config).name, device=bench.machine['device_name'], size=size,
               precision='fp16 AMP' if amp else 'fp32', test_ms_per_image=1000 * test.min,
               test_ms_median=1000 * test.median, test_gflop=test_flops / 1e9,
               test_backbone_gflop_formula=backbone_flops / 1e9,
               test_peak_share=test_flops / test.min / 1e9 / peaks[dtype] if peaks.get(dtype) else None,
               test_peak_mb=round(test_mb), train_batch=args.batch if not args.skip_train else None)
    states = [test.state]

    if not args.skip_train:
        model.train()
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.1)
        scaler = torch.amp.GradScaler(enabled=amp)
        batch = fake_batch(size, args.batch, base_classes, args.device)

        def step():
            data = model.data_preprocessor(batch, True)
            with torch.autocast(args.device, enabled=amp, dtype=torch.float16):
                losses = model.loss(data['inputs'], data['data_samples'])
            loss = sum(v.sum() if torch.is_tensor(v) else sum(v) for k, v in losses.items() if 'loss' in k)
            optim.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()

        train_flops, _ = counted_flops(step)                                                 # warm-up, counted
        base = harness.memory_start(args.device)
        train = bench.measure(step, warmup=0)
        train_mb = harness.memory_peak(args.device, base)
        add_roofline(bench, 'F-ViT training iteration', label, f'{size}x{size}, batch {args.batch}', dtype,
                     'iteration', train, None, train_flops)
        row.update(train_s_per_iter=train.min, train_s_median=train.median, train_gflop=train_flops / 1e9,
                   train_peak_share=train_flops / train.min / 1e9 / peaks[dtype] if peaks.get(dtype) else None,
                   train_peak_mb=round(train_mb))
        states.append(train.state)
    bench.add(row, harness.merge_states(states))
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    raise SystemExit(main())
