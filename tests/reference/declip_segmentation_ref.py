"""Independent re-implementation of the authors' DeCLIP training-free segmentation inference path.

Written from a reading of public reference code. No code was copied; only the behaviour is reproduced.

Sources (all behaviour below was read at these exact commits):

[D] github.com/xiaomoguhz/DeCLIP, zero-shot segmentation branch ("This branch of the repository is
    the official PyTorch implementation of DeCLIP ... for zero-shot image segmentation", README),
    commit 3b65d49e6cbb2f68c3a1fdb2c96f108941d50ee1. Files:
      declip_segmentor.py      class DeCLIPSegmentation (predict / forward_slide / forward_feature /
                               compute_padsize / postprocess_result) and get_cls_idx
      configs/cfg_*.py         per-dataset prob_thd / logit_scale / test Resize
      src/open_clip/eva_clip/eva_vit_model.py   encode_dense / ss_attn (the backbone; NOT part of this module)
    The branch name itself is not recorded in the snapshot we could read; it is identified by the commit.
[P] github.com/mc-lan/ProxyCLIP, main, commit e7b767fbc58ea218a3b8ba34cd92db521cc5f2e1 (class-name files
    last changed in 05c3c18c951ad8129c44d70afe2d46a85ec5085d). proxyclip_segmentor.py is the file that
    [D]/declip_segmentor.py was derived from. The only differences in this path are the padding multiple
    (56 there, 16 in [D]) and the feature normalisation call. ProxyCLIP's configs/cls_*.txt use the
    '; ' synonym separator that [D]'s get_cls_idx expects.

Step by step (all [D] declip_segmentor.py unless stated otherwise):
 1. Class file -> queries: get_cls_idx. Calls f.readlines() and splits every line on the exact
    two-character string '; '. Each part is one query, and the line number is its class index.
    Afterwards it removes '\\n' from each query (str.replace). It does NOT strip spaces, so 'wood ' stays 'wood '.
 2. predict: if slide_crop > 0 it calls forward_slide(inputs, metas, slide_stride, slide_crop),
    otherwise forward_feature(inputs, ori_shape) (the "whole" path). The defaults are
    slide_crop=336 and slide_stride=112. No [D] config overrides them, so every benchmark uses slide 336/112.
 3. forward_slide grid (same as mmseg's slide_inference):
    n_h = max(H - h_crop + h_stride - 1, 0) // h_stride + 1 (same for w). The window starts at
    y1 = i*h_stride with y2 = min(y1 + h_crop, H), then y1 = max(y2 - h_crop, 0). So the last window is
    shifted back so that it ends at the image border. Windows are clipped to the image, never padded to crop size.
 4. Each window is zero-padded (F.pad, in normalised-pixel space) up to a multiple of the patch size.
    compute_padsize(H, W, 16) puts floor(pad/2) on the left/top and the rest on the right/bottom.
    NOTE: [D] hard-codes 16 here; [P] used 56. With crop 336 = 21*16, padding only happens for images
    smaller than 336 on a side.
 5. forward_feature on the (padded) window: clip.encode_dense(img, normalize=True, keep_shape=False,
    mode='csa') -> (B, N, D) L2-normalised with F.normalize(dim=-1) (src/open_clip/eva_clip/model.py
    encode_dense, read on main 2c0b3dec). logits = feats @ query_features.T -> (B, N, Q), then
    permute to (B, Q, N) and reshape to (B, Q, h, w).
    NOTE: [D] computes h = w = int(sqrt(N)), so the authors' code only works for SQUARE token grids. A
    non-square window (an image side < 336) would raise or silently scramble there. This module uses
    the grid that dense_fn returns, which is the intended behaviour and the same for square windows.
 6. The window logits are resized with F.interpolate(mode='bilinear') (align_corners unset, i.e. False)
    to the PADDED window size. The pad is then cut off with [t:t+h, l:l+w].
 7. The window logits are zero-padded into the full canvas and summed. count_mat counts how many
    windows cover each pixel. Then preds / count_mat (plain average of raw cosine logits).
 8. The averaged logits are resized once to ori_shape (bilinear, align_corners False).
 9. postprocess_result: logits * logit_scale, then softmax over dim 0, which is over ALL queries
    (synonyms included, background words included).
10. If num_cls != num_queries, each class takes the MAX PROBABILITY over its queries. [D] does this as
    (probs * one_hot(query_idx).T[..., None, None]).max(1). Here it is done per class; the two are exactly
    equal because the probabilities are >= 0.
    Otherwise (one query per class) the probabilities are used unchanged. There is no renormalisation.
11. seg_pred = argmax over classes (first index on ties). Then seg_pred[max_class_prob < prob_thd] = 0,
    where the comparison is strict '<', index 0 is set, and the max is taken over the CLASS probabilities
    after step 10. With prob_thd = 0.0 (the default) this does nothing.
"""
import torch
import torch.nn.functional as F

__all__ = ['reference_parse_class_file', 'reference_segment', 'reference_segment_whole']


def reference_parse_class_file(path):
    """Reproduce [D] get_cls_idx: returns (query_names, query_idx)."""
    with open(path, 'r') as f:
        lines = f.readlines()
    names, idx = [], []
    for cls_id, line in enumerate(lines):
        parts = line.split('; ')  # exactly '; ' -- not ',' nor ', ' nor ';'
        names.extend(parts)
        idx.extend([cls_id] * len(parts))
    names = [n.replace('\n', '') for n in names]  # no .strip(): trailing spaces survive
    return names, idx


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad_amounts(h, w, patch_size):
    """[D] compute_padsize: returns (left, right, top, bottom), the smaller half on the left/top."""
    left = right = top = bottom = 0
    if w % patch_size:
        lr = patch_size - w % patch_size
        left, right = lr // 2, lr - lr // 2
    if h % patch_size:
        tb = patch_size - h % patch_size
        top, bottom = tb // 2, tb - tb // 2
    return left, right, top, bottom


def _cosine_logits(x, dense_fn, query_features, out_size):
    """[D] forward_feature: normalised dense features . text features, bilinearly resized to out_size."""
    feats = dense_fn(x)                                   # (B, D, h, w), not normalised
    b, d, h, w = feats.shape
    feats = feats.flatten(2).transpose(1, 2)              # (B, N, D), row-major tokens
    feats = F.normalize(feats, dim=-1)                    # encode_dense(normalize=True)
    logits = feats @ query_features.to(feats.dtype).T     # (B, N, Q)
    logits = logits.permute(0, 2, 1).reshape(b, -1, h, w)  # (B, Q, h, w)
    return F.interpolate(logits, size=tuple(out_size), mode='bilinear', align_corners=False)


def _postprocess(logits, query_idx, logit_scale, prob_thd):
    """[D] postprocess_result for one image. logits: (Q, H0, W0)."""
    probs = (logits * logit_scale).softmax(0)             # softmax over all queries
    q_idx = torch.as_tensor(query_idx, dtype=torch.int64, device=probs.device)
    num_cls, num_q = int(q_idx.max()) + 1, q_idx.numel()
    if num_cls != num_q:
        # identical to [D]'s (probs * one_hot.T).max(1)[0] since probs >= 0
        probs = torch.stack([probs[q_idx == c].max(0)[0] for c in range(num_cls)], 0)
    seg_pred = probs.argmax(0, keepdim=True)
    seg_pred[probs.max(0, keepdim=True)[0] < prob_thd] = 0
    return seg_pred[0], probs


@torch.no_grad()
def reference_segment(img, dense_fn, query_features, query_idx, *, logit_scale, prob_thd,
                      crop_size, stride, patch_size, ori_shape):
    """img: (1, 3, H, W) float tensor, already resized and normalised as the reference's test pipeline does.
    dense_fn: callable taking a window (1, 3, h, w) whose h and w are multiples of patch_size, returning the
        backbone's dense feature map (1, D, h // patch_size, w // patch_size), NOT yet L2-normalised.
    query_features: (Q, D) L2-normalised text embeddings, one row per query (each synonym is its own query).
    query_idx: list of Q ints, the class of each query (as get_cls_idx returns).
    ori_shape: (H0, W0) the size the logits are resized to at the end.
    Returns (seg_pred (H0, W0) int64, class_probs (num_cls, H0, W0)) exactly as the reference computes them.

    [D] uses patch_size=16 (hard-coded), crop_size=336, stride=112."""
    h_stride, w_stride = _pair(stride)
    h_crop, w_crop = _pair(crop_size)
    bs, _, h_img, w_img = img.shape
    num_q = query_features.shape[0]
    n_h = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    n_w = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((bs, num_q, h_img, w_img))
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
                win = F.pad(win, pad)                     # zeros, (left, right, top, bottom)
            logit = _cosine_logits(win, dense_fn, query_features, win.shape[-2:])
            if any(pad):
                left, top = pad[0], pad[2]
                logit = logit[:, :, top:top + h, left:left + w]
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    assert (count == 0).sum() == 0
    preds = preds / count
    logits = F.interpolate(preds, size=tuple(ori_shape), mode='bilinear', align_corners=False)
    return _postprocess(logits[0], query_idx, logit_scale, prob_thd)


@torch.no_grad()
def reference_segment_whole(img, dense_fn, query_features, query_idx, *, logit_scale, prob_thd,
                            patch_size, ori_shape):
    """[D] predict with slide_crop <= 0: forward_feature(inputs, ori_shape). The whole image goes to the
    backbone without padding. EVA's stride-p patch-embedding conv drops the trailing H % p / W % p
    pixels, which is reproduced here by cropping to the top-left multiple of patch_size. The token logits are
    resized in one step straight to ori_shape (bilinear, align_corners False) and post-processed as in the
    slide path. The [D] code reshapes with h = w = int(sqrt(N)), so it only works for square token grids.
    No [D] config uses this path."""
    h_img, w_img = img.shape[2:]
    hp, wp = (h_img // patch_size) * patch_size, (w_img // patch_size) * patch_size
    logits = _cosine_logits(img[:, :, :hp, :wp], dense_fn, query_features, ori_shape)
    return _postprocess(logits[0], query_idx, logit_scale, prob_thd)


# Per-dataset settings of [D] configs/cfg_*.py (model defaults: logit_scale=40, prob_thd=0.0,
# slide_crop=336, slide_stride=112; test Resize(scale=..., keep_ratio=True) placed BEFORE LoadAnnotations).
REFERENCE_SETTINGS = {
    #  name         class file              logit_scale prob_thd  resize scale (long, short)
    'voc21':       dict(name_path='cls_voc21.txt',       logit_scale=80, prob_thd=0.4,  scale=(4096, 448)),
    'pc60':        dict(name_path='cls_context60.txt',   logit_scale=40, prob_thd=0.15, scale=(4096, 448)),
    'coco_object': dict(name_path='cls_coco_object.txt', logit_scale=40, prob_thd=0.2,  scale=(2048, 448)),
    'voc20':       dict(name_path='cls_voc20.txt',       logit_scale=40, prob_thd=0.0,  scale=(4096, 448)),
    'pc59':        dict(name_path='cls_context59.txt',   logit_scale=40, prob_thd=0.0,  scale=(4096, 448)),
    'coco_stuff':  dict(name_path='cls_coco_stuff.txt',  logit_scale=40, prob_thd=0.0,  scale=(4096, 448)),
    'cityscapes':  dict(name_path='cls_city_scapes.txt', logit_scale=40, prob_thd=0.0,  scale=(4096, 560)),
    'ade20k':      dict(name_path='cls_ade20k.txt',      logit_scale=40, prob_thd=0.0,  scale=(4096, 448)),
}
REFERENCE_SLIDE = dict(crop_size=336, stride=112, patch_size=16)
