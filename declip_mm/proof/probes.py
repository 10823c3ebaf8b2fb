"""Measurements of the pretrained towers on a world's scenes (labels are used here, and only here).

* :func:`presence_retrieval` (CLIP, image level): per scene, the k thing classes it shows are the targets; the
  scene's image embedding ranks the 12 thing classes by cosine with their open_clip prompt embeddings
  (``OpenCLIPTextEncoder``, 'imagenet80' templates by default: the segmentation protocol's); precision@k is the
  share of the top k that are present (chance: k / 12). The same for the 4 stuff classes, and top-1 accuracy
  (is the best thing class present).
* :func:`patch_knn_accuracy` (any dense tower, patch level): each patch takes the label at its centre; a
  held-out patch is classified by the majority of its ``k`` nearest train patches (cosine); reported as patch
  accuracy, mean per-class accuracy (stuff dominates the patches) and accuracy on thing patches.
"""
from typing import Callable, Dict, Optional

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
    from ..models.clip_factory import create_clip
    from ..models.text.text_encoder import OpenCLIPTextEncoder
    from .pretrain import CLIP_MEAN, CLIP_STD
    data = load_split(world_root, split, limit)
    text = OpenCLIPTextEncoder(model_name=model_name, pretrained=str(checkpoint), templates=templates,
                               synonym_reduce='mean', embedding_cache=False)
    things, stuff = text(THING_CLASSES).embeddings, text(STUFF_CLASSES).embeddings
    clip, _ = create_clip(model_name, str(checkpoint))
    size = clip.visual.image_size
    size = size if isinstance(size, int) else size[0]
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    features = []
    for start in range(0, len(data.images), batch_size):
        x = F.interpolate(data.images[start:start + batch_size].float(), size=(size, size), mode='bilinear',
                          antialias=True, align_corners=False)
        features.append(F.normalize(clip.encode_image((x / 255 - mean) / std), dim=-1))
    features = torch.cat(features)
    labels = data.labels.flatten(1)
    present_things = torch.stack([(labels == NUM_STUFF + c).any(1) for c in range(len(THING_CLASSES))], 1)
    present_stuff = torch.stack([(labels == s).any(1) for s in range(NUM_STUFF)], 1)
    return dict(templates=templates, things=_precision_at_k(features @ things.t(), present_things),
                stuff=_precision_at_k(features @ stuff.t(), present_stuff))


def patch_labels(labels: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, H, W) labels -> (N, grid * grid): the label at each patch centre."""
    n, h, w = labels.shape
    ys = ((torch.arange(grid) + 0.5) * h / grid).long()
    xs = ((torch.arange(grid) + 0.5) * w / grid).long()
    return labels[:, ys][:, :, xs].reshape(n, -1).long()


@torch.no_grad()
def patch_knn_accuracy(features_of: Callable[[torch.Tensor], torch.Tensor], world_root, grid: int,
                       train_scenes: int = 200, val_scenes: int = 100, k: int = 20, batch_size: int = 32) -> Dict:
    """k-NN patch classification on held-out scenes.

    ``features_of``: uint8 images (B, 3, H, W) -> patch features (B, grid * grid, C) (the tower's own
    resizing and normalisation inside). Memory bank: the patches of ``train_scenes`` train scenes.
    """
    def embed(split, limit):
        data = load_split(world_root, split, limit)
        feats = torch.cat([F.normalize(features_of(data.images[i:i + batch_size]).float(), dim=-1)
                           for i in range(0, len(data.images), batch_size)])
        return feats.flatten(0, 1), patch_labels(data.labels, grid).flatten()

    bank, bank_labels = embed('train', train_scenes)
    queries, truth = embed('val', val_scenes)
    num_classes = NUM_STUFF + len(THING_CLASSES)
    predicted = []
    for start in range(0, len(queries), 1024):
        sims, nearest = (queries[start:start + 1024] @ bank.t()).topk(k, dim=1)
        votes = F.one_hot(bank_labels[nearest], num_classes).float().sum(1)
        predicted.append(votes.argmax(1))
    predicted = torch.cat(predicted)
    per_class = [float((predicted[truth == c] == c).float().mean()) for c in range(num_classes) if (truth == c).any()]
    return dict(patch_accuracy=float((predicted == truth).float().mean()), mean_class_accuracy=sum(per_class) / len(per_class),
                thing_patch_accuracy=float((predicted[truth >= NUM_STUFF] == truth[truth >= NUM_STUFF]).float().mean()),
                k=k, train_scenes=train_scenes, val_scenes=val_scenes, grid=grid)
