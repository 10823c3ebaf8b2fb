"""Images/s of the training-free segmentation protocol: ours (TrainingFreeSegmentor, windows batched through the
backbone) against a one-window-at-a-time implementation of the authors' DeCLIPSegmentation
(tools/benchmarks/authors_loop.py), same model, same photos, same run.

    python tools/benchmark_inference.py [--config configs/segmentation/training-free_declip-eva02-b16_voc21.py]
        [--model-name EVA02-B-16] [--images 3] [--repeats 3] [--dtypes fp32 bf16] [--device cpu|cuda]
        [--profile] [--markdown docs/benchmarks.md] [--allow-busy]

Rows per precision: the authors' loop ('authors', one backbone forward per window, each window's logits padded to
the whole canvas), ours with ``test_cfg.window_batch=1`` (one window per forward: separates our code from the
batching), ours batched (the config's default ``window_budget_mb``) and, in fp32, ours batched with the backbone
exported to ONNX (``declip_mm.deploy``) and run by onnxruntime's CPU provider (``--onnx-dir``). Inputs: the real sample VOC photos
(tools/fetch_sample_data.py) through the config's test Resize (448 short side) and data preprocessor; the backbone
and the text tower have random weights (the architecture and the number of text queries set the cost; the text
prompts are the 'simple' template, which changes only the one-time encoding). bf16 / fp16 rows run under
``torch.autocast``. Each row also gives the largest probability difference to the authors' loop in the same
precision and the share of pixels whose label agrees, and the GFLOP per image (tools/benchmarks/flops.py
``training_free_flops``, the same products on every path), GFLOP/s and share of the matmul peak measured in the
same run. Timings: min and median of ``--repeats`` passes over all photos after a warm-up pass over them that
torch's FLOP counter watches (through
tools/benchmarks/harness.py, which also refuses to write rows of a busy machine into --markdown).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm and tools, not an installed one
import argparse
from contextlib import nullcontext
from pathlib import Path

import torch
from mmengine.config import Config

from tools.benchmarks import harness
from tools.benchmarks.authors_loop import authors_segment
from tools.benchmarks.flops import counted_flops, training_free_flops
from tools.benchmarks.harness import Column, fmt_percent, fmt_sig
from tools.benchmarks.roofline import add_profile, add_roofline

DTYPES = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)
COLUMNS = [Column('model', 'model', is_key=True), Column('device', 'device', is_key=True),
           Column('precision', 'dtype', is_key=True), Column('path', 'path', is_key=True),
           Column('images / s (best)', 'images_per_s', fmt_sig(3)),
           Column('images / s (median)', 'images_per_s_median', fmt_sig(3)), Column('× authors', 'speedup'),
           Column('GFLOP / image', 'gflop_per_image', fmt_sig(4)), Column('GFLOP/s', 'gflops', fmt_sig(3)),
           Column('% of peak', 'peak_share', fmt_percent), Column('peak extra MB', 'peak_mb'),
           Column('max abs Δp vs authors', 'max_prob_diff'), Column('labels equal (%)', 'labels_equal')]


def onnxruntime_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def build(config: str, model_name, device: str):
    """The config's segmentor with random weights (backbone and text tower), in eval mode on ``device``."""
    import declip_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.pretrained = None
    cfg.model.text_encoder.update(pretrained=None, templates='simple', embedding_cache=False)
    if model_name:
        cfg.model.backbone.model_name = cfg.model.text_encoder.model_name = model_name
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return cfg, MODELS.build(cfg.model).eval().to(device)


def sample_inputs(cfg, model, count: int):
    """The first ``count`` sample VOC photos through the config's LoadImageFromFile + Resize and the model's data
    preprocessor: [(inputs (1, 3, h, w), data_samples)]."""
    from mmcv.transforms import LoadImageFromFile
    from mmseg.registry import TRANSFORMS
    from mmseg.structures import SegDataSample

    from declip_mm.datasets.sample_data import fetch_sample_data
    resize = TRANSFORMS.build(next(t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize'))
    photos = sorted((fetch_sample_data() / 'voc' / 'JPEGImages').glob('*.jpg'))[:count]
    out = []
    for path in photos:
        results = resize(LoadImageFromFile()(dict(img_path=str(path))))
        img = results['img']
        sample = SegDataSample(metainfo=dict(ori_shape=results['ori_shape'], img_shape=img.shape[:2]))
        data = model.data_preprocessor(dict(inputs=[torch.from_numpy(img.transpose(2, 0, 1).copy())],
                                            data_samples=[sample]), False)
        out.append((data['inputs'], data['data_samples']))
    return out


def authors_run(model):
    """The authors' loop on ``model``'s backbone and text queries: (x, samples) -> (labels, probs (K, H, W))."""
    crop, stride = model.test_cfg.crop_size, model.test_cfg.stride
    queries, query_idx = model.text_embeddings, model.text_class_index.tolist()

    def dense_fn(window):
        return model.backbone.extract_dense(window, mode=model.mode, normalize=False)

    def run(x, samples):
        return authors_segment(x, dense_fn, queries, query_idx, logit_scale=model.logit_scale,
                               prob_thd=model.bg_thresh, crop_size=crop, stride=stride,
                               patch_size=model.backbone.patch_size, ori_shape=samples[0].ori_shape)
    return run


def ours_run(model, window_batch):
    def run(x, samples):
        model.test_cfg.window_batch = window_batch
        out = model.predict(x, [s.clone() for s in samples])[0]
        return out.pred_sem_seg.data[0], out.seg_logits.data
    return run


def onnx_run(model, folder):
    """Ours batched with the backbone's ``image_encoder.onnx`` (``declip_mm.deploy``) run by onnxruntime."""
    from declip_mm.deploy import OnnxImageEncoder, export_onnx
    if not (folder / 'declip_onnx.json').is_file():
        export_onnx(model.backbone, None, folder, random_weights=True)
    runtime, batched = OnnxImageEncoder(folder), ours_run(model, None)

    def run(x, samples):
        torch_backbone, model.backbone = model.backbone, runtime
        try:
            return batched(x, samples)
        finally:
            model.backbone = torch_backbone
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/segmentation/training-free_declip-eva02-b16_voc21.py')
    parser.add_argument('--model-name', default=None, help="override the config's open_clip model (both towers)")
    parser.add_argument('--images', type=int, default=3, help='sample VOC photos per pass (at most 3)')
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--paths', nargs='+', default=['authors', 'ours1', 'batched', 'onnxruntime'],
                        choices=['authors', 'ours1', 'batched', 'onnxruntime'],
                        help='which paths to time (the first is the baseline; onnxruntime: fp32 rows only)')
    parser.add_argument('--onnx-dir', default='work_dirs/benchmarks/onnx', help='where the onnxruntime path exports '
                        'the backbone (reused when there; a folder per model)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--profile', action='store_true', help='profile one more pass of each path (top ops)')
    harness.add_arguments(parser, repeats=3)
    args = parser.parse_args(argv)
    bench = harness.Bench('inference', args, args.device,
                          title='Training-free segmentation: batched windows (`tools/benchmark_inference.py`)')
    peaks = bench.measure_peaks(args.dtypes)
    from declip_mm.models.segmentors.training_free import slide_windows
    cfg, model = build(args.config, args.model_name, args.device)
    inputs = [(x.to(args.device), s) for x, s in sample_inputs(cfg, model, args.images)]
    windows = [len(slide_windows(*x.shape[-2:], model.test_cfg.crop_size, model.test_cfg.stride)) for x, _ in inputs]
    flops = sum(training_free_flops(model, *x.shape[-2:]) for x, _ in inputs) / len(inputs)
    per_forward = model.windows_per_forward(*model.test_cfg.crop_size)
    all_paths = dict(authors=('authors, 1 window / forward', authors_run(model)),
                     ours1=('ours, window_batch=1', ours_run(model, 1)),
                     batched=(f'ours, batched (≤ {per_forward} windows / forward)', ours_run(model, None)))
    if 'onnxruntime' in args.paths:
        folder = Path(args.onnx_dir) / f'{model.backbone.model_name}-{model.mode or model.backbone.mode}'
        all_paths['onnxruntime'] = (f'ours, batched, onnxruntime {onnxruntime_version()}', onnx_run(model, folder))
    paths = [all_paths[p] for p in args.paths]
    name = model.backbone.model_name
    size_text = ', '.join(sorted({f'{x.shape[-2]}x{x.shape[-1]}' for x, _ in inputs}))
    for dtype in args.dtypes:
        autocast = torch.autocast(args.device, dtype=DTYPES[dtype]) if DTYPES[dtype] else nullcontext()
        results = {}
        for label, run in paths:
            if 'onnxruntime' in label and dtype != 'fp32':
                continue                          # onnxruntime's CPU provider runs the float32 graph only
            outputs = []

            def one_pass():
                outputs.clear()
                outputs.extend(run(x, samples) for x, samples in inputs)
            with torch.no_grad(), autocast:
                counted = sum(counted_flops(run, *inp)[0] for inp in inputs) / len(inputs)   # warm-up, counted
                if 'onnxruntime' in label:
                    counted = None            # torch's counter cannot see inside onnxruntime: the formula's FLOPs
                base = harness.memory_start(args.device)
                timing = bench.measure(one_pass, warmup=0)
                peak = harness.memory_peak(args.device, base)
                if args.profile and 'onnxruntime' not in label:     # torch's profiler cannot see inside it
                    add_profile(bench, f'training-free protocol: {label}', name, dtype, lambda: run(*inputs[0]))
            results[label] = (timing, peak, list(outputs), counted)
        ref_timing, _, ref_out, _ = results[paths[0][0]]
        for label, (timing, peak, outs, counted) in results.items():
            diff = max(float((p.float() - rp.float()).abs().max()) for (_, p), (_, rp) in zip(outs, ref_out))
            agree = sum(float((lab == rl).double().mean()) for (lab, _), (rl, _) in zip(outs, ref_out)) / len(outs)
            seconds = timing.min / len(inputs)
            row = dict(model=name, device=bench.machine['device_name'], dtype=dtype, path=label, images=len(inputs),
                       sizes=size_text, windows_per_image=windows, queries=len(model.text_embeddings),
                       images_per_s=1 / seconds, images_per_s_median=len(inputs) / timing.median,
                       speedup=round(ref_timing.min / timing.min, 2), peak_mb=round(peak),
                       gflop_per_image=flops / 1e9, gflops=flops / seconds / 1e9,
                       peak_share=flops / seconds / 1e9 / peaks[dtype] if peaks.get(dtype) else None,
                       gflop_counted=counted / 1e9 if counted else None, max_prob_diff=f'{diff:.1e}',
                       labels_equal=round(100 * agree, 3))
            bench.add(row, timing.state)
            add_roofline(bench, f'training-free protocol: {label}', f'{name} (paper size)' if 'EVA02-B' in name or
                         'ViT-B' in name else name, f'VOC photos {size_text}, {sum(windows) // len(windows)} windows',
                         dtype, 'image', timing, flops, counted, units_per_call=len(inputs))
    return bench.finish(COLUMNS)


if __name__ == '__main__':
    sys_exit = main()
    raise SystemExit(sys_exit)
