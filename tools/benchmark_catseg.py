"""Speed and peak memory of CAT-Seg (configs/catseg) with random weights: the test protocol (640 x 640, four 384 windows
and the global view) per image, and one training iteration (forward, backward, AdamW) at the config's crop size.

    python tools/benchmark_catseg.py [--config configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py]
        [--vocabulary ade150] [--batch 2] [--repeats 2] [--device cpu|cuda] [--markdown docs/benchmarks.md]

The cost depends on the architecture and the vocabulary size (at most 256 classes are aggregated), not on the values.
Memory: as tools/benchmark_detection.py (CUDA max_memory_allocated; CPU peak RSS reset before each measurement).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
import argparse
import json

import torch
from mmengine.config import Config

from tools.benchmark_detection import best_of, cpu_name


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/catseg/catseg_declip-eva02-b16_coco-stuff-384_80k.py')
    parser.add_argument('--vocabulary', default='ade150', help='the test vocabulary (ade847, pc459, ade150, ...)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--markdown', default=None)
    args = parser.parse_args(argv)
    import declip_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(args.config)
    cfg.model.update(test_class_names=args.vocabulary, text_pretrained=None)
    cfg.model.backbone.pretrained = None
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(args.device)
    g = torch.Generator().manual_seed(0)

    model.eval()
    image = torch.randint(0, 256, (3, 640, 853), dtype=torch.uint8, generator=g)
    sample = SegDataSample(metainfo=dict(img_shape=(640, 853), ori_shape=(480, 640)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    with torch.no_grad():
        model.predict(data['inputs'], data['data_samples'])                        # warm-up
        test_s, test_mb = best_of(lambda: model.predict(data['inputs'], data['data_samples']), args.repeats,
                                  args.device)

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

    step()
    train_s, train_mb = best_of(step, args.repeats, args.device)
    device = torch.cuda.get_device_name() if args.device == 'cuda' else cpu_name()
    row = dict(config=_Path(args.config).name, device=device, vocabulary=args.vocabulary,
               classes=model.num_classes, test_ms_per_image=round(1000 * test_s, 1), test_peak_mb=round(test_mb),
               train_batch=args.batch, train_s_per_iter=round(train_s, 2), train_peak_mb=round(train_mb))
    print(json.dumps(row))
    if args.markdown:
        with open(args.markdown, 'a') as f:
            f.write(f"| {row['config']} | {device} | {args.vocabulary} ({row['classes']}) | {row['test_ms_per_image']} | "
                    f"{row['test_peak_mb']} | {args.batch} | {row['train_s_per_iter']} | {row['train_peak_mb']} |\n")


if __name__ == '__main__':
    main()
