"""The authors' training-free segmentation loop, as the baseline ``tools/benchmark_inference.py`` times.

The DeCLIP zero-shot branch's ``DeCLIPSegmentation`` (github.com/xiaomoguhz/DeCLIP @3b65d49,
``declip_segmentor.py``: ``forward_slide``, ``forward_feature``, ``compute_padsize``, ``postprocess_result``), step for
step as ``tests/reference/declip_segmentation_ref.py`` re-implements it for the fidelity tests (that file documents
every step and its source lines). A tool must not import tests, so the slide path lives here too;
``tests/tools/test_benchmarks.py`` checks that both give the same result to the bit.

What makes it the authors' loop (and what our ``TrainingFreeSegmentor`` changes): one backbone forward per window,
and each window's cosine logits zero-padded to the whole canvas (``F.pad``) before they are added.
"""
import torch
import torch.nn.functional as F

__all__ = ['authors_segment']


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad_amounts(h, w, patch_size):
    """compute_padsize: (left, right, top, bottom), the smaller half left / top."""
    left = right = top = bottom = 0
    if w % patch_size:
        lr = patch_size - w % patch_size
        left, right = lr // 2, lr - lr // 2
    if h % patch_size:
        tb = patch_size - h % patch_size
        top, bottom = tb // 2, tb - tb // 2
    return left, right, top, bottom


def _cosine_logits(x, dense_fn, query_features, out_size):
    """forward_feature: L2-normalised dense features . text features, (B, Q, h, w) bilinear to out_size."""
    feats = dense_fn(x)                                   # (B, D, h, w), not normalised
    b, _, h, w = feats.shape
    feats = F.normalize(feats.flatten(2).transpose(1, 2), dim=-1)
    logits = feats @ query_features.to(feats.dtype).T     # (B, N, Q)
    logits = logits.permute(0, 2, 1).reshape(b, -1, h, w)
    return F.interpolate(logits, size=tuple(out_size), mode='bilinear', align_corners=False)


def _postprocess(logits, query_idx, logit_scale, prob_thd):
    """postprocess_result for one image, logits (Q, H0, W0): softmax over all queries, max over each class's
    queries, argmax, pixels under prob_thd -> 0."""
    probs = (logits * logit_scale).softmax(0)
    q_idx = torch.as_tensor(query_idx, dtype=torch.int64, device=probs.device)
    num_cls, num_q = int(q_idx.max()) + 1, q_idx.numel()
    if num_cls != num_q:
        probs = torch.stack([probs[q_idx == c].max(0)[0] for c in range(num_cls)], 0)
    seg_pred = probs.argmax(0, keepdim=True)
    seg_pred[probs.max(0, keepdim=True)[0] < prob_thd] = 0
    return seg_pred[0], probs


@torch.no_grad()
def authors_segment(img, dense_fn, query_features, query_idx, *, logit_scale, prob_thd, crop_size, stride,
                    patch_size, ori_shape):
    """img (1, 3, H, W) normalised; dense_fn(window) -> (1, D, h/p, w/p) un-normalised; query_features (Q, D)
    L2-normalised; query_idx the class of each query. Returns (labels (H0, W0), class probabilities (K, H0, W0))."""
    h_stride, w_stride = _pair(stride)
    h_crop, w_crop = _pair(crop_size)
    bs, _, h_img, w_img = img.shape
    n_h = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    n_w = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((bs, query_features.shape[0], h_img, w_img))
    count = img.new_zeros((bs, 1, h_img, w_img))
    for i in range(n_h):
        for j in range(n_w):
            y1, x1 = i * h_stride, j * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            win = img[:, :, y1:y2, x1:x2]
            h, w = win.shape[2:]
            pad = _pad_amounts(h, w, patch_size)
            if any(pad):
                win = F.pad(win, pad)
            logit = _cosine_logits(win, dense_fn, query_features, win.shape[-2:])
            if any(pad):
                logit = logit[:, :, pad[2]:pad[2] + h, pad[0]:pad[0] + w]
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))   # the whole canvas, per window
            count[:, :, y1:y2, x1:x2] += 1
    preds = preds / count
    logits = F.interpolate(preds, size=tuple(ori_shape), mode='bilinear', align_corners=False)
    return _postprocess(logits[0], query_idx, logit_scale, prob_thd)
