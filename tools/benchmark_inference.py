"""Images/s of the training-free segmentation protocol: ours (TrainingFreeSegmentor, windows batched through the
backbone) against a one-window-at-a-time implementation of the authors' DeCLIPSegmentation
(tests/reference/declip_segmentation_ref.py), same model, same photos, same run.

    python tools/benchmark_inference.py [--config configs/segmentation/training-free_declip-eva02-b16_voc21.py]
        [--model-name EVA02-B-16] [--images 3] [--repeats 2] [--dtypes fp32 bf16] [--device cpu|cuda]
        [--markdown docs/benchmarks.md]

Rows per precision: the reference loop ('authors', one backbone forward per window), ours with
``test_cfg.window_batch=1`` (one window per forward: separates our code from the batching) and ours batched (the
config's default ``window_budget_mb``). Inputs: the real sample VOC photos (tools/fetch_sample_data.py) through the
config's test Resize (448 short side) and data preprocessor; the backbone and the text tower have random weights
(the architecture and the number of text queries set the cost; the text prompts are the 'simple' template, which
changes only the one-time encoding). bf16 rows run under ``torch.autocast`` (CPUs with AVX512-BF16 / AMX, CUDA).
Each row also gives the largest probability difference to the reference in the same precision and the share of
pixels whose label agrees. Timings: the best of ``--repeats`` passes over all photos after a warm-up image; memory:
peak extra memory during the passes (as tools/benchmark_detection.py).
"""
import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # this clone's declip_mm, whatever is installed
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1] / 'tests'))  # the reference re-implementation
import argparse
import json
from contextlib import nullcontext

import torch
from mmengine.config import Config

from tools.benchmark_detection import best_of, cpu_name

DTYPES = dict(fp32=None, bf16=torch.bfloat16, fp16=torch.float16)


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


def reference_run(model):
    """The authors' loop (tests/reference) on ``model``'s backbone and text queries: (x, samples) -> probs (K, H, W)."""
    from reference.declip_segmentation_ref import reference_segment
    crop, stride = model.test_cfg.crop_size, model.test_cfg.stride
    queries, query_idx = model.text_embeddings, model.text_class_index.tolist()

    def dense_fn(window):
        return model.backbone.extract_dense(window, mode=model.mode, normalize=False)

    def run(x, samples):
        return reference_segment(x, dense_fn, queries, query_idx, logit_scale=model.logit_scale,
                                 prob_thd=model.bg_thresh, crop_size=crop, stride=stride,
                                 patch_size=model.backbone.patch_size, ori_shape=samples[0].ori_shape)
    return run


def ours_run(model, window_batch):
    def run(x, samples):
        model.test_cfg.window_batch = window_batch
        out = model.predict(x, [s.clone() for s in samples])[0]
        return out.pred_sem_seg.data[0], out.seg_logits.data
    return run


def measure(paths, inputs, dtype, device, repeats):
    """{path: (images/s, peak extra MB, outputs)} for each (name, run) in ``paths``."""
    autocast = torch.autocast(device, dtype=DTYPES[dtype]) if DTYPES[dtype] else nullcontext()
    results = {}
    for name, run in paths:
        outputs = []

        def one_pass():
            outputs.clear()
            outputs.extend(run(x, samples) for x, samples in inputs)
        with torch.no_grad(), autocast:
            run(*inputs[0])                                                   # warm-up
            seconds, peak = best_of(one_pass, repeats, device)
        results[name] = (len(inputs) / seconds, peak, list(outputs))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/segmentation/training-free_declip-eva02-b16_voc21.py')
    parser.add_argument('--model-name', default=None, help="override the config's open_clip model (both towers)")
    parser.add_argument('--images', type=int, default=3, help='sample VOC photos per pass (at most 3)')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'], choices=sorted(DTYPES))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--markdown', default=None, help='append the table rows to this file')
    args = parser.parse_args(argv)
    from declip_mm.models.segmentors.training_free import slide_windows
    cfg, model = build(args.config, args.model_name, args.device)
    inputs = [(x.to(args.device), s) for x, s in sample_inputs(cfg, model, args.images)]
    windows = [len(slide_windows(*x.shape[-2:], model.test_cfg.crop_size, model.test_cfg.stride)) for x, _ in inputs]
    sizes = sorted({tuple(x.shape[-2:]) for x, _ in inputs})
    per_forward = model.windows_per_forward(*model.test_cfg.crop_size)
    if args.device == 'cuda':
        device = torch.cuda.get_device_name()
    else:
        device = f'{cpu_name()}, {torch.get_num_threads()} threads'
    paths = [('authors (reference), 1 window / forward', reference_run(model)),
             ('ours, window_batch=1', ours_run(model, 1)),
             (f'ours, batched (<= {per_forward} windows / forward)', ours_run(model, None))]
    rows = []
    for dtype in args.dtypes:
        results = measure(paths, inputs, dtype, args.device, args.repeats)
        ref_speed, _, ref_out = results[paths[0][0]]
        for name, (speed, peak, outs) in results.items():
            diff = max(float((p.float() - rp.float()).abs().max()) for (_, p), (_, rp) in zip(outs, ref_out))
            agree = sum(float((lab == rl).double().mean()) for (lab, _), (rl, _) in zip(outs, ref_out)) / len(outs)
            rows.append(dict(model=model.backbone.model_name, device=device, dtype=dtype, path=name,
                             images=len(inputs), sizes=[f'{h}x{w}' for h, w in sizes], windows_per_image=windows,
                             queries=len(model.text_embeddings), images_per_s=round(speed, 3),
                             speedup=round(speed / ref_speed, 2), peak_mb=round(peak),
                             max_prob_diff=f'{diff:.1e}', labels_equal=round(100 * agree, 3)))
            print(json.dumps(rows[-1]), flush=True)
    if args.markdown:
        with open(args.markdown, 'a') as f:
            for r in rows:
                f.write(f"| {r['model']} | {r['device']} | {r['dtype']} | {r['path']} | {r['images_per_s']} | "
                        f"{r['speedup']} | {r['peak_mb']} | {r['max_prob_diff']} | {r['labels_equal']} |\n")


if __name__ == '__main__':
    main()
