"""Class-embedding files for heads that classify against fixed text embeddings (F-ViT).

Our format (``tools/dump_class_embeddings.py``): ``{'names': [K + 1 names, 'background' last], 'embeddings':
(K + 1, D) float32, L2-normalised, 'model_name', 'pretrained', 'templates'}``. CLIPSelf's files
(``F-ViT/datasets/embeddings/*.pt``: a dict name -> (D,) tensor, 'background' among the keys) load too.
Loading checks the names against the dataset's classes: every class and 'background' must be there, and a
file in our format must list them in the dataset's label order.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F

BACKGROUND = 'background'


def save_class_embeddings(path: str, names: Sequence[str], embeddings: torch.Tensor, **meta) -> None:
    names = list(names)
    if names[-1:] != [BACKGROUND]:
        raise ValueError(f"the last class embedding must be '{BACKGROUND}', got {names[-1:]}")
    if embeddings.shape[0] != len(names):
        raise ValueError(f'{embeddings.shape[0]} embeddings for {len(names)} names')
    torch.save(dict(names=names, embeddings=F.normalize(embeddings.float(), dim=-1).cpu(), **meta), path)


def load_class_embeddings(path: str, class_names: Sequence[str]) -> torch.Tensor:
    """(K + 1, D) L2-normalised embeddings of ``class_names`` then 'background', from ``path``."""
    data = torch.load(path, map_location='cpu', weights_only=True)
    wanted: List[str] = list(class_names) + [BACKGROUND]
    if isinstance(data, dict) and 'names' in data and 'embeddings' in data:
        names = list(data['names'])
        if names != wanted:
            diff = next((i for i, (a, b) in enumerate(zip(names, wanted)) if a != b), min(len(names), len(wanted)))
            raise ValueError(f'{path}: class names differ from the dataset\'s (+ background) at position {diff}: '
                             f'file {names[diff:diff + 3]} vs dataset {wanted[diff:diff + 3]} '
                             f'({len(names)} vs {len(wanted)} names); rebuild it with tools/dump_class_embeddings.py')
        embeddings = data['embeddings']
    elif isinstance(data, dict) and all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in data.values()):
        missing = [n for n in wanted if n not in data]
        if missing:
            raise KeyError(f'{path} has no embedding for {len(missing)} classes: {missing[:10]}')
        embeddings = torch.stack([data[n] for n in wanted])
    else:
        raise ValueError(f"{path} is not a class-embedding file (a dict with 'names' and 'embeddings', or "
                         'name -> vector)')
    return F.normalize(embeddings.float(), dim=-1)
