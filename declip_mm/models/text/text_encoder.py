"""Class-name text embeddings from an open_clip text tower: prompt templates, synonyms, batching, disk cache.

A class name may list synonyms separated by ``;`` (``'sofa; couch'``). Each synonym is embedded as the
re-normalised mean of its L2-normalised prompt embeddings (80 ImageNet templates by default). With
``synonym_reduce='max'`` every synonym stays its own query (the training-free segmentor takes, per class, the
highest probability of its queries after a softmax over all of them; ``ClassEmbeddings.logits`` the highest
cosine); ``'mean'`` gives one averaged, re-normalised embedding per class.

Embeddings are cached on disk per (model, weights, templates) in ``$DECLIP_CACHE/text_embeddings``;
names already in the cache are never re-encoded.
"""
import hashlib
import json
import os
import time
from pathlib import Path
from typing import List, Optional, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule

from ...constants import SYNONYM_SEPARATOR
from ...registry import MODELS
from ..clip_factory import create_clip, resolve_pretrained
from .prompts import PROMPT_BUILDERS, TEMPLATE_SETS, template_formatter


def split_synonyms(name: str) -> List[str]:
    synonyms = [s.strip() for s in name.split(SYNONYM_SEPARATOR) if s.strip()]
    if not synonyms:
        raise ValueError(f'empty class name {name!r}')
    return synonyms


class ClassEmbeddings:
    """Text embeddings of K classes: ``embeddings`` (S, D), one row per synonym (L2-normalised), and
    ``class_index`` (S,), the class of each row. ``logits`` reduces the synonyms of a class by max."""

    def __init__(self, embeddings: torch.Tensor, class_index: torch.Tensor, names: Sequence[str]):
        self.embeddings = embeddings
        self.class_index = class_index
        self.names = list(names)
        self.num_classes = len(self.names)

    def to(self, device) -> 'ClassEmbeddings':
        return ClassEmbeddings(self.embeddings.to(device), self.class_index.to(device), self.names)

    def logits(self, features: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """features (..., D), L2-normalised -> scale * cosine (..., K), max over each class's synonyms."""
        sims = features @ self.embeddings.to(features.dtype).t()                       # (..., S)
        if sims.shape[-1] == self.num_classes:
            return scale * sims
        index = self.class_index.to(sims.device).expand_as(sims)
        out = sims.new_full((*sims.shape[:-1], self.num_classes), float('-inf'))
        return scale * out.scatter_reduce(-1, index, sims, reduce='amax')

    def query_cosines(self, dense: torch.Tensor) -> torch.Tensor:
        """dense (B, D, H, W), L2-normalised over D -> (B, S, H, W): the cosine with every query (synonym)."""
        return torch.einsum('bdhw,sd->bshw', dense, self.embeddings.to(dense.dtype))

    def class_probabilities(self, query_logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Query logits with S entries along ``dim`` -> class probabilities with K entries along ``dim``: the
        softmax over ALL queries, then per class the highest probability among its queries (the authors'
        DeCLIPSegmentation / ProxyCLIP post-processing)."""
        probs = query_logits.softmax(dim, dtype=torch.promote_types(query_logits.dtype, torch.float32))
        probs = probs.movedim(dim, -1)
        index = self.class_index.to(probs.device).expand_as(probs)
        out = probs.new_zeros((*probs.shape[:-1], self.num_classes))
        return out.scatter_reduce(-1, index, probs, reduce='amax', include_self=False).movedim(-1, dim)

    def chunked_class_probabilities(self) -> 'ChunkedClassProbabilities':
        """:meth:`class_probabilities` (dim 0) over query logits given a chunk of queries at a time."""
        return ChunkedClassProbabilities(self)

    def logits_map(self, dense: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """dense (B, D, H, W), L2-normalised over D -> (B, K, H, W)."""
        return self.logits(dense.permute(0, 2, 3, 1), scale).permute(0, 3, 1, 2)


class ChunkedClassProbabilities:
    """:meth:`ClassEmbeddings.class_probabilities` along dim 0 with the S query logits given in chunks:
    ``add(logits, queries)`` with ``logits`` (c, ...) of the queries ``queries`` (a slice of the S; each query
    once, any order), then ``result()`` -> (K, ...) class probabilities.

    One chunk of all S queries is ``class_probabilities`` itself (the same numbers). Over several chunks it keeps
    each class's highest query logit (K, ...) and, per position, the running maximum and sum of the softmax over all
    queries (online softmax: the sum is rescaled when the maximum grows), never the (S, ...) logits. The highest
    probability among a class's queries is the probability of its highest logit (exp is monotonic), so ``result()``
    is exp(class logit - maximum) / sum: ``class_probabilities`` up to float rounding (1e-6)."""

    def __init__(self, classes: ClassEmbeddings):
        self.classes, self.class_index, self.num_classes = classes, classes.class_index, classes.num_classes
        self.best = self.max = self.sum = self.probs = None
        self.added = 0

    def add(self, logits: torch.Tensor, queries: slice) -> None:
        index = self.class_index[queries].to(logits.device)
        if len(index) != len(logits):
            raise ValueError(f'{len(logits)} query logits for the {len(index)} queries {queries}')
        if self.added == 0 and len(logits) == len(self.class_index):
            self.probs, self.added = self.classes.class_probabilities(logits, dim=0), len(logits)
            return
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        top = logits.amax(0)
        if self.best is None:
            self.best = logits.new_full((self.num_classes, *logits.shape[1:]), float('-inf'))
            self.max, self.sum = top, (logits - top).exp_().sum(0)
        else:
            new_max = torch.maximum(self.max, top)
            self.sum = self.sum.mul_((self.max - new_max).exp_()).add_((logits - new_max).exp_().sum(0))
            self.max = new_max
        index = index.view(-1, *[1] * (logits.dim() - 1)).expand_as(logits)
        self.best.scatter_reduce_(0, index, logits, 'amax')
        self.added += len(logits)

    def result(self) -> torch.Tensor:
        """(K, ...) class probabilities; the running buffers are reused (call once, after all S queries)."""
        if self.added != len(self.class_index):
            raise ValueError(f'{self.added} of the {len(self.class_index)} queries were added')
        if self.probs is not None:
            return self.probs
        return self.best.sub_(self.max).exp_().div_(self.sum)


@MODELS.register_module()
class OpenCLIPTextEncoder(BaseModule):
    """Frozen open_clip text tower that turns class names into :class:`ClassEmbeddings`.

    Args:
        model_name / pretrained / cache_dir / strict: as for :class:`DeCLIPViT` (same open_clip model).
        templates: 'imagenet80' (the 80 ImageNet prompts), 'vild' (the 63 ViLD-style prompts with their article
            and 'This is ' rules: region classification, F-ViT), 'simple', 'none', or a list of strings with ``{}``.
        synonym_reduce: 'max' (over synonym scores) or 'mean' (averaged synonym embeddings).
        batch_size: prompts per text-tower call; the names are encoded ``batch_size`` at a time (all their
            prompts), so a large vocabulary holds one chunk's prompt embeddings, and the cache is saved every minute.
        embedding_cache: folder of the on-disk cache; None = ``$DECLIP_CACHE/text_embeddings``, False = off.
    """

    def __init__(self, model_name: str = 'EVA02-B-16', pretrained: Optional[str] = None,
                 templates: Union[str, Sequence[str]] = 'imagenet80', synonym_reduce: str = 'max',
                 batch_size: int = 256, embedding_cache: Union[None, str, bool] = None,
                 cache_dir: Optional[str] = None, strict: bool = True):
        super().__init__()
        self.init_prompts(model_name, templates, synonym_reduce, batch_size)      # bad settings fail before the tower
        clip, _ = create_clip(model_name, pretrained, cache_dir, strict)
        clip.visual = torch.nn.Identity()  # only the text tower is kept
        self.clip = clip.eval().requires_grad_(False)
        self.init_cache(embedding_cache, self._weights_id(resolve_pretrained(model_name, pretrained, cache_dir)))

    def init_prompts(self, model_name: str, templates, synonym_reduce: str, batch_size: int) -> None:
        """Prompt rules and tokenizer: with :meth:`init_cache`, everything but the tower, so another runtime of the
        same tower (``declip_mm/deploy/onnx_runtime.py``) shares them."""
        if isinstance(templates, str):
            if templates not in TEMPLATE_SETS:
                raise ValueError(f"templates must be one of {list(TEMPLATE_SETS)} or a list, got '{templates}'")
            self.prompts_for = PROMPT_BUILDERS[templates]
            self.templates = TEMPLATE_SETS[templates]
            prompt_rule = templates
        else:
            self.templates = tuple(templates)
            for t in self.templates:
                if '{}' not in t:
                    raise ValueError(f'prompt template {t!r} has no {{}} for the class name')
            self.prompts_for = template_formatter(self.templates)
            prompt_rule = 'format'
        if not self.templates:
            raise ValueError('templates is empty: give at least one prompt template')
        if synonym_reduce not in ('max', 'mean'):
            raise ValueError(f"synonym_reduce must be 'max' or 'mean', got '{synonym_reduce}'")
        self.synonym_reduce = synonym_reduce
        self.batch_size = batch_size
        self.model_name = model_name

        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.prompt_rule = prompt_rule

    def init_cache(self, embedding_cache: Union[None, str, bool], weights_id: str) -> None:
        """The embedding cache of these prompts with the tower's weights ``weights_id`` (module doc)."""
        self.weights_id = weights_id
        if embedding_cache is False:
            self.cache_file = None
        else:
            root = Path(embedding_cache) if embedding_cache else Path(os.environ.get(
                'DECLIP_CACHE', Path.home() / '.cache' / 'declip-mm')) / 'text_embeddings'
            key = hashlib.sha256(json.dumps([self.model_name, self.weights_id, self.prompt_rule, self.templates]).encode()
                                 ).hexdigest()
            self.cache_file = root / f'{self.model_name}-{key[:16]}.pt'
        self._memory = {}
        self._cache_read = False
        self.num_encoded_prompts = 0  # how many prompts went through the text tower (cache misses)

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()
        return self

    def _weights_id(self, path: Optional[str]) -> str:
        if path is not None:
            stat = os.stat(path)
            return f'{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}'
        digest = hashlib.sha256()
        for name, tensor in sorted(self.clip.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return 'random:' + digest.hexdigest()

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """(P,) prompts -> (P, D) L2-normalised text embeddings, ``batch_size`` prompts per call (written into one
        preallocated output: a list of small per-batch outputs fragmented the heap, up to +3 GB RSS at 160k prompts)."""
        out = None
        for start in range(0, len(prompts), self.batch_size):
            emb = F.normalize(self.encode_tokens(self.tokenizer(list(prompts[start:start + self.batch_size]))), dim=-1)
            if out is None:
                out = emb.new_empty((len(prompts), emb.shape[-1]))
            out[start:start + len(emb)] = emb
        self.num_encoded_prompts += len(prompts)
        return out

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (P, L) -> text embeddings (P, D) float32, on the tower's device."""
        return self.clip.encode_text(tokens.to(next(self.clip.parameters()).device)).float()

    def _load_cache(self):
        if self.cache_file is not None and not self._cache_read and self.cache_file.is_file():
            self._memory = {**torch.load(self.cache_file, map_location='cpu', weights_only=True), **self._memory}
        self._cache_read = True

    def _save_cache(self):
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(f'.tmp{os.getpid()}')
        torch.save(self._memory, tmp)
        tmp.replace(self.cache_file)

    def embed_synonyms(self, synonyms: Sequence[str]) -> torch.Tensor:
        """(S,) single names -> (S, D): the re-normalised mean of the names' normalised prompt embeddings; cached."""
        self._load_cache()
        missing = [s for s in dict.fromkeys(synonyms) if s not in self._memory]
        saved = time.monotonic()
        # batch_size names at a time: batch_size x templates prompts, a multiple of batch_size, so the text-tower
        # batches are the ones of encoding all names at once (same embeddings), with one chunk's prompts in memory
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            prompts = [p for s in chunk for p in self.prompts_for(s)]
            emb = self.encode_prompts(prompts).reshape(len(chunk), len(self.templates), -1)
            for s, e in zip(chunk, F.normalize(emb.mean(dim=1), dim=-1)):
                self._memory[s] = e.clone()
            if start + self.batch_size >= len(missing) or time.monotonic() - saved > 60:
                self._save_cache()           # at the end, and every minute of a long vocabulary (resumable)
                saved = time.monotonic()
        return torch.stack([self._memory[s] for s in synonyms])

    def forward(self, class_names: Sequence[str]) -> ClassEmbeddings:
        """Class names (synonyms separated by ';') -> :class:`ClassEmbeddings`."""
        groups = [split_synonyms(name) for name in class_names]
        flat = [s for group in groups for s in group]
        class_index = torch.tensor([k for k, group in enumerate(groups) for _ in group], dtype=torch.long)
        emb = self.embed_synonyms(flat)
        if self.synonym_reduce == 'mean':
            emb = F.normalize(torch.zeros(len(groups), emb.shape[-1]).index_add_(0, class_index, emb), dim=-1)
            class_index = torch.arange(len(groups))
        return ClassEmbeddings(emb, class_index, class_names)
