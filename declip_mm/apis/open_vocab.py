"""One-call open-vocabulary segmentation for users (and ``make demo``).

    from declip_mm.apis import build_segmentor, segment_image
    seg = build_segmentor(backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='declip.pth'),
                          text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16',
                                            pretrained='merged2b_s8b_b131k'),
                          class_names=['background', 'cat', 'sofa; couch'], bg_thresh=0.4, logit_scale=80.)
    labels, probs = segment_image(seg, rgb_uint8_image)     # (H, W) class indices, (K, H, W) probabilities
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


# the benchmark configs' (and the authors' SegDataPreProcessor's) CLIP mean / std, 0-255 scale
SEG_MEAN = (122.771, 116.746, 104.094)
SEG_STD = (68.501, 66.632, 70.323)


def build_segmentor(backbone: dict, text_encoder: dict, class_names, **kwargs):
    """A TrainingFreeSegmentor in eval mode (see its docstring for the keyword arguments); the data preprocessor
    is the benchmark configs' (the reference's CLIP mean/std, RGB input)."""
    from mmengine.registry import init_default_scope

    from ..registry import MODELS
    init_default_scope('declip_mm')
    kwargs.setdefault('data_preprocessor', dict(type='mmseg.SegDataPreProcessor', mean=list(SEG_MEAN), std=list(SEG_STD),
                                                bgr_to_rgb=False))
    return MODELS.build(dict(type='TrainingFreeSegmentor', backbone=backbone, text_encoder=text_encoder,
                             class_names=class_names, **kwargs)).eval()


@torch.no_grad()
def segment_image(segmentor, image: np.ndarray, short_side: int = 448) -> Tuple[np.ndarray, torch.Tensor]:
    """RGB uint8 (H, W, 3) -> (labels (H, W) int64, class probabilities (K, H, W)), exactly as the benchmark
    configs run an image: ``Resize(scale=(4096, short_side), keep_ratio=True)``, the segmentor's data
    preprocessor, ``predict`` (slide or whole, per its test_cfg; the protocol of ``TrainingFreeSegmentor``), the
    result at (H, W)."""
    import mmcv
    from mmseg.structures import SegDataSample
    h, w = image.shape[:2]
    resized = mmcv.imrescale(image, (4096, short_side), interpolation='bilinear', backend='cv2')
    sample = SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=resized.shape[:2]))
    data = segmentor.data_preprocessor(dict(inputs=[torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1)))],
                                            data_samples=[sample]), False)
    out = segmentor.predict(data['inputs'], data['data_samples'])[0]
    return out.pred_sem_seg.data[0].cpu().numpy(), out.seg_logits.data.cpu()


def mean_iou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_classes: int,
             ignore_index: int = 255) -> Dict:
    """mmseg IoUMetric's mIoU (areas summed over images, IoU per class, NaN-mean over classes with a union),
    plus each image's own mIoU and the per-class IoUs."""
    def areas(pred, gt):
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
        inter = np.bincount(gt[pred == gt], minlength=num_classes)[:num_classes]
        area_p = np.bincount(pred, minlength=num_classes)[:num_classes]
        area_g = np.bincount(gt, minlength=num_classes)[:num_classes]
        return inter, area_p + area_g - inter

    def miou(inter, union):
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = inter / union
        return iou, float(np.nanmean(iou) * 100)

    total_i, total_u, per_image = np.zeros(num_classes), np.zeros(num_classes), []
    for pred, gt in zip(preds, gts):
        if pred.shape != gt.shape:
            raise ValueError(f'prediction {pred.shape} and label {gt.shape} differ in shape')
        inter, union = areas(pred.astype(np.int64), gt.astype(np.int64))
        total_i += inter
        total_u += union
        per_image.append(miou(inter, union)[1])
    iou, m = miou(total_i, total_u)
    return dict(mIoU=m, per_image=per_image, per_class=(iou * 100).tolist())


def draw_note(canvas, note: str):
    """``canvas`` (PIL) with ``note`` in white on a red band added above it (e.g. that the weights are random)."""
    from PIL import Image, ImageDraw
    out = Image.new('RGB', (canvas.width, canvas.height + 18), (200, 0, 0))
    out.paste(canvas, (0, 18))
    ImageDraw.Draw(out).text((4, 3), note, fill=(255, 255, 255))
    return out


def overlay(image: np.ndarray, labels: np.ndarray, class_names: List[str], alpha: float = 0.5,
            background_index: Optional[int] = None, note: Optional[str] = None):
    """A PIL image: the photo blended with a colour per class, with a legend of the classes present. The class
    ``background_index`` is drawn black (None: class 0 when it is named 'background', the benchmarks' rule);
    ``note``, when given, is drawn on a red band on top (:func:`draw_note`)."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(3)
    palette = rng.integers(40, 255, size=(len(class_names), 3)).astype(np.uint8)
    if background_index is None and class_names and class_names[0].split(';')[0].strip() == 'background':
        background_index = 0
    if background_index is not None:
        palette[background_index] = (0, 0, 0)
    blend = (image * (1 - alpha) + palette[labels] * alpha).astype(np.uint8)
    present = [c for c in np.unique(labels)]
    legend_h = 18 * len(present) + 6
    canvas = Image.new('RGB', (image.shape[1], image.shape[0] + legend_h), (255, 255, 255))
    canvas.paste(Image.fromarray(blend), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, c in enumerate(present):
        y = image.shape[0] + 4 + 18 * i
        draw.rectangle([4, y, 18, y + 14], fill=tuple(int(v) for v in palette[c]))
        draw.text((24, y), class_names[c].split(';')[0].strip(), fill=(0, 0, 0))
    return canvas if note is None else draw_note(canvas, note)
