"""Why a context teacher helps or hurts, measured on a distilled backbone (docs/proof.md, "The oracle finding").

* :func:`decoupled_attention`: the decoupled last block's attention among patch tokens, as the backbone computes it
  in its mode ('csa': the mean of softmax(s q q^T) and softmax(s k k^T); 'qq' / 'kk' one of them), heads averaged,
  with the backbone's scale s; the CLS key left out. (B, P, P), rows sum to 1.
* :func:`segment_attention_mass`: the share of a query's attention on patches of its own ground-truth segment,
  averaged over thing queries and over stuff queries. Context distillation is meant to raise it.
* :func:`thing_box_confusion`: each thing box pooled from the dense map (RoIAlign 1 x 1, as ``RegionClassifier``)
  and classified among all classes and among the thing classes only; the share of thing boxes whose best class is
  a stuff class. Region top-1 counts those as errors.
"""
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .world import NUM_STUFF


@torch.no_grad()
def decoupled_attention(backbone, images: torch.Tensor) -> torch.Tensor:
    """CLIP-normalised images (B, 3, H, W) -> (B, P, P) patch-to-patch attention of the decoupled block."""
    q, k = backbone.forward_features(images, out_indices=()).context if backbone.mode == 'csa' else \
        (backbone.forward_features(images, out_indices=()).context,) * 2
    heads = backbone.num_heads
    scale = backbone.attn_scale

    def attend(t):
        b, p, c = t.shape
        t = t.view(b, p, heads, c // heads).transpose(1, 2)
        return torch.softmax(scale * t @ t.transpose(-1, -2), dim=-1).mean(1)
    if backbone.mode == 'qq':
        return attend(q)
    if backbone.mode == 'kk':
        return attend(k)
    return (attend(q) + attend(k)) / 2


def segment_attention_mass(attention: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> Dict:
    """attention (B, P, P) rows summing to 1, labels (B, P) -> mean own-segment mass of thing and stuff queries."""
    same = (labels[:, :, None] == labels[:, None, :]).float()
    mass = (attention * same).sum(-1)
    thing, stuff = labels >= NUM_STUFF, labels < NUM_STUFF
    thing, stuff = thing & (labels != ignore_index), stuff & (labels != ignore_index)
    return dict(thing_own_segment=float(mass[thing].mean()), stuff_own_segment=float(mass[stuff].mean()))


@torch.no_grad()
def thing_box_confusion(dense: torch.Tensor, text: torch.Tensor, boxes: Sequence, box_labels: Sequence,
                        patch: int) -> Dict:
    """dense (B, D, h, w) raw maps, text (K, D) class embeddings (stuff first), per image its thing boxes (xyxy px)
    and labels -> mean per-class top-1 among all classes and among things, and the share predicted as stuff."""
    from mmcv.ops import roi_align
    text = F.normalize(text.float(), dim=-1)
    truth, best_all, best_thing = [], [], []
    for i, (image_boxes, labels) in enumerate(zip(boxes, box_labels)):
        if not len(image_boxes):
            continue
        b = torch.as_tensor(image_boxes, dtype=torch.float32).view(-1, 4)
        rois = torch.cat([b.new_full((len(b), 1), 0), b], 1)
        pooled = F.normalize(roi_align(dense[i:i + 1].float(), rois, (1, 1), 1 / patch, 0, 'avg', True).flatten(1), dim=-1)
        scores = pooled @ text.t()
        truth += list(labels)
        best_all += scores.argmax(1).tolist()
        best_thing += (scores[:, NUM_STUFF:].argmax(1) + NUM_STUFF).tolist()
    truth, best_all, best_thing = map(np.asarray, (truth, best_all, best_thing))

    def per_class(pred):
        return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]) * 100)
    return dict(top1_all=per_class(best_all), top1_things_only=per_class(best_thing),
                predicted_stuff=float(np.mean(best_all < NUM_STUFF) * 100), boxes=int(len(truth)))
