"""Independent re-statement of DeCLIP's zero-shot region classification protocol
(COCO panoptic val2017, "rois" = box pooling and "maskpool" = mask pooling).

Written from a reading of the authors' public code; no code was copied, only
behaviour (the 63 prompt template strings are data and are reproduced as is).

Sources (all paths at the commits below)
----------------------------------------
DeCLIP  = github.com/xiaomoguhz/DeCLIP, branch main,
          commit 2c0b3decc89fc4072651a1fc832ca3be49e2dd76 (2025-05-10).
          Every file used here was last changed in commit
          2f0ffc724814a905e6716aaf111d8abe1d8a7ef4 ("declip training code").
CLIPSelf = github.com/wusize/CLIPSelf, commit 1c7fe9c5c38d800903d4754a89d7a8fcc7977101.

Step by step
------------
prompts / text embedding
    DeCLIP tools/generate_text_embeddings.py: ``multiple_templates`` (63 ViLD
    style templates), ``article()`` ('an' iff the RAW name's first character is
    in 'aeiou'), ``processed_name(rm_dot=True)`` ('_' -> ' ', '/' -> ' or ',
    lower(), rstrip('.')); a "This is " prefix is added to every formatted prompt
    that starts with "a" or "the"; ``build_text_embedding_lvis`` (the one the
    __main__ block uses): encode_text -> L2-normalise each prompt -> mean ->
    L2-normalise.  Names are the raw ``categories[*]['name']`` of
    panoptic_val2017.json sorted by category id, so '-merged' / '-other' /
    '-stuff' suffixes are kept verbatim.  The result ships as
    metadata/coco_panoptic_clip_hand_craft_EVACLIP_ViTB16.npy (133x512 fp32) and
    ..._EVACLIP_ViTL14x336.npy (133x768); zero_shot.py ``run`` L2-normalises it
    again.  CLIPSelf tools/generate_text_embeddings.py is byte-identical and its
    metadata/*.npy files are byte-identical too.
image transform
    DeCLIP src/open_clip/factory.py ``create_model_and_transforms`` ->
    ``det_image_transform(det_image_size, is_train=False, mean, std)`` in
    src/open_clip/transform.py = [ResizeLongest(size, fill=0), to RGB, ToTensor,
    Normalize(OPENAI mean/std)].  ``ResizeLongest``: scale = size / max(h, w),
    new = (round(h*scale), round(w*scale)) with Python's round (half to even),
    torchvision resize BICUBIC (PIL), then pad right/bottom with fill 0 (black)
    BEFORE normalisation.  Box scale = ``get_scale`` = min(S/h, S/w) = S/max(h, w)
    (not the rounded ratio).  Mean/std = OPENAI_DATASET_MEAN/STD
    (src/open_clip/constants.py; the EVA factory falls back to them).
    Resolution: scripts/dist_DeCLIP_eva_vitb16_coco.sh and
    scripts/dist_DeCLIP_eva_vitL14_336_coco.sh pass --det-image-size 560
    (downsample 16 -> 35x35 tokens, downsample 14 -> 40x40 tokens).
regions
    DeCLIP src/training/data.py ``COCOPanopticDataset.__getitem__`` with
    src/training/coco_api.py ``COCOPanoptic.createIndex`` (every entry of
    segments_info, crowd included, in file order) and src/training/utils.py
    ``mask2box``.  Things: box = annotation bbox [x, y, x+w, y+h]; stuff: box from
    the mask, x1 = max column, y1 = max row (NOT +1), w = x1-x0, h = y1-y0.
    Skip if w*h < 8**2 or w*h > 1024**2 (min_size hard-coded to 8 "fix for val").
    max_anns = min(max #segments over the dataset, 100); the loop breaks at
    index i == max_anns counting ALL segments, skipped ones included.
    Label = rank of the category id among the sorted category ids.
box pooling
    DeCLIP src/open_clip/eva_clip/eva_vit_model.py ``extract_roi_features`` /
    ``_denormalize_boxes`` and src/open_clip/eva_clip/model.py
    ``encode_pseudo_boxes(normalize=True)``: boxes (input pixels) / S, times the
    token grid size, torchvision roi_align(output (1, 1), spatial_scale 1.0,
    sampling_ratio -1, aligned True) on the raw dense map (tokens NOT
    normalised: DeCLIP's EVA ``encode_dense`` does not normalise), then L2.
    (CLIPSelf's EVA encode_dense L2-normalises every token first.)
mask pooling
    DeCLIP data.py ``segm_transform = ResizeLongest(S // downsample_factor,
    fill=0)`` on the float mask at original resolution (torch tensor path:
    bicubic, align_corners=False, antialias=None == False for tensors with the
    pinned torchvision 0.15.1), pad right/bottom with 0, threshold ``> 0.0``;
    eva_vit_model.py ``mask_pool``: sum(token * mask) / (mask.sum() + 1e-12),
    then ``encode_masks(normalize=True)`` L2.
metric
    DeCLIP src/training/zero_shot.py ``run`` + ``macc_with_is_thing`` (identical
    to CLIPSelf src/training/zero_shot.py): top-5 of region-feature @ class
    embeddings, per-class mean accuracy (each class accuracy rounded through
    fp16 with ``.half()``), averaged over classes present, reported separately
    for things and stuff: thing.macc1, thing.macc5, stuff.macc1, stuff.macc5.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# --------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

#: --det-image-size in both DeCLIP training/eval scripts (EVA B/16 and L/14-336)
DECLIP_EVAL_SIZE = 560
#: CLIPSelf scripts/test_eva_vitb16_macc_boxes_masks.sh / ..._vitl14_...sh
CLIPSELF_EVAL_SIZE = {"EVA02-CLIP-B-16": 1024, "EVA02-CLIP-L-14-336": 896}

MIN_SIZE = 8          # data.py: self.min_size = 8  # fix for val
MAX_SIZE = 1024       # data.py: self.max_size = 1024
MAX_ANNS_CAP = 100    # data.py: min(max(num_annos), 100)

# ViLD hand-crafted templates, in the reference order.  '{article}' is the
# a/an slot, '{}' the (processed) class name.  63 entries.
_TEMPLATES: Tuple[str, ...] = (
    'There is {article} {} in the scene.',
    'There is the {} in the scene.',
    'a photo of {article} {} in the scene.',
    'a photo of the {} in the scene.',
    'a photo of one {} in the scene.',
    'itap of {article} {}.',
    'itap of my {}.',
    'itap of the {}.',
    'a photo of {article} {}.',
    'a photo of my {}.',
    'a photo of the {}.',
    'a photo of one {}.',
    'a photo of many {}.',
    'a good photo of {article} {}.',
    'a good photo of the {}.',
    'a bad photo of {article} {}.',
    'a bad photo of the {}.',
    'a photo of a nice {}.',
    'a photo of the nice {}.',
    'a photo of a cool {}.',
    'a photo of the cool {}.',
    'a photo of a weird {}.',
    'a photo of the weird {}.',
    'a photo of a small {}.',
    'a photo of the small {}.',
    'a photo of a large {}.',
    'a photo of the large {}.',
    'a photo of a clean {}.',
    'a photo of the clean {}.',
    'a photo of a dirty {}.',
    'a photo of the dirty {}.',
    'a bright photo of {article} {}.',
    'a bright photo of the {}.',
    'a dark photo of {article} {}.',
    'a dark photo of the {}.',
    'a photo of a hard to see {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of {article} {}.',
    'a low resolution photo of the {}.',
    'a cropped photo of {article} {}.',
    'a cropped photo of the {}.',
    'a close-up photo of {article} {}.',
    'a close-up photo of the {}.',
    'a jpeg corrupted photo of {article} {}.',
    'a jpeg corrupted photo of the {}.',
    'a blurry photo of {article} {}.',
    'a blurry photo of the {}.',
    'a pixelated photo of {article} {}.',
    'a pixelated photo of the {}.',
    'a black and white photo of the {}.',
    'a black and white photo of {article} {}.',
    'a plastic {}.',
    'the plastic {}.',
    'a toy {}.',
    'the toy {}.',
    'a plushie {}.',
    'the plushie {}.',
    'a cartoon {}.',
    'the cartoon {}.',
    'an embroidered {}.',
    'the embroidered {}.',
    'a painting of the {}.',
    'a painting of a {}.',
)
assert len(_TEMPLATES) == 63


# --------------------------------------------------------------------------
# text side
# --------------------------------------------------------------------------
def _article_for(raw_name: str) -> str:
    # decided on the RAW name (before processing), lower-case vowels only
    return 'an' if raw_name[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'


def _normalise_name(raw_name: str) -> str:
    # '_' -> space (LVIS), '/' -> ' or ' (Objects365), lower case, trailing dots
    # removed.  Nothing else: COCO panoptic '-merged', '-other', '-stuff'
    # suffixes and hyphens are kept.
    out = raw_name.replace('_', ' ')
    out = out.replace('/', ' or ')
    return out.lower().rstrip('.')


def reference_prompts(name: str) -> List[str]:
    """The 63 prompts DeCLIP builds for one raw panoptic category name."""
    art = _article_for(name)
    cls = _normalise_name(name)
    prompts = []
    for tpl in _TEMPLATES:
        text = tpl.format(cls, article=art)
        if text.startswith('a') or text.startswith('the'):
            text = 'This is ' + text
        prompts.append(text)
    return prompts


def reference_text_embedding(encode_text: Callable[[List[str]], torch.Tensor],
                             name: str) -> torch.Tensor:
    """One class embedding: L2 each prompt embedding, average, L2 again.

    ``encode_text(list_of_str) -> (P, D)`` must return the raw (unnormalised)
    text-tower outputs.
    """
    feats = encode_text(reference_prompts(name))
    feats = torch.as_tensor(feats).float()
    feats = feats / feats.norm(dim=-1, keepdim=True)
    mean = feats.mean(dim=0)
    return mean / mean.norm()


def reference_class_names(categories) -> List[str]:
    """Raw names sorted by category id (order of the class-embedding rows)."""
    cats = list(categories.values()) if isinstance(categories, dict) else list(categories)
    return [c['name'] for c in sorted(cats, key=lambda c: c['id'])]


def reference_class_embeddings(encode_text, categories) -> torch.Tensor:
    """(C, D) matrix as loaded by zero_shot.run (normalised once more)."""
    rows = [reference_text_embedding(encode_text, n) for n in reference_class_names(categories)]
    return F.normalize(torch.stack(rows, 0), dim=-1)


# --------------------------------------------------------------------------
# image side
# --------------------------------------------------------------------------
def _resized_hw(h: int, w: int, size: int) -> Tuple[int, int, float]:
    s = size / float(max(h, w))
    # Python's round(): banker's rounding, e.g. 374.5 -> 374
    return round(h * s), round(w * s), s


def reference_preprocess(pil_rgb_image: Image.Image, size: int = DECLIP_EVAL_SIZE,
                         mean: Sequence[float] = OPENAI_MEAN,
                         std: Sequence[float] = OPENAI_STD) -> Tuple[torch.Tensor, float]:
    """ResizeLongest(size) (PIL bicubic) -> pad right/bottom with black ->
    RGB -> [0, 1] -> (x - mean) / std.  Returns (tensor (3, size, size), scale)
    with scale = min(size / H, size / W) applied to original-pixel boxes."""
    w, h = pil_rgb_image.size
    new_h, new_w, _ = _resized_hw(h, w, size)
    img = pil_rgb_image
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    # black canvas, image at top-left (padding on the right and bottom only)
    canvas = Image.new(img.mode, (size, size), 0)
    canvas.paste(img, (0, 0))
    canvas = canvas.convert('RGB')
    arr = np.array(canvas, dtype=np.uint8)                   # (S, S, 3)
    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous().float().div(255)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    x = (x - m) / sd
    scale = min(size / h, size / w)
    return x, scale


def reference_boxes_to_input(boxes_xyxy_orig, scale: float) -> torch.Tensor:
    """Original-pixel boxes -> input pixels, in float32 like the reference."""
    b = torch.as_tensor(np.asarray(boxes_xyxy_orig, dtype=np.float32)).reshape(-1, 4).clone()
    b *= scale
    return b


# --------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------
def reference_rgb2id(png_rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG (H, W, 3) uint8 -> segment ids R + 256 G + 256^2 B."""
    c = png_rgb.astype(np.int32)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def _cat_lookup(categories) -> Dict[int, dict]:
    if isinstance(categories, dict):
        return {int(k): v for k, v in categories.items()}
    return {int(c['id']): c for c in categories}


def reference_regions(panoptic_ids: np.ndarray, segments_info: Sequence[dict], categories,
                      max_anns: int = MAX_ANNS_CAP) -> List[dict]:
    """Regions of one image, in segments_info order.

    Each item: box_xyxy (original pixels, float), mask (H, W) bool at original
    resolution, category_id, isthing (int 0/1), label (contiguous index among the
    sorted category ids), segment_id, size (w*h used by the filter).

    ``max_anns`` is min(max #segments of any image in the split, 100); as no
    image can exceed the split maximum, 100 is the effective per-image cap.
    The cap counts every segment (also those skipped by the size filter).
    """
    cats = _cat_lookup(categories)
    id2label = {cid: i for i, cid in enumerate(sorted(cats))}
    out = []
    for i, seg in enumerate(segments_info):
        if i == max_anns:
            break
        cat_id = int(seg['category_id'])
        isthing = int(cats[cat_id]['isthing'])
        mask = panoptic_ids == seg['id']
        if isthing > 0:
            x, y, w, h = seg['bbox']
        else:
            ys, xs = np.nonzero(mask)
            x0, x1 = xs.min(), xs.max()       # x1 = max column, no +1
            y0, y1 = ys.min(), ys.max()
            x, y, w, h = x0, y0, x1 - x0, y1 - y0
        size = w * h
        if size < MIN_SIZE ** 2 or size > MAX_SIZE ** 2:
            continue
        out.append(dict(
            box_xyxy=[float(x), float(y), float(x + w), float(y + h)],
            mask=mask,
            category_id=cat_id,
            isthing=isthing,
            label=id2label[cat_id],
            segment_id=int(seg['id']),
            size=float(size),
        ))
    return out


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
def reference_box_pool(dense: torch.Tensor, boxes_xyxy_in_input_pixels, patch_size: int,
                       input_size: Union[int, Tuple[int, int], None] = None,
                       normalize_tokens: bool = False) -> torch.Tensor:
    """RoIAlign(1x1, sampling_ratio=-1, aligned=True) of the dense map, then L2.

    dense: (1, D, h, w) raw tokens (DeCLIP EVA path: not normalised;
    ``normalize_tokens=True`` gives CLIPSelf's behaviour).  Boxes are divided
    by the padded input size (default h*patch, w*patch) and multiplied by the
    token grid, exactly as the reference does, so spatial scale = 1/patch when
    the input size is a multiple of the patch size.
    """
    from torchvision.ops import roi_align

    _, _, gh, gw = dense.shape
    if input_size is None:
        in_h, in_w = gh * patch_size, gw * patch_size
    elif isinstance(input_size, int):
        in_h = in_w = input_size
    else:
        in_h, in_w = input_size
    b = torch.as_tensor(boxes_xyxy_in_input_pixels, dtype=torch.float32).reshape(-1, 4).clone()
    b[:, 0::2] /= in_w
    b[:, 1::2] /= in_h
    b[:, 0::2] *= gw
    b[:, 1::2] *= gh
    feats = dense.float()
    if normalize_tokens:
        feats = F.normalize(feats, dim=1)
    pooled = roi_align(feats, [b.to(feats.device)], output_size=(1, 1),
                       spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return F.normalize(pooled[:, :, 0, 0], dim=-1)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        return np.stack([_to_numpy(v) for v in x]) if len(x) else np.zeros((0,))
    return np.asarray(x)


def reference_mask_to_grid(mask: np.ndarray, grid: int) -> torch.Tensor:
    """ResizeLongest(grid) of a float mask at ORIGINAL resolution: bicubic,
    align_corners=False, no antialias, pad right/bottom with 0, then > 0."""
    m = torch.from_numpy(np.ascontiguousarray(_to_numpy(mask))).float()
    h, w = m.shape
    nh, nw, _ = _resized_hw(h, w, grid)
    if (nh, nw) != (h, w):
        m = F.interpolate(m[None, None], size=(nh, nw), mode='bicubic',
                          align_corners=False)[0, 0]
    out = torch.zeros(grid, grid, dtype=torch.float32)
    out[:nh, :nw] = m
    return out > 0.0


def reference_mask_pool(dense: torch.Tensor, masks, normalize_tokens: bool = False,
                        masks_on_grid: bool = False) -> torch.Tensor:
    """Mask-weighted mean of the tokens, then L2.

    masks: (N, H, W) bool at the ORIGINAL image resolution (as returned by
    ``reference_regions``); they are brought to the token grid with
    ``reference_mask_to_grid`` (grid = S // patch = dense h = dense w).
    Passing masks already resampled to the padded S x S input is NOT what the
    reference does (its bicubic sampling positions differ); pass
    ``masks_on_grid=True`` with (N, h, w) masks to skip the resize.
    A mask with no positive grid cell gives a zero vector (sum / 1e-12 = 0).
    """
    _, d, gh, gw = dense.shape
    if masks_on_grid:
        grid_masks = torch.as_tensor(_to_numpy(masks)).float().reshape(-1, gh, gw)
    else:
        assert gh == gw, 'reference mask grid is square (S // downsample_factor)'
        grid_masks = torch.stack([reference_mask_to_grid(_to_numpy(m), gh) for m in masks]).float() \
            if len(masks) else torch.zeros(0, gh, gw)
    tokens = dense.float()
    if normalize_tokens:
        tokens = F.normalize(tokens, dim=1)
    tokens = tokens[0].flatten(1).t()                      # (h*w, D), row-major
    wts = grid_masks.flatten(1).to(tokens.device)          # (N, h*w)
    pooled = (wts @ tokens) / (wts.sum(1, keepdim=True) + 1e-12)
    return F.normalize(pooled, dim=-1)


# --------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------
def _macc(correct: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float('nan')       # the reference would crash here
    accs = []
    for lb in range(int(labels.min()), int(labels.max()) + 1):
        sel = correct[labels == lb]
        if sel.shape[0] == 0:
            continue
        accs.append(sel.mean().half().item())   # fp16 rounding per class
    return sum(accs) / len(accs)


def reference_metric(predictions, labels, isthing) -> Dict[str, float]:
    """predictions: (N, C) logits (top-5 taken with torch.topk) or (N, k>=5)
    class indices sorted best first; labels: (N,) contiguous labels; isthing:
    (N,) 0/1.  Returns per-class mean top-1/top-5 accuracy (0..1) for things and
    stuff separately, as zero_shot.macc_with_is_thing."""
    p = torch.as_tensor(predictions)
    if p.is_floating_point():
        top5 = p.float().topk(5, dim=-1).indices
    else:
        top5 = p[:, :5].long()
    lab = torch.as_tensor(labels).long().view(-1)
    thing = torch.as_tensor(isthing).float().view(-1)
    correct = (top5 == lab.view(-1, 1)).float()           # (N, 5)
    res = {}
    for key, sel in (('thing', thing > 0), ('stuff', thing < 1)):
        c = correct[sel]
        lb = lab[sel]
        res[f'{key}.macc1'] = _macc(c[:, 0], lb)
        res[f'{key}.macc5'] = _macc(c.sum(-1), lb)
    return res
