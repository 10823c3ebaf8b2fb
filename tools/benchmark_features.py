"""Speed of dense-feature export (``DenseFeatureExtractor``) and region classification (``RegionClassifier``), with
random weights, on the real sample photos.

    python tools/benchmark_features.py [--model-name EVA02-B-16] [--long-side 448] [--images 3] [--regions 20]
        [--dtypes fp32 bf16] [--device cpu|cuda] [--profile] [--markdown docs/benchmarks.md] [--allow-busy]

Feature export: each photo (as ``declip-mm features`` reads it) through ``DenseFeatureExtractor(...)(photo)``:
resize to ``--long-side``, normalise, pad to the patch size, the dense map in the extractor's precision, back to the
CPU. Region classification: the COCO-panoptic protocol's network input (configs/region_classification/
region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py: ResizeLongestPad 560, the config's data preprocessor),
``--regions`` boxes of a grid over the photo, box pooling (RoIAlign 1x1) and the 133 COCO-panoptic classes.
GFLOP: tools/benchmarks/flops.py (``vit_flops``, ``region_flops``), and torch's counter on the warm-up pass; share
of the matmul peak of the same precision measured in the same run. Timing, load watching and the markdown rows:
tools/benchmarks/harness.py.
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm and tools, not an installed one
import argparse
import math
from contextlib import nullcontext

import numpy as np
import torch

from tools.benchmarks import harness
from tools.benchmarks.flops import counted_flops, region_flops, vit_flops
from tools.benchmarks.harness import Column, fmt_percent, fmt_sig
from tools.benchmarks.roofline import add_profile, add_roofline

REGION_CONFIG = 'configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py'
AUTOCAST = dict(bf16=torch.bfloat16, fp16=torch.float16)
COLUMNS = [Column('workflow', 'workflow', is_key=True), Column('model', 'model', is_key=True),
           Column('input', 'input', is_key=True), Column('device', 'device', is_key=True),
           Column('precision', 'dtype', is_key=True), Column('ms / image (min)', 'ms', fmt_sig(3)),
           Column('ms / image (median)', 'ms_median', fmt_sig(3)), Column('GFLOP / image', 'gflop', fmt_sig(4)),
           Column('GFLOP/s', 'gflops', fmt_sig(3)), Column('% of peak', 'peak_share', fmt_percent)]


def photos(count):
    from PIL import Image

    from declip_mm.datasets.sample_data import fetch_sample_data
    paths = sorted((fetch_sample_data() / 'voc' / 'JPEGImages').glob('*.jpg'))[:count]
    return [np.asarray(Image.open(p).convert('RGB')) for p in paths]


def grid_boxes(h, w, count):
    side = math.ceil(math.sqrt(count))
    boxes = [[w * j / side, h * i / side, w * (j + 1) / side, h * (i + 1) / side]
             for i in range(side) for j in range(side)][:count]
    return torch.tensor(boxes, dtype=torch.float32)


def build_region_classifier(model_name, device):
    import declip_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from declip_mm.registry import MODELS
    cfg = Config.fromfile(REGION_CONFIG)
    cfg.model.backbone.update(pretrained=None, model_name=model_name, mode='csa', attn_scale='1/sqrt(d)')
    cfg.model.text_encoder.update(pretrained=None, model_name=model_name, templates='simple', embedding_cache=False)
    init_default_scope('declip_mm')
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model).eval().to(device)


def region_inputs(cfg, model, images, regions):
    """Each photo through ResizeLongestPad + the data preprocessor, with ``regions`` grid boxes."""
    from mmengine.structures import BaseDataElement

    from declip_mm.datasets.panoptic_regions import ResizeLongestPad
    size = cfg.image_size
    out = []
    for rgb in images:
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        boxes = grid_boxes(*bgr.shape[:2], regions).numpy()
        res = ResizeLongestPad(size).transform(dict(img=bgr, gt_bboxes=boxes))
        sample = BaseDataElement(metainfo=dict(img_shape=res['img_shape']))
        sample.gt_bboxes = torch.from_numpy(res['gt_bboxes'])
        inputs = torch.from_numpy(np.ascontiguousarray(res['img'].transpose(2, 0, 1)))
        data = model.data_preprocessor(dict(inputs=[inputs], data_samples=[sample]))
        out.append((data['inputs'], data['data_samples']))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-name', default='EVA02-B-16')
    parser.add_argument('--long-side', type=int, default=448, help='feature export input (longest side)')
    parser.add_argument('--images', type=int, default=3)
    parser.add_argument('--regions', type=int, default=20, help='boxes per image for region classification')
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--workflows', nargs='+', default=['export', 'regions'], choices=['export', 'regions'])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--profile', action='store_true', help='profile one more pass of each workflow')
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    bench = harness.Bench('features', args, args.device, title='Feature export and region classification')
    peaks = bench.measure_peaks(args.dtypes)
    images = photos(args.images)
    paper = args.model_name in ('EVA02-B-16', 'ViT-B-16')
    label = f'{args.model_name} (paper size)' if paper else args.model_name

    def add(workflow, input_desc, dtype, fn, flops):
        counted, _ = counted_flops(fn)                                            # warm-up, counted
        timing = bench.measure(fn, warmup=0)
        n = len(images)
        seconds = timing.min / n
        bench.add(dict(workflow=workflow, model=label, input=input_desc, device=bench.machine['device_name'],
                       dtype=dtype, ms=1000 * seconds, ms_median=1000 * timing.median / n, gflop=flops / 1e9,
                       gflop_counted=counted / n / 1e9, gflops=flops / seconds / 1e9,
                       peak_share=flops / seconds / 1e9 / peaks[dtype] if peaks.get(dtype) else None), timing.state)
        add_roofline(bench, workflow, label, input_desc, dtype, 'image', timing, flops, counted / n, units_per_call=n)
        if args.profile:
            add_profile(bench, workflow, label, dtype, fn)

    if 'export' in args.workflows:
        from declip_mm.apis import DenseFeatureExtractor
        for dtype in args.dtypes:
            torch.manual_seed(0)
            fx = DenseFeatureExtractor(args.model_name, backbone=None, device=args.device, precision=dtype,
                                       long_side=args.long_side)
            p = fx.backbone.patch_size
            flops = 0
            for rgb in images:
                h, w = rgb.shape[:2]
                s = fx.long_side / max(h, w)
                flops += vit_flops(fx.backbone, math.ceil(round(h * s) / p) * p, math.ceil(round(w * s) / p) * p)
            add('feature export', f'VOC photos, longest side {fx.long_side}', dtype,
                lambda: [fx(rgb) for rgb in images], flops / len(images))
            del fx

    if 'regions' in args.workflows:
        cfg, model = build_region_classifier(args.model_name, args.device)
        inputs = [(x.to(args.device), s) for x, s in region_inputs(cfg, model, images, args.regions)]
        flops = sum(region_flops(model, *x.shape[-2:], args.regions) for x, _ in inputs) / len(inputs)
        for dtype in args.dtypes:
            autocast = torch.autocast(args.device, dtype=AUTOCAST[dtype]) if dtype in AUTOCAST else nullcontext()

            def run():
                with torch.no_grad(), autocast:
                    return [model(x, [s.clone() for s in samples]) for x, samples in inputs]
            add('region classification', f'{cfg.image_size}x{cfg.image_size}, {args.regions} boxes, '
                f'{model.num_classes if hasattr(model, "num_classes") else len(model.class_names)} classes', dtype,
                run, flops)
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    raise SystemExit(main())
