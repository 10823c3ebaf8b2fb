"""Independent reference implementations of CAT-Seg (CVPR'24) behaviours.

Only ``torch`` and ``numpy`` are used. Nothing from ``declip_mm`` is imported.
Each function was written from a reading of the public sources below. No code
was copied; the behaviour (operation order, interpolation modes, reductions)
is reproduced.

Sources read (bare git mirrors):

* CAT-Seg: github.com/cvlab-kaist/CAT-Seg @ 6d3a188af95165147fe2f34a8237fa7d2633e784
  (HEAD, 2024-04-11; the "Fixed inference code" commit 3c8d854f is its
  grand-parent).

  - ``cat_seg/cat_seg_model.py``: ``CATSeg.forward`` (training loss, CLIP
    normalisation) and ``CATSeg.inference_sliding_window``.
  - ``cat_seg/modeling/transformer/model.py``: ``LinearAttention``,
    ``AttentionLayer``, ``ClassTransformerLayer``, ``SwinTransformerBlock``,
    ``SwinTransformerBlockWrapper``, ``Up``, ``DoubleConv`` and ``Aggregator``.
  - ``train_net.py``: ``VOCbEvaluator`` (the PAS-20b rule) and
    ``Trainer.build_optimizer``.
  - ``datasets/prepare_voc.py``: the ``annotations_detectron2_bg`` GT.
  - ``cat_seg/data/datasets/register_pascal_20.py``: 21 classes, ignore 255.

  The CAT-Seg repository has no ``cat_seg/evaluation/`` package. The stock
  detectron2 ``SemSegEvaluator`` is used, except for the VOC-background
  dataset, which uses ``VOCbEvaluator`` in ``train_net.py``.
* detectron2: github.com/facebookresearch/detectron2 @ 02b5c4e295e990042a714712c21dc79b731e8833

  - ``detectron2/evaluation/sem_seg_evaluation.py``: ``SemSegEvaluator``. The
    newest change to the metric formula is f3c1bc19 (2022-07-06). It is in no
    release tag (the last tag is v0.6). CAT-Seg installs detectron2 from git
    main (``requirements.txt``), so the post-f3c1bc19 formula is the default
    here. ``legacy_pre_2022=True`` gives the older formula.
  - ``detectron2/modeling/postprocessing.py``: ``sem_seg_postprocess``.
  - ``detectron2/data/dataset_mapper.py`` and ``detection_utils.py``: the test
    mapper is ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST, 'choice')``.
    ``check_image_size`` records the ORIGINAL image height and width (before the
    resize) in the dataset dict.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# CLIP pixel statistics on the 0-255 scale, RGB order.
# cat_seg/config.py @6d3a188: cfg.MODEL.CLIP_PIXEL_MEAN / CLIP_PIXEL_STD
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.3231630)


# ---------------------------------------------------------------------------
# 1. detectron2 SemSegEvaluator
# ---------------------------------------------------------------------------
def reference_d2_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                           ignore_label: int) -> np.ndarray:
    """Confusion matrix of one image, (n+1, n+1), rows = prediction, cols = GT.

    detectron2 @02b5c4e2 ``SemSegEvaluator.process``:

    * GT pixels equal to ``ignore_label`` are relabelled ``n`` (= num_classes),
      the extra last column.
    * The matrix is built as
      ``bincount((n+1)*pred + gt, minlength=(n+1)**2).reshape(n+1, n+1)``.
      Entry ``[p, g]`` counts pixels predicted ``p`` with GT ``g``.
    * ``pred`` is the argmax, in [0, n). A GT value outside [0, n) that is not
      the ignore label would corrupt the matrix or make the reshape fail. This
      reference raises instead.
    """
    n = int(num_classes)
    pred = np.asarray(pred).astype(np.int64).reshape(-1)
    gt = np.asarray(gt).astype(np.int64).copy().reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"pred/gt size mismatch {pred.shape} vs {gt.shape}")
    gt[gt == ignore_label] = n
    if pred.size and (pred.min() < 0 or pred.max() >= n):
        raise ValueError("predictions must lie in [0, num_classes)")
    if gt.size and (gt.min() < 0 or gt.max() > n):
        raise ValueError("gt values must lie in [0, num_classes) or be ignore")
    counts = np.bincount((n + 1) * pred + gt, minlength=(n + 1) ** 2)
    return counts.reshape(n + 1, n + 1)


def reference_d2_metrics_from_conf(conf: np.ndarray,
                                   legacy_pre_2022: bool = False) -> Dict:
    """``SemSegEvaluator.evaluate`` on an accumulated (n+1, n+1) matrix.

    detectron2 @02b5c4e2, formula as of f3c1bc19 (2022-07):

    * ``tp = diag[:-1]``.
    * ``pos_gt = conf[:-1, :-1].sum(0)``: GT pixels per class. The ignore
      column is dropped.
    * ``pos_pred = conf[:-1, :-1].sum(1)``: the predictions on ignored GT pixels
      (column n) are dropped.
    * ``acc_valid = pos_gt > 0``; ``iou_valid = acc_valid & (union > 0)``.
    * IoU and ACC are NaN for classes that are absent from the GT. A class that
      is predicted but absent from the GT does NOT enter the mean.
    * mIoU = mean of IoU over the ``iou_valid`` classes.
    * fwIoU = sum of ``IoU * pos_gt / sum(pos_gt)`` over the valid classes.
    * mACC = mean of ACC over the ``acc_valid`` classes.
    * pACC = ``sum(tp) / sum(pos_gt)``.
    * Every value is multiplied by 100.

    ``legacy_pre_2022=True`` reproduces detectron2 before f3c1bc19 (v0.6 and
    older):

    * IoU is computed on the ``acc_valid`` classes.
    * The mIoU denominator counts the classes with ``pos_gt + pos_pred > 0``.
      A predicted-but-absent class therefore counts as 0.
    * fwIoU uses ``acc_valid``.
    """
    conf = np.asarray(conf, dtype=np.int64)
    n = conf.shape[0] - 1
    acc = np.full(n, np.nan, dtype=float)
    iou = np.full(n, np.nan, dtype=float)
    inner = conf[:-1, :-1]
    tp = np.diagonal(conf)[:-1].astype(float)
    pos_gt = inner.sum(axis=0).astype(float)
    pos_pred = inner.sum(axis=1).astype(float)
    tot = pos_gt.sum()
    weights = pos_gt / tot if tot > 0 else np.full(n, np.nan)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        if legacy_pre_2022:
            iou[acc_valid] = tp[acc_valid] / union[acc_valid]
            denom_valid = (pos_gt + pos_pred) > 0
            miou = iou[acc_valid].sum() / denom_valid.sum()
            fiou = (iou[acc_valid] * weights[acc_valid]).sum()
        else:
            iou_valid = acc_valid & (union > 0)
            iou[iou_valid] = tp[iou_valid] / union[iou_valid]
            miou = iou[iou_valid].sum() / iou_valid.sum()
            fiou = (iou[iou_valid] * weights[iou_valid]).sum()
        macc = acc[acc_valid].sum() / acc_valid.sum()
        pacc = tp.sum() / tot
    return {
        "mIoU": 100.0 * miou,
        "fwIoU": 100.0 * fiou,
        "mACC": 100.0 * macc,
        "pACC": 100.0 * pacc,
        "IoU": 100.0 * iou,
        "ACC": 100.0 * acc,
        "conf_matrix": conf,
    }


def reference_d2_miou(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                      num_classes: int, ignore_label: int,
                      legacy_pre_2022: bool = False) -> Dict:
    """detectron2 ``SemSegEvaluator`` on a dataset.

    Summing the per-image confusion matrices gives the same result as d2's
    distributed ``all_gather``.

    Returns a dict with the keys:

    * ``mIoU``, ``fwIoU``, ``mACC``, ``pACC``: floats, x100.
    * ``IoU`` and ``ACC``: (num_classes,) arrays, x100, NaN for classes absent
      from the GT.
    * ``conf_matrix``: the accumulated matrix.

    ``preds`` are label maps (argmax already taken) at the GT resolution.
    detectron2 reads the GT from file at the ORIGINAL resolution, and
    ``sem_seg_postprocess`` resizes the model output to that size.
    """
    n = int(num_classes)
    conf = np.zeros((n + 1, n + 1), dtype=np.int64)
    for p, g in zip(preds, gts):
        conf += reference_d2_confusion(p, g, n, ignore_label)
    return reference_d2_metrics_from_conf(conf, legacy_pre_2022=legacy_pre_2022)


# ---------------------------------------------------------------------------
# 2. PAS-20b (VOC with background)
# ---------------------------------------------------------------------------
def reference_voc20b_map(pred, num_voc_classes: int = 20):
    """The PAS-20b prediction rule of ``VOCbEvaluator.process``.

    Source: CAT-Seg @6d3a188, ``train_net.py``.

    * The model scores the 59 names of ``datasets/voc20b.json`` (indices 0..19
      are the 20 VOC classes in the usual VOC order, 20..58 are 39
      PASCAL-Context names). ``pred`` is the argmax over those 59 classes.
    * Every predicted index >= 20 becomes 20, the "background" class. The
      evaluator has ``num_classes = 21``: the ``stuff_classes`` of
      ``voc_2012_test_background_sem_seg`` are the 20 VOC names plus
      "background".
    * GT: ``VOCdevkit/VOC2012/annotations_detectron2_bg/val/*.png``. VOC
      background (0) becomes 20, VOC class k becomes k-1, and 255 stays 255
      (see ``reference_voc20b_gt``). The ignore label is 255, which becomes 21
      in the confusion matrix. The matrix is the usual d2 one, with 21 classes.

    Accepts numpy or torch integer arrays. Returns the same type (a new array).
    """
    if isinstance(pred, torch.Tensor):
        out = pred.clone()
        out[out >= num_voc_classes] = num_voc_classes
        return out
    out = np.array(pred, dtype=np.int64, copy=True)
    out[out >= num_voc_classes] = num_voc_classes
    return out


def reference_voc20b_gt(raw_voc_mask: np.ndarray) -> np.ndarray:
    """Raw VOC2012 mask to the ``annotations_detectron2_bg`` label.

    Source: CAT-Seg @6d3a188, ``datasets/prepare_voc.py``, using
    ``clsID_to_trID_bg``. The raw mask is read from
    ``SegmentationClassAug/<id>.png`` for the ids in
    ``ImageSets/Segmentation/val.txt``.

    * 0 becomes 20 (background).
    * 1..20 become 0..19.
    * 255 stays 255, and so does any other value.
    """
    raw = np.asarray(raw_voc_mask)
    out = np.full(raw.shape, 255, dtype=np.uint8)
    out[raw == 0] = 20
    for k in range(1, 21):
        out[raw == k] = k - 1
    return out


def reference_voc20b_miou(preds59, gts_bg, ignore_label: int = 255) -> Dict:
    """PAS-20b end to end: apply the >= 20 rule, then run the 21-class d2 metric."""
    return reference_d2_miou([reference_voc20b_map(p) for p in preds59], gts_bg,
                             num_classes=21, ignore_label=ignore_label)


# ---------------------------------------------------------------------------
# 3. Sliding-window inference
# ---------------------------------------------------------------------------
def _window_offsets(size: int, kernel: int, stride: int) -> List[int]:
    # nn.Unfold semantics: only windows that fit entirely, starting at 0.
    n = (size - kernel) // stride + 1
    return [i * stride for i in range(n)]


def reference_coverage(out_res: int = 640, kernel: int = 384,
                       stride: Optional[int] = None,
                       overlap: float = 0.333) -> torch.Tensor:
    """Number of local windows covering each pixel: a (out_res, out_res) float tensor.

    It is the divisor ``fold(unfold(ones))`` in ``inference_sliding_window``.

    * With 640/384 and stride ``int(384*(1-0.333)) = 256`` the offsets are
      {0, 256} per axis.
    * Per axis the count is 1 on [0,256), 2 on [256,384) and 1 on [384,640).
      The 2-D map therefore holds 1, 2 or 4.
    * If out_res - kernel is not a multiple of the stride, the pixels no window
      reaches get 0. The original code would then divide by 0. That cannot
      happen with the defaults.
    """
    if stride is None:
        stride = int(kernel * (1 - overlap))
    cov = torch.zeros(out_res, out_res, dtype=torch.float32)
    offs = _window_offsets(out_res, kernel, stride)
    for y in offs:
        for x in offs:
            cov[y:y + kernel, x:x + kernel] += 1.0
    return cov


def reference_sliding_window(image: torch.Tensor,
                             model_fn: Callable[[torch.Tensor], torch.Tensor],
                             out_res: int = 640, kernel: int = 384,
                             overlap: float = 0.333, clip_res: int = 384,
                             output_size: Optional[Sequence[int]] = None,
                             clip_mean: Sequence[float] = CLIP_PIXEL_MEAN,
                             clip_std: Sequence[float] = CLIP_PIXEL_STD,
                             return_parts: bool = False):
    """``CATSeg.inference_sliding_window`` (CAT-Seg @6d3a188, cat_seg_model.py).

    ``image`` is (1, 3, H, W) (or (3, H, W)), float, RGB, on the 0-255 scale,
    at the test mapper's size (shorter side 640, longer side at most 2560).

    ``model_fn(x)`` takes the CLIP-normalised (N, 3, clip_res, clip_res) crops
    and returns (N, K, h, w) LOGITS (h = w = 96 for CAT-Seg). Any top-K / -100
    scattering happens inside ``model_fn``, per crop.

    Steps:

    1. ``stride = int(kernel * (1 - overlap))``: 256 for 384 / 0.333.
    2. Resize the whole image to a square ``out_res x out_res`` (bilinear,
       align_corners=False). The aspect ratio is not kept.
    3. Cut ``kernel x kernel`` windows with that stride. The order is that of
       nn.Unfold: row-major over the window positions, y outer, x inner. With
       the defaults there are 4 windows.
    4. Global view: the ORIGINAL (mapper-size) image, not the 640 one, resized
       to ``kernel x kernel`` (bilinear, align_corners=False). It is appended
       LAST, so the batch is N = 4 + 1 = 5. The crops go through ``model_fn`` in
       one call.
    5. CLIP normalisation, ``(x - mean) / std`` on the 0-255 scale, is applied
       AFTER the 640 resize, the unfold and the global resize, and BEFORE the
       resize to ``clip_res`` (bilinear, align_corners=False). That resize is
       exactly the identity for ViT-B (384 -> 384). For ViT-L it is 384 -> 336.
       The ImageNet-normalised ``images`` computed in the original is dead
       code.
    6. The logits are resized to ``kernel x kernel`` (bilinear,
       align_corners=False) BEFORE the sigmoid. Then the sigmoid is applied.
    7. The 4 local probability maps are summed into ``out_res x out_res``
       (nn.Fold) and divided by the coverage count (``reference_coverage``).
    8. The global probability map (384) is resized to ``out_res`` (bilinear,
       align_corners=False).
    9. The result is ``(local + global) / 2``.
    10. ``sem_seg_postprocess``: crop ``[:, :out_res, :out_res]`` (a no-op),
        then bilinear (align_corners=False) to ``(height, width)``. In
        detectron2 those come from the dataset dict and are the ORIGINAL image
        size (before the mapper's resize). Pass them as ``output_size``. The
        default here is the input's own (H, W).

    Returns (K, H_out, W_out) probabilities. The prediction is the argmax over
    K. With ``return_parts`` it returns a dict with ``prob``, ``local`` (K, R,
    R, already divided), ``global`` (K, R, R), ``coverage`` and ``crops``
    (the normalised model inputs).
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    assert image.dim() == 4 and image.shape[0] == 1 and image.shape[1] == 3
    image = image.to(torch.float32)
    H, W = image.shape[-2:]
    if output_size is None:
        output_size = (H, W)
    stride = int(kernel * (1 - overlap))
    dev = image.device

    big = F.interpolate(image, size=(out_res, out_res), mode="bilinear",
                        align_corners=False)[0]  # (3, R, R)
    offs = _window_offsets(out_res, kernel, stride)
    positions = [(y, x) for y in offs for x in offs]
    crops = [big[:, y:y + kernel, x:x + kernel] for (y, x) in positions]
    glob = F.interpolate(image, size=(kernel, kernel), mode="bilinear",
                         align_corners=False)[0]
    batch = torch.stack(crops + [glob], dim=0)  # (L+1, 3, k, k)

    mean = torch.tensor(clip_mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(clip_std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    batch = F.interpolate(batch, size=(clip_res, clip_res), mode="bilinear",
                          align_corners=False)

    logits = model_fn(batch)
    probs = F.interpolate(logits.float(), size=(kernel, kernel), mode="bilinear",
                          align_corners=False).sigmoid()  # (L+1, K, k, k)
    K = probs.shape[1]

    acc = torch.zeros(K, out_res, out_res, dtype=probs.dtype, device=probs.device)
    for i, (y, x) in enumerate(positions):
        acc[:, y:y + kernel, x:x + kernel] += probs[i]
    cov = reference_coverage(out_res, kernel, stride).to(probs.device, probs.dtype)
    local = acc / cov
    global_map = F.interpolate(probs[-1:], size=(out_res, out_res), mode="bilinear",
                               align_corners=False)[0]
    merged = (local + global_map) / 2.0

    out = merged[:, :out_res, :out_res].unsqueeze(0)
    out = F.interpolate(out, size=(int(output_size[0]), int(output_size[1])),
                        mode="bilinear", align_corners=False)[0]
    if return_parts:
        return {"prob": out, "local": local, "global": global_map,
                "coverage": cov, "crops": batch}
    return out


# ---------------------------------------------------------------------------
# 4. Linear attention of ClassTransformerLayer
# ---------------------------------------------------------------------------
def reference_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               eps: float = 1e-6) -> torch.Tensor:
    """``LinearAttention.forward`` (model.py @6d3a188, from "Transformers are RNNs").

    Shapes: q (N, L, H, D), k (N, S, H, D), v (N, S, H, Dv). Returns (N, L, H, Dv).

    * The feature map is ``phi(x) = elu(x) + 1``.
    * ``v`` is divided by S (``v.size(1)``) before the products, "to prevent
      fp16 overflow".
    * ``KV[n,h] = sum_s phi(K)[n,s,h,:]^T v[n,s,h,:]``.
    * ``Z[n,l,h] = 1 / (phi(Q)[n,l,h] . sum_s phi(K)[n,s,h] + eps)``.
    * ``out = phi(Q) KV Z * S``. Apart from rounding this equals
      ``phi(Q)(sum phi(K) v^T) / (phi(Q).sum phi(K) + eps)``, so eps is NOT
      scaled by S.

    No masks and no 1/sqrt(D) scaling are applied.
    """
    Qf = F.elu(q) + 1.0
    Kf = F.elu(k) + 1.0
    S = v.shape[1]
    vs = v / S
    kv = torch.einsum("nshd,nshe->nhde", Kf, vs)
    ksum = Kf.sum(dim=1)  # (N, H, D)
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", Qf, ksum) + eps)
    out = torch.einsum("nlhd,nhde->nlhe", Qf, kv) * z.unsqueeze(-1) * S
    return out.contiguous()


def reference_class_attention(x, guidance, wq, bq, wk, bk, wv, bv, nheads=4,
                              eps=1e-6):
    """``AttentionLayer`` with ``attention_type='linear'`` (model.py @6d3a188).

    * x (B, T, C); guidance (B, T, Cg) or None.
    * ``q = Linear_q(cat[x, g])`` and ``k = Linear_k(cat[x, g])`` (C+Cg -> C, with
      bias); ``v = Linear_v(x)`` (C -> C, with bias).
    * The heads split the channels as ``(H D)``, head-major.
    * There is NO output projection after the attention.

    In ``ClassTransformerLayer`` the caller passes ``LayerNorm1(x_pool)`` as
    ``x``. Its result is added to ``x_pool``, then
    ``x_pool + MLP(LN2(x_pool))`` with the MLP ``Linear(C,4C)-ReLU-Linear(4C,C)``.
    """
    xg = torch.cat([x, guidance], dim=-1) if guidance is not None else x
    q = F.linear(xg, wq, bq)
    k = F.linear(xg, wk, bk)
    v = F.linear(x, wv, bv)
    B, T, C = q.shape
    sh = lambda t: t.reshape(t.shape[0], t.shape[1], nheads, t.shape[2] // nheads)
    out = reference_linear_attention(sh(q), sh(k), sh(v), eps=eps)
    return out.reshape(B, T, -1)


# Notes, not executable. Per AggregatorLayer: spatial (Swin) then class.
# B = batch, T = number of classes (after top-K; <= 256), C = 128,
# H = W = 24, P = prompts (1).
reference_class_transformer_layer_shapes = {
    "input": "x (B, C=128, T, 24, 24); text guidance (B, T, 128) after "
             "Linear(512->128)+ReLU on mean_P(L2norm(text)), renormalised",
    "pool": "AvgPool2d(pooling_size) over (24,24) per (B*T): train (2,2) -> 12x12, "
            "test (1,1) -> 24x24 (eval.sh overrides POOLING_SIZES [1,1])",
    "pad": "if T < pad_len(256): cat learnable padding_tokens (1,1,128) repeated to "
           "(B,128,256-T,h',w') along T; the guidance gets padding_guidance (1,1,128) -> (B,256,128)",
    "sequence": "(B*h'*w', 256, 128), tokens = class slots (b-major, then h, w); guidance "
                "repeated per location (B*h'*w', 256, 128)",
    "attn": "x_pool += LinearAttn(LN1(x_pool), g) [4 heads x 32]; x_pool += MLP(LN2(x_pool))",
    "unpool": "(B*T,128,h',w') -> bilinear align_corners=True to (24,24); drop padded slots [:T]",
    "residual": "x = x + up(x_pool). x_pool already contains pool(x) via its residuals, "
                "so at test (pool 1x1) out = 2x + delta",
}


def reference_swin_shift_mask(H: int = 24, W: int = 24, window: int = 12,
                              shift: int = 6) -> torch.Tensor:
    """The shifted-window attention mask of ``SwinTransformerBlock`` (model.py @6d3a188).

    Returns (num_windows, window*window, window*window) with 0 or -100.

    * The block-2 shift is ``window // 2`` = 6.
    * ``torch.roll`` by -shift on (H, W) is applied to the CONCATENATED
      ``[LN1(x), LN(guidance)]`` tensor, so the guidance is rolled too. The
      output is rolled back by +shift.
    * There is no relative position bias.
    * The scale is ``head_dim**-0.5`` with head_dim = 128 / 4 = 32.
    """
    img = torch.zeros(1, H, W, 1)
    cnt = 0
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for hs in bands:
        for ws in bands:
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = img.view(1, H // window, window, W // window, window, 1)
    win = win.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def reference_topk_classes(corr: torch.Tensor, pad_len: int = 256):
    """Class selection of ``Aggregator.forward`` when T > pad_len (model.py @6d3a188).

    * corr is (B, P, T, H, W) with cosine values.
    * The relevance of class t in image b is ``max over (P, H, W)``.
    * The indices are ``topk(pad_len, dim=-1, sorted=False)``. ``sorted=False``
      leaves the order implementation-defined. The scatter-back makes the
      final logits independent of it, apart from the per-slot order inside the
      class attention, which is permutation-equivariant.
    * Returns (B, pad_len) indices or None when T <= pad_len.
    """
    T = corr.shape[2]
    if pad_len <= 0 or T <= pad_len:
        return None
    rel = corr.permute(0, 2, 1, 3, 4).flatten(2).max(dim=-1)[0]  # (B, T)
    return rel.topk(pad_len, dim=-1, sorted=False)[1]


def reference_scatter_back(logit: torch.Tensor, classes: torch.Tensor,
                           num_classes: int, fill: float = -100.0) -> torch.Tensor:
    """Put (B, pad_len, h, w) logits back into (B, T, h, w), filling the dropped classes with -100."""
    B, _, h, w = logit.shape
    out = torch.full((B, num_classes, h, w), fill, dtype=logit.dtype, device=logit.device)
    idx = classes[:, :, None, None].expand(-1, -1, h, w)
    return out.scatter(1, idx, logit)


# ---------------------------------------------------------------------------
# 5. Training loss
# ---------------------------------------------------------------------------
def reference_bce_loss(logits: torch.Tensor, targets: torch.Tensor,
                       num_classes: Optional[int] = None,
                       ignore_index: int = 255) -> torch.Tensor:
    """The training loss of ``CATSeg.forward`` (cat_seg_model.py @6d3a188).

    * The logits (B, K, h, w) are resized to the target size (H, W) (bilinear,
      align_corners=False). At training that is 96 -> 384.
    * The one-hot target is (B, H, W, K). Pixels whose target equals
      ``ignore_index`` (255) are left ALL-ZERO and still count as negatives for
      every class. They are not removed from the loss.
    * The loss is ``F.binary_cross_entropy_with_logits(logits_BHWK, onehot)``
      with the default 'mean' reduction over all B*H*W*K elements. There are no
      weights and no auxiliary terms.
    * The original takes K from ``outputs.shape[1]``. When ``num_classes`` is
      given here, it must equal K. A non-ignore target value >= K raises an
      error in ``F.one_hot``.
    """
    B, K = logits.shape[:2]
    if num_classes is not None and num_classes != K:
        raise ValueError(f"num_classes={num_classes} but logits have K={K}")
    H, W = targets.shape[-2:]
    up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
    up = up.permute(0, 2, 3, 1)  # (B, H, W, K)
    targets = targets.long()
    valid = targets != ignore_index
    onehot = torch.zeros_like(up)
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    if bool(valid.any()):
        if int(safe[valid].max()) >= K or int(safe[valid].min()) < 0:
            raise ValueError("target class out of range")
    oh = F.one_hot(safe, num_classes=K).to(up.dtype)
    onehot = torch.where(valid.unsqueeze(-1), oh, onehot)
    return F.binary_cross_entropy_with_logits(up, onehot)


__all__ = [
    "CLIP_PIXEL_MEAN", "CLIP_PIXEL_STD",
    "reference_d2_confusion", "reference_d2_metrics_from_conf", "reference_d2_miou",
    "reference_voc20b_map", "reference_voc20b_gt", "reference_voc20b_miou",
    "reference_coverage", "reference_sliding_window",
    "reference_linear_attention", "reference_class_attention",
    "reference_class_transformer_layer_shapes", "reference_swin_shift_mask",
    "reference_topk_classes", "reference_scatter_back",
    "reference_bce_loss",
]
