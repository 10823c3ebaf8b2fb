"""Measurements of the pretrained towers on a world's scenes (labels are used here, and only here).

* :func:`presence_retrieval` (CLIP, image level): per scene, the k thing classes it shows are the targets; the
  scene's image embedding ranks the 12 thing classes by cosine with their open_clip prompt embeddings
  (``OpenCLIPTextEncoder``, 'imagenet80' templates by default: the segmentation protocol's); precision@k is the
  share of the top k that are present (chance: k / 12). The same for the 4 stuff classes, and top-1 accuracy
  (is the best thing class present); and region classification: a square crop around each thing's box
  (1.2 x its longer side, RoIAlign-resized to the CLIP's input), classified among the 12 things (top-1).
* :func:`patch_knn_accuracy` (any dense tower, patch level): each patch takes the label at its centre; a
  held-out patch is classified by the majority of its ``k`` nearest train patches (cosine); reported as patch
  accuracy, mean per-class accuracy (stuff dominates the patches) and accuracy on thing patches; and, closer to
  what context distillation uses, :func:`within_image_neighbours` and :func:`segment_affinity_auc` on the
  held-out scenes.
"""
from typing import Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .data import load_split
from .world import NUM_STUFF, STUFF_CLASSES, THING_CLASSES


def _precision_at_k(scores: torch.Tensor, present: torch.Tensor) -> Dict:
    """scores, present (N, C) -> precision@k (k = present per row, rows with k = 0 skipped), top-1, chance."""
    k = present.sum(1)
    keep = k > 0
    scores, present, k = scores[keep], present[keep], k[keep]
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)          # 0 = best
    hits = (present & (rank < k[:, None])).sum(1).float() / k
    top1 = present.gather(1, scores.argmax(1, keepdim=True)).float()
    return dict(precision_at_k=float(hits.mean()), top1=float(top1.mean()),
                chance=float((k.float() / present.shape[1]).mean()), scenes=int(keep.sum()))


@torch.no_grad()
def presence_retrieval(model_name: str, checkpoint, world_root, split: str = 'val', templates: str = 'imagenet80',
                       limit: Optional[int] = None, batch_size: int = 64) -> Dict:
    """Zero-shot presence retrieval of the CLIP ``checkpoint`` on ``split`` (see the module doc)."""
    from declip_mm.models.clip_factory import create_clip
    from declip_mm.models.text.text_encoder import OpenCLIPTextEncoder
    from declip_mm.constants import CLIP_MEAN, CLIP_STD
    data = load_split(world_root, split, limit)
    text = OpenCLIPTextEncoder(model_name=model_name, pretrained=str(checkpoint), templates=templates,
                               synonym_reduce='mean', embedding_cache=False)
    things, stuff = text(THING_CLASSES).embeddings, text(STUFF_CLASSES).embeddings
    clip, _ = create_clip(model_name, str(checkpoint))
    size = clip.visual.image_size
    size = size if isinstance(size, int) else size[0]
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)

    def encode(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) and one (x0, y0, x1, y1) box per image -> (N, D) normalised embeddings of the boxes."""
        from torchvision.ops import roi_align
        out = []
        for start in range(0, len(images), batch_size):
            x, b = images[start:start + batch_size].float(), boxes[start:start + batch_size]
            rois = torch.cat([torch.arange(len(b), dtype=torch.float32)[:, None], b], 1)
            x = roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
            out.append(F.normalize(clip.encode_image((x / 255 - mean) / std), dim=-1))
        return torch.cat(out)

    h, w = data.images.shape[-2:]
    features = encode(data.images, torch.tensor([[0.0, 0.0, w, h]]).expand(len(data.images), 4))
    labels = data.labels.flatten(1)
    present_things = torch.stack([(labels == NUM_STUFF + c).any(1) for c in range(len(THING_CLASSES))], 1)
    present_stuff = torch.stack([(labels == s).any(1) for s in range(NUM_STUFF)], 1)
    # regions: a square crop around each thing's box (side 1.2 x its longer edge), classified among the things
    owners, boxes, truth = [], [], []
    for i, (box_list, label_list) in enumerate(zip(data.boxes, data.box_labels)):
        for (x0, y0, x1, y1), label in zip(box_list, label_list):
            half = 0.6 * max(x1 - x0, y1 - y0)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            owners.append(i)
            boxes.append([cx - half, cy - half, cx + half, cy + half])
            truth.append(label - NUM_STUFF)
    region_features = encode(data.images[owners], torch.tensor(boxes, dtype=torch.float32))
    region_pred = (region_features @ things.t()).argmax(1)
    return dict(templates=templates, things=_precision_at_k(features @ things.t(), present_things),
                stuff=_precision_at_k(features @ stuff.t(), present_stuff),
                regions=dict(top1=float((region_pred == torch.tensor(truth)).float().mean()), regions=len(truth),
                             chance=1 / len(THING_CLASSES)))


def patch_labels(labels: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, H, W) labels -> (N, grid * grid): the label at each patch centre."""
    n, h, w = labels.shape
    ys = ((torch.arange(grid) + 0.5) * h / grid).long()
    xs = ((torch.arange(grid) + 0.5) * w / grid).long()
    return labels[:, ys][:, :, xs].reshape(n, -1).long()


@torch.no_grad()
def patch_knn_accuracy(features_of: Callable[[torch.Tensor], torch.Tensor], world_root, grid: int,
                       train_scenes: int = 200, val_scenes: int = 100, k: int = 20, within_k: int = 8,
                       batch_size: int = 32, val_offset: int = 0, from_labels: bool = False) -> Dict:
    """k-NN patch classification on held-out scenes ``val_offset`` .. ``val_offset + val_scenes - 1``.

    ``features_of``: uint8 images (B, 3, H, W) -> patch features (B, grid * grid, C) (the tower's own
    resizing and normalisation inside); with ``from_labels`` it reads the label maps (B, H, W) instead (a
    teacher made of labels). Memory bank: the patches of ``train_scenes`` train scenes.
    """
    def embed(split, first, count):
        data = load_split(world_root, split, first + count)
        source = data.labels if from_labels else data.images
        feats = torch.cat([F.normalize(features_of(source[i:i + batch_size]).float(), dim=-1)
                           for i in range(first, len(source), batch_size)])
        return feats, patch_labels(data.labels[first:], grid)

    bank, bank_labels = (t.flatten(0, 1) for t in embed('train', 0, train_scenes))
    val_feats, val_labels = embed('val', val_offset, val_scenes)
    within = within_image_neighbours(val_feats, val_labels, k=within_k)
    within.update(segment_affinity_auc(val_feats @ val_feats.transpose(1, 2), val_labels))
    queries, truth = val_feats.flatten(0, 1), val_labels.flatten()
    num_classes = NUM_STUFF + len(THING_CLASSES)
    predicted = []
    for start in range(0, len(queries), 1024):
        sims, nearest = (queries[start:start + 1024] @ bank.t()).topk(k, dim=1)
        votes = F.one_hot(bank_labels[nearest], num_classes).float().sum(1)
        predicted.append(votes.argmax(1))
    predicted = torch.cat(predicted)
    per_class = [float((predicted[truth == c] == c).float().mean()) for c in range(num_classes) if (truth == c).any()]
    return dict(patch_accuracy=float((predicted == truth).float().mean()),
                mean_class_accuracy=sum(per_class) / len(per_class),
                thing_patch_accuracy=float((predicted[truth >= NUM_STUFF] == truth[truth >= NUM_STUFF]).float().mean()),
                k=k, train_scenes=train_scenes, val_scenes=val_scenes, val_offset=val_offset, grid=grid, **within)


def within_image_neighbours(features: torch.Tensor, labels: torch.Tensor, k: int = 8) -> Dict:
    """What context distillation needs: in each image, do a patch's ``k`` most similar patches (cosine) carry its
    label? features (N, P, C) L2-normalised, labels (N, P) -> precision over all patches, over thing patches,
    and the chance level (k random other patches of the same image)."""
    sims = features @ features.transpose(1, 2)
    sims.diagonal(dim1=1, dim2=2).fill_(float('-inf'))
    nearest = sims.topk(k, dim=2).indices                                          # (N, P, k)
    same = (labels.gather(1, nearest.flatten(1)).view_as(nearest) == labels[..., None]).float().mean(2)
    counts = (labels[:, :, None] == labels[:, None, :]).float().sum(2) - 1           # same-label others per patch
    chance = counts / (labels.shape[1] - 1)
    thing = labels >= NUM_STUFF
    return dict(within_image_precision=float(same.mean()), within_image_thing_precision=float(same[thing].mean()),
                within_image_chance=float(chance.mean()), within_image_thing_chance=float(chance[thing].mean()),
                within_k=k)


@torch.no_grad()
def clip_dense_probe(model_name: str, checkpoint, world_root, modes=('vanilla', 'csa'),
                     train_scenes: int = 200, val_scenes: int = 100) -> Dict:
    """:func:`patch_knn_accuracy` of the CLIP's dense map (``DeCLIPViT.extract_dense``, at its input size) in each
    last-block mode: how local a global CLIP's patch tokens are before any distillation."""
    from declip_mm.models.backbones.declip_vit import DeCLIPViT
    from declip_mm.constants import CLIP_MEAN, CLIP_STD
    out = {}
    for mode in modes:
        backbone = DeCLIPViT(model_name=model_name, pretrained=str(checkpoint), mode=mode, trainable='none')
        size = backbone.visual.image_size
        size = size if isinstance(size, int) else size[0]
        mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)

        def features_of(images, backbone=backbone, size=size):
            x = F.interpolate(images.float(), size=(size, size), mode='bilinear', antialias=True, align_corners=False)
            return backbone.extract_dense((x / 255 - mean) / std).flatten(2).transpose(1, 2)
        out[mode] = patch_knn_accuracy(features_of, world_root, size // backbone.patch_size, train_scenes, val_scenes)
    return out


def _auc(scores, positive) -> float:
    """Area under the ROC curve of ``scores`` (M,) ranking ``positive`` (M,) bool pairs first (Mann-Whitney U,
    ties share their mean rank); nan when one class is empty."""
    from scipy.stats import rankdata
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float('nan')
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def segment_affinity_auc(affinity: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> Dict:
    """How well a teacher's affinity separates same-segment from different-segment patch pairs of one image.

    affinity (N, P, P): any pairwise score per image (cosine of patch tokens, attention probabilities; it is
    symmetrised), labels (N, P) ground-truth label per patch. Over the pairs i < j of each image (patches with
    ``ignore_index`` left out), the AUC of the score for "i and j carry the same label", averaged over images:
    ``affinity_auc`` over all pairs, ``affinity_thing_auc`` over pairs with at least one thing patch (chance 0.5,
    a perfect grouping 1.0)."""
    if affinity.dim() != 3 or affinity.shape[1] != affinity.shape[2] or affinity.shape[:2] != labels.shape:
        raise ValueError(f'affinity (N, P, P) and labels (N, P) expected, got {tuple(affinity.shape)} and '
                         f'{tuple(labels.shape)}')
    sym = (affinity + affinity.transpose(1, 2)).float().cpu().numpy() / 2
    labels = labels.cpu().numpy()
    rows, cols = np.triu_indices(labels.shape[1], k=1)
    all_auc, thing_auc = [], []
    for a, y in zip(sym, labels):
        keep = (y[rows] != ignore_index) & (y[cols] != ignore_index)
        r, c = rows[keep], cols[keep]
        scores, same = a[r, c], y[r] == y[c]
        all_auc.append(_auc(scores, same))
        thing = (y[r] >= NUM_STUFF) | (y[c] >= NUM_STUFF)
        thing_auc.append(_auc(scores[thing], same[thing]))
    def mean(values):        # nan when no image has both kinds of pairs (e.g. no thing in a tiny world)
        values = [v for v in values if v == v]
        return float(np.mean(values)) if values else float('nan')
    return dict(affinity_auc=mean(all_auc), affinity_thing_auc=mean(thing_auc))
