"""Independent reference for CLIPSelf's F-ViT head, loss, score fusion and OV-COCO data files.

Written from a reading of the public code (no code copied); torch + json + numpy only.
Nothing here imports the package under test.

Sources read (exact revisions)
------------------------------
[CS]   github.com/wusize/CLIPSelf @ 1c7fe9c5c38d800903d4754a89d7a8fcc7977101 (HEAD, 2023-10-25);
       the files used below were last changed in 099d4d76 / 41dc4a8b (2023-10-02).
       - F-ViT/models/fvit_head.py        FViTBBoxHead.__init__ / .forward / .get_bboxes, FViTRoIHead._bbox_forward
       - F-ViT/models/custom_losses.py    cross_entropy(), CustomCrossEntropyLoss
       - F-ViT/models/evaclip_vit.py      EvaCLIPViT.forward (per-pixel L2-normalised VLM map)
       - F-ViT/models/fvit.py             FViT.simple_test / forward_train
       - F-ViT/datasets/coco_ov.py        CocoDatasetOV (label mapping, evaluation)
       - F-ViT/datasets/mscoco_{65,seen,unseen,all}_classes.json
       - F-ViT/configs/ov_coco/fvit_vitb16_upsample_fpn_bs64_3e_ovcoco_eva_original.py (class_weight, T, alpha, beta)
       - F-ViT/README.md                   (names the `_65_cat` file only; it is on a Google drive)
[OVR]  github.com/alirezazareian/ovr-cnn @ c904af7455658906abaeaa1ff6c4cbe182efa08d
       - ipynb/003.ipynb  filter_annotation() + writers of instances_{train,val}2017_{seen,unseen,all}_2.json
       - mscoco_{seen,unseen}_classes.json (same sets as CLIPSelf's lists, different order, seen has 'background')
[MMD2] mmdet 2.28.1 (PyPI wheel mmdet-2.28.1-py3-none-any.whl, sha256 282c661cc5519dd6...b590f5), the version the
       F-ViT README pins: BBoxHead.loss (avg_factor), CrossEntropyLoss.forward (class_weight -> tensor,
       loss_weight), losses/utils.weight_reduce_loss (sum / (avg_factor + fp32 eps)),
       post_processing/bbox_nms.multiclass_nms (drops last column, scores > score_thr),
       datasets/coco.CocoDataset.load_annotations/_filter_imgs (cat2label from json category order).
[D2]   github.com/facebookresearch/detectron2 @ 0dd2b6579a4ba8d6bdddd3f5d010e9c1b620870d
       detectron2/data/datasets/builtin_meta.py COCO_CATEGORIES (COCO category ids used in COCO_65_IDS).

Function -> source map
----------------------
reference_cls_logits      [CS] fvit_head.py FViTBBoxHead.forward (training branch) + __init__ (text matrix)
reference_custom_ce       [CS] custom_losses.py cross_entropy/CustomCrossEntropyLoss; [MMD2] BBoxHead.loss,
                          CrossEntropyLoss.forward, weight_reduce_loss
reference_fused_scores    [CS] fvit_head.py FViTBBoxHead.forward (eval branch) + get_bboxes; evaclip_vit.py
                          (VLM map normalisation); [MMD2] multiclass_nms
reference_ovcoco_split    [OVR] ipynb/003.ipynb filter_annotation; [CS] README + coco_ov.py + [MMD2]
                          CocoDataset.load_annotations for the `_65_cat` reading
reference_mmdet2_cat2label [MMD2] CocoDataset.load_annotations (+ CocoDatasetOV calling it with the 80 COCO names)
reference_text_matrix     [CS] fvit_head.py FViTBBoxHead.__init__
COCO_BASE_48 / COCO_NOVEL_17 / COCO_65   [CS] F-ViT/datasets/mscoco_{seen,unseen,65}_classes.json
COCO_65_IDS               [D2] builtin_meta.COCO_CATEGORIES
OVCOCO_CLASS_WEIGHT       [CS] configs/ov_coco/fvit_vitb16_..._eva_original.py `class_weight`
OVCOCO_B16_HEAD           [CS] same config, bbox_head kwargs
"""
import copy

import numpy as np  # noqa: F401  (allowed dependency; kept for callers that build inputs)
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# Constants (names exactly as CLIPSelf's F-ViT/datasets/mscoco_*_classes.json, COCO-id order)
# --------------------------------------------------------------------------------------
COCO_65 = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra',
    'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'kite', 'skateboard', 'surfboard', 'bottle', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut',
    'cake', 'chair', 'couch', 'bed', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase',
    'scissors', 'toothbrush')

COCO_BASE_48 = (
    'person', 'bicycle', 'car', 'motorcycle', 'train', 'truck', 'boat', 'bench', 'bird',
    'horse', 'sheep', 'bear', 'zebra', 'giraffe', 'backpack', 'handbag', 'suitcase', 'frisbee',
    'skis', 'kite', 'surfboard', 'bottle', 'fork', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed', 'toilet',
    'tv', 'laptop', 'mouse', 'remote', 'microwave', 'oven', 'toaster', 'refrigerator', 'book',
    'clock', 'vase', 'toothbrush')

COCO_NOVEL_17 = (
    'airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie', 'snowboard',
    'skateboard', 'cup', 'knife', 'cake', 'couch', 'keyboard', 'sink', 'scissors')

# COCO 2017 category ids of the 65 names ([D2] builtin_meta.COCO_CATEGORIES).
COCO_65_IDS = {
    'person': 1, 'bicycle': 2, 'car': 3, 'motorcycle': 4, 'airplane': 5, 'bus': 6, 'train': 7,
    'truck': 8, 'boat': 9, 'bench': 15, 'bird': 16, 'cat': 17, 'dog': 18, 'horse': 19,
    'sheep': 20, 'cow': 21, 'elephant': 22, 'bear': 23, 'zebra': 24, 'giraffe': 25,
    'backpack': 27, 'umbrella': 28, 'handbag': 31, 'tie': 32, 'suitcase': 33, 'frisbee': 34,
    'skis': 35, 'snowboard': 36, 'kite': 38, 'skateboard': 41, 'surfboard': 42, 'bottle': 44,
    'cup': 47, 'fork': 48, 'knife': 49, 'spoon': 50, 'bowl': 51, 'banana': 52, 'apple': 53,
    'sandwich': 54, 'orange': 55, 'broccoli': 56, 'carrot': 57, 'pizza': 59, 'donut': 60,
    'cake': 61, 'chair': 62, 'couch': 63, 'bed': 65, 'toilet': 70, 'tv': 72, 'laptop': 73,
    'mouse': 74, 'remote': 75, 'keyboard': 76, 'microwave': 78, 'oven': 79, 'toaster': 80,
    'sink': 81, 'refrigerator': 82, 'book': 84, 'clock': 85, 'vase': 86, 'scissors': 87,
    'toothbrush': 90}

# 66-vector (65 classes in COCO_65 order + background last), verbatim values of the config's `class_weight`.
# Zeros sit exactly at the COCO_65 indices of the 17 novel names; background weight 0.6.
OVCOCO_CLASS_WEIGHT = (
    1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
    1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0,
    0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0,
    1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.6)
OVCOCO_NOVEL_INDICES = (4, 5, 11, 12, 15, 16, 21, 23, 27, 29, 32, 34, 45, 47, 54, 58, 63)

# Head hyper-parameters of the OV-COCO configs (B/16 and L/14 identical except fc_out_channels 512 / 768).
OVCOCO_B16_HEAD = dict(
    learned_temperature=50.0,   # fixed_temperature=0 -> nn.Parameter initialised to 50
    vlm_temperature=75.0, alpha=0.1, beta=0.8,
    fc_out_channels=512, num_classes=65,
    score_thr=0.01, nms_iou=0.4, max_per_img=100)

# CustomCrossEntropyLoss's masking threshold: columns with class_weight < 1e-5 get logit -inf.
MASK_THRESHOLD = 0.00001


def _self_check_constants():
    assert len(COCO_65) == 65 and len(COCO_BASE_48) == 48 and len(COCO_NOVEL_17) == 17
    assert set(COCO_BASE_48) | set(COCO_NOVEL_17) == set(COCO_65)
    assert not set(COCO_BASE_48) & set(COCO_NOVEL_17)
    assert [n for n in COCO_65 if n in COCO_BASE_48] == list(COCO_BASE_48)
    assert [n for n in COCO_65 if n in COCO_NOVEL_17] == list(COCO_NOVEL_17)
    assert [COCO_65_IDS[n] for n in COCO_65] == sorted(COCO_65_IDS.values())
    assert len(OVCOCO_CLASS_WEIGHT) == 66
    assert tuple(i for i, w in enumerate(OVCOCO_CLASS_WEIGHT) if w == 0) == OVCOCO_NOVEL_INDICES
    assert tuple(COCO_65.index(n) for n in COCO_NOVEL_17) == OVCOCO_NOVEL_INDICES


_self_check_constants()


# --------------------------------------------------------------------------------------
# Text matrix
# --------------------------------------------------------------------------------------
def reference_text_matrix(class_embed, all_classes=COCO_65):
    """(K+1, D) text matrix as FViTBBoxHead.__init__ builds it ([CS] fvit_head.py).

    `class_embed` is the dict loaded from the .pt file ({name: fp32 tensor(D)}, 81 keys for COCO incl.
    'background'). Rows are taken in `all_classes` order with 'background' appended last, then each class
    vector is L2-normalised (F.normalize, eps 1e-12). The reference stores the transpose (D, K+1) as a
    buffer; learn_bg=False in every config, so the bg row is the fixed CLIP embedding of "background".
    """
    names = list(all_classes) + ['background']
    mat = torch.stack([torch.as_tensor(class_embed[n]) for n in names], dim=0)
    return F.normalize(mat, p=2, dim=-1)


# --------------------------------------------------------------------------------------
# 1. Training-time logits
# --------------------------------------------------------------------------------------
def reference_cls_logits(feat, text_embeddings, temperature):
    """Detector class logits of FViTBBoxHead.forward ([CS] fvit_head.py), as used in training.

    feat: (N, D) output of the class branch's only fc (`cls_fcs[0]`, num_cls_fcs=1) BEFORE activation.
    The reference DOES apply the ReLU to that last cls fc (`self.relu(fc(x_cls))`, marked
    `# FIXME: should discard the last relu`), so the embedding is non-negative. It is then divided by its
    own L2 norm with NO epsilon (`x / x.norm(dim=-1, keepdim=True)`): an all-non-positive pre-activation row
    gives NaN in the reference, and here too. The inherited `fc_cls` Linear is never used.
    text_embeddings: (K+1, D), 'background' last; re-normalised per class here (the reference normalises
    columns of its (D, K+1) buffer, which is the same thing).
    temperature: T_det (learned scalar, init 50 for every OV config).
    Returns (N, K+1): (e_hat @ E^T) * T. No bias, no softmax. Training never sees the VLM branch.
    """
    x = torch.relu(feat)
    x = x / x.norm(dim=-1, keepdim=True)
    emb = F.normalize(text_embeddings, p=2, dim=-1).to(x.dtype)
    return (x @ emb.t()) * temperature


# --------------------------------------------------------------------------------------
# 2. CustomCrossEntropyLoss as used by BBoxHead.loss
# --------------------------------------------------------------------------------------
def reference_custom_ce(cls_score, labels, class_weight, label_weights, avg_factor=None,
                        loss_weight=1.0, ignore_index=-100):
    """Value of `loss_cls` from mmdet-2.28.1 BBoxHead.loss with CLIPSelf's CustomCrossEntropyLoss.

    Steps (reference: [CS] custom_losses.cross_entropy; [MMD2] CrossEntropyLoss.forward, BBoxHead.loss,
    weight_reduce_loss):
      1. class_weight (K+1 list incl. bg) -> tensor; every column with class_weight < 1e-5 is set to -inf
         in the logits. The reference writes this IN PLACE into cls_score (so the training 'acc' metric
         sees the masked scores); this function works on a clone. bg (0.6) is never masked.
      2. per-sample loss l_i = -class_weight[y_i] * log_softmax(logits_i)[y_i]
         (F.cross_entropy(weight=class_weight, reduction='none'); NOT normalised by sum of weights);
         l_i = 0 where y_i == ignore_index (-100). A target in a masked column gives NaN (0 * inf) in the
         reference too; OV-COCO training never has one (annotations are base-only).
      3. l_i *= label_weights_i (RCNN: 1.0 for every sampled RoI since pos_weight=-1).
      4. loss = sum_i l_i / (avg_factor + float32_eps), where BBoxHead.loss passes
         avg_factor = max(#(label_weights > 0), 1.0). avg_factor=None here reproduces that default.
      5. times loss_weight (1.0 in the configs).
    Under fp16 training the reference casts cls_score to fp32 first (force_fp32 on BBoxHead.loss).
    """
    pred = cls_score.clone()
    cw = torch.as_tensor(class_weight, dtype=pred.dtype, device=pred.device)
    mask_out = cw < MASK_THRESHOLD
    pred[:, mask_out] = -float('inf')
    logp = torch.log_softmax(pred, dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    picked = logp.gather(1, safe_labels[:, None])[:, 0]
    per_sample = -cw[safe_labels] * picked
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    if label_weights is not None:
        per_sample = per_sample * label_weights.to(per_sample.dtype)
    if avg_factor is None:
        lw = label_weights if label_weights is not None else torch.ones_like(per_sample)
        avg_factor = max(float((lw > 0).sum().item()), 1.0)
    eps = torch.finfo(torch.float32).eps
    return loss_weight * (per_sample.sum() / (avg_factor + eps))


# --------------------------------------------------------------------------------------
# 3. Eval-time fusion
# --------------------------------------------------------------------------------------
def reference_fused_scores(cls_score_det, vlm_feat, text_embeddings, vlm_temperature, alpha, beta,
                           novel_mask):
    """Per-class scores that FViTBBoxHead.forward returns in eval mode ([CS] fvit_head.py).

    cls_score_det: (N, K+1) detector logits, i.e. reference_cls_logits(...) (T_det * cos).
    vlm_feat: (N, D) = FViTRoIHead._bbox_forward's `vlm_roi_extractor([vlm_feat], rois)[..., 0, 0]`:
      a 1x1 RoIAlign (torchvision, aligned=True, sampling_ratio=0 -> adaptive ceil(h)xceil(w) bilinear
      samples averaged, spatial_scale 1/16 for B/16) of the VLM map at the RPN PROPOSALS (before box
      regression). The map is L2-normalised per pixel BEFORE pooling (EvaCLIPViT.forward:
      F.normalize(head(norm(tokens)))), and the pooled vector is L2-normalised AGAIN after pooling
      (F.normalize(vlm_box_feats, dim=-1)) -- done here.
    novel_mask: (K+1,) bool, True for the 17 novel columns, bg False (reference: base_idx = seen + bg).
    Computation:
      p_det = softmax(cls_score_det); p_vlm = softmax(T_vlm * f_hat @ E^T) over the same K+1 columns
      (incl. the 'background' text row);
      base & bg columns: p_det^(1-alpha) * p_vlm^alpha; novel columns: p_det^(1-beta) * p_vlm^beta.
    No renormalisation. FViTBBoxHead.get_bboxes does NOT softmax again when not training
    (`scores = cls_score`); mmdet-2.28 multiclass_nms then drops the last (bg) column, keeps
    scores > score_thr (0.01), runs per-class NMS (IoU 0.4) with class-agnostic boxes, top 100.
    """
    emb = F.normalize(text_embeddings, p=2, dim=-1).to(cls_score_det.dtype)
    p_det = cls_score_det.softmax(dim=-1)
    f_hat = F.normalize(vlm_feat.to(cls_score_det.dtype), p=2, dim=-1)
    p_vlm = (f_hat @ emb.t() * vlm_temperature).softmax(dim=-1)
    novel = torch.as_tensor(novel_mask, dtype=torch.bool, device=p_det.device)
    base = ~novel
    out = p_det.clone()
    out[:, base] = p_det[:, base] ** (1 - alpha) * p_vlm[:, base] ** alpha
    out[:, novel] = p_det[:, novel] ** (1 - beta) * p_vlm[:, novel] ** beta
    return out


def reference_novel_mask(all_classes=COCO_65, seen_classes=COCO_BASE_48):
    """(K+1,) bool mask as the head derives it: novel = not in seen_classes + ['background']."""
    names = list(all_classes) + ['background']
    seen = set(seen_classes) | {'background'}
    return torch.tensor([n not in seen for n in names], dtype=torch.bool)


# --------------------------------------------------------------------------------------
# 4. OV-COCO annotation files
# --------------------------------------------------------------------------------------
def reference_ovcoco_split(instances_json, split):
    """Rebuild an OV-COCO annotation file from a COCO instances_{train,val}2017.json dict.

    split:
      'val_all_2'            -> instances_val2017_all_2.json   (OVR-CNN 003.ipynb, ['seen', 'unseen'])
      'train_seen_2_65_cat'  -> instances_train2017_seen_2_65_cat.json (CLIPSelf drive; see below)
      also 'seen_2' / 'unseen_2' / 'all_2' = the raw OVR-CNN filter for any input file.

    OVR-CNN filter_annotation ([OVR] ipynb/003.ipynb), reproduced here:
      * a category's split is decided by NAME (48 base -> 'seen', 17 novel -> 'unseen', other 15 -> none);
      * categories: those of the requested splits, in the input json's order (COCO-id order), each given
        a 'split' field ('seen'/'unseen') and an 'embedding' dict {'GloVE', 'BertEmb'} (word vectors --
        NOT reproduced here; nothing in F-ViT/mmdet reads them);
      * annotations: every annotation whose category is in the requested splits, in input order,
        unchanged -- iscrowd=1 annotations are KEPT (no iscrowd filter);
      * images: only images with >= 1 kept annotation (a crowd-only image counts); images with no
        annotations, or only annotations of other classes, are dropped. Order = input order.
      * every other top-level key (info, licenses) is copied unchanged.

    `_65_cat` is NOT built by any public code: F-ViT/README.md only names the file and says to download it.
    Best reading (from how CocoDatasetOV labels boxes): CocoDatasetOV calls mmdet-2 CocoDataset.__init__
    with the default 80 COCO names, so cat2label = order of the json's own categories; a 65-way head
    (class_weight/text rows in COCO_65 order) therefore needs a train json whose `categories` are the 65
    classes in COCO-id order, while images/annotations are those of instances_train2017_seen_2.json
    (base-only). That is what this returns (categories carry 'split' as in all_2).
    """
    base = set(COCO_BASE_48)
    novel = set(COCO_NOVEL_17)

    def split_of(name):
        if name in base:
            return 'seen'
        if name in novel:
            return 'unseen'
        return None

    if split in ('val_all_2', 'all_2'):
        keep_splits, cat_splits = ('seen', 'unseen'), ('seen', 'unseen')
    elif split == 'seen_2':
        keep_splits, cat_splits = ('seen',), ('seen',)
    elif split == 'unseen_2':
        keep_splits, cat_splits = ('unseen',), ('unseen',)
    elif split == 'train_seen_2_65_cat':
        keep_splits, cat_splits = ('seen',), ('seen', 'unseen')
    else:
        raise ValueError(f'unknown split {split!r}')

    src = instances_json
    out = {k: copy.deepcopy(v) for k, v in src.items()
           if k not in ('categories', 'annotations', 'images')}

    id2split = {c['id']: split_of(c['name']) for c in src['categories']}
    cats = []
    for c in src['categories']:
        s = id2split[c['id']]
        if s in cat_splits:
            c2 = copy.deepcopy(c)
            c2['split'] = s
            cats.append(c2)
    anns = [copy.deepcopy(a) for a in src['annotations'] if id2split.get(a['category_id']) in keep_splits]
    used = {a['image_id'] for a in anns}
    imgs = [copy.deepcopy(im) for im in src['images'] if im['id'] in used]
    out['categories'] = cats
    out['annotations'] = anns
    out['images'] = imgs
    return out


def reference_mmdet2_cat2label(categories, class_names=None):
    """mmdet-2.28 CocoDataset label mapping ([MMD2] load_annotations; pycocotools getCatIds order).

    CocoDatasetOV passes no `classes`, so the reference filters by the 80 COCO names of CocoDataset.CLASSES
    (a superset of COCO_65). class_names=None here keeps every json category, which is the same for COCO
    jsons. cat_ids = ids of json categories whose name is in class_names, IN JSON ORDER;
    label = position in that list. With a 48-category seen_2 json this gives labels 0..47 (mis-aligned with a
    65-way head); with the 65-category files it gives COCO_65 indices.
    """
    if class_names is None:
        names = None
    else:
        names = set(class_names)
    cat_ids = [c['id'] for c in categories if names is None or c['name'] in names]
    return {cid: i for i, cid in enumerate(cat_ids)}
