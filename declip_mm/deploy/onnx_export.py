"""Export a DeCLIP model to ONNX (``declip-mm export --onnx DIR``, docs/inference.md "Export and deployment").

The folder holds:

==========================  ==========================================================================================
``image_encoder.onnx``      input ``image`` (B, 3, H, W) float32, the photo normalised with ``mean`` / ``std`` of the
                            JSON (0-255 scale), H and W multiples of the patch (any size: dynamic axes) -> outputs
                            ``dense`` (B, D, H/p, W/p) L2-normalised per token, ``dense_raw`` the same un-normalised
                            and, with a baked vocabulary, ``query_cosines`` (B, S, H/p, W/p): the cosine of every
                            token with each of the vocabulary's S text queries
``text_encoder.onnx``       (unless image-only) input ``tokens`` (N, context_length) int64 from open_clip's
                            tokenizer of ``model_name`` -> output ``embeddings`` (N, D), L2-normalised
``declip_onnx.json``        what a runtime needs: the model, the last block's ``mode`` and ``attn_scale`` (fixed in the
                            graph), ``patch_size``, ``mean`` / ``std``, the text tokenizer, the files and their
                            inputs / outputs, whether the towers had weights, the vocabulary
``vocabulary.json`` / .npy  with ``vocabulary=``: the class names (``;``-separated synonyms), the S queries, each
                            query's class, the prompt templates, and the (S, D) query embeddings baked into the
                            image graph
==========================  ==========================================================================================

torch's exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript) traces the same modules the PyTorch path runs,
in float32 on the CPU. An operator it cannot convert is reported by name (:class:`OnnxExportError`).
"""
import json
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import CLIP_MEAN_255_ROUNDED, CLIP_STD_255_ROUNDED
from ..models.text.text_encoder import split_synonyms

EXPORT_FORMAT = 'declip_mm.onnx/1'
MANIFEST = 'declip_onnx.json'
IMAGE_FILE, TEXT_FILE = 'image_encoder.onnx', 'text_encoder.onnx'
VOCABULARY_FILE, VOCABULARY_EMBEDDINGS = 'vocabulary.json', 'vocabulary.npy'
DEFAULT_OPSET = 18


class OnnxExportError(RuntimeError):
    """A model that torch's ONNX exporter cannot convert (the message names the operator) or a bad export folder."""


class DenseImageGraph(torch.nn.Module):
    """What ``image_encoder.onnx`` computes: normalised image (B, 3, H, W) -> (dense, dense_raw[, query_cosines]).

    Args:
        backbone (DeCLIPViT): the image tower, run in its own mode and attention scale.
        queries (torch.Tensor, optional): (S, D) L2-normalised text-query embeddings to bake in. Defaults to None.
    """

    def __init__(self, backbone, queries: Optional[torch.Tensor] = None):
        super().__init__()
        self.backbone = backbone
        if queries is not None:
            self.register_buffer('queries', queries.float())
        else:
            self.queries = None

    def forward(self, image: torch.Tensor):
        raw = self.backbone.extract_dense(image, normalize=False)
        dense = F.normalize(raw, dim=1)
        if self.queries is None:
            return dense, raw
        return dense, raw, torch.einsum('bdhw,sd->bshw', dense, self.queries)


class TextGraph(torch.nn.Module):
    """What ``text_encoder.onnx`` computes: token ids (N, L) -> L2-normalised embeddings (N, D)."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)


def unconvertible_operator(err: BaseException) -> Optional[str]:
    """The operator named by torch's exporter in ``err`` (or its causes) as having no ONNX conversion, or None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        found = re.search(r"OpOverload\(op='([^']+)', overload='([^']+)'\)", str(err))
        if found:
            return f'{found.group(1)}.{found.group(2)}'
        found = re.search(r'Unsupported (?:ONNX )?(?:operator|FX node)[^\n]*?([\w.:]+::?[\w.]+)', str(err))
        if found:
            return found.group(1)
        err = err.__cause__ or err.__context__
    return None


def _export(module: torch.nn.Module, example: tuple, path: Path, input_names, output_names, dynamic_shapes,
            opset: int, what: str) -> None:
    """torch.onnx.export with the dynamo exporter; any failure becomes an OnnxExportError naming the operator."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            program = torch.onnx.export(module, example, dynamo=True, input_names=list(input_names),
                                        output_names=list(output_names), dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, external_data=False, verbose=False)
            program.save(str(path))
    except Exception as err:                                        # the exporter raises many kinds
        op = unconvertible_operator(err)
        cause = f"the operator '{op}' has no ONNX conversion in torch.onnx" if op else \
            f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
        raise OnnxExportError(f'cannot export the {what} to ONNX: {cause}') from err


def export_image_encoder(backbone, path: Path, queries: Optional[torch.Tensor] = None,
                         opset: int = DEFAULT_OPSET) -> None:
    """``image_encoder.onnx`` of :class:`DenseImageGraph` with dynamic batch, height and width (multiples of the
    patch). The example input is 2 images of 7 x 5 patches (size-1 axes would be fixed by the tracer)."""
    p = backbone.patch_size
    graph = DenseImageGraph(backbone, queries).eval()
    example = torch.zeros(2, 3, 7 * p, 5 * p)
    dims = dict(batch=torch.export.Dim('batch', min=1), rows=torch.export.Dim('rows', min=1),
                cols=torch.export.Dim('cols', min=1))
    outputs = ('dense', 'dense_raw') + (('query_cosines',) if queries is not None else ())
    _export(graph, (example,), path, ['image'], outputs,
            {'image': {0: dims['batch'], 2: p * dims['rows'], 3: p * dims['cols']}}, opset, 'image encoder')


def export_text_encoder(clip, tokenizer, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """``text_encoder.onnx`` of :class:`TextGraph` with a dynamic number of prompts."""
    example = tokenizer(['a photo of a cat.', 'a photo of a dog.'])
    _export(TextGraph(clip).eval(), (example,), path, ['tokens'], ['embeddings'],
            {'tokens': {0: torch.export.Dim('prompts', min=1)}}, opset, 'text encoder')


def export_onnx(backbone, text_encoder=None, out_dir='declip_onnx', vocabulary: Optional[Sequence[str]] = None,
                opset: int = DEFAULT_OPSET, random_weights: bool = False, sources: Optional[dict] = None) -> dict:
    """Write an export folder (module doc) for a DeCLIPViT and an OpenCLIPTextEncoder of the same open_clip model.

    Args:
        backbone (DeCLIPViT): the image tower (its mode and attention scale are fixed in the graph).
        text_encoder (OpenCLIPTextEncoder, optional): the text tower and its prompt templates; None = an image-only
            export (dense features; no vocabulary). Defaults to None.
        out_dir (str | Path): the folder (created). Defaults to 'declip_onnx'.
        vocabulary (Sequence[str], optional): class names (synonyms separated by ';') whose query embeddings are
            baked into the image graph. Defaults to None.
        opset (int): ONNX opset. Defaults to 18.
        random_weights (bool): whether the towers were built without weights (recorded). Defaults to False.
        sources (dict, optional): where the weights came from (recorded as given). Defaults to None.
    Returns:
        the manifest written to ``declip_onnx.json``.
    """
    if text_encoder is None and vocabulary is not None:
        raise ValueError('a vocabulary is baked with the text tower: give text_encoder')
    if text_encoder is not None and text_encoder.model_name != backbone.model_name:
        raise ValueError(f"text encoder '{text_encoder.model_name}' and backbone '{backbone.model_name}' must be the "
                         'same open_clip model')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = backbone.float().eval().cpu()
    text_encoder = text_encoder.float().eval().cpu() if text_encoder is not None else None
    queries, vocab_entry = None, None
    if vocabulary is not None:
        with torch.no_grad():
            classes = text_encoder(list(vocabulary))
        queries = classes.embeddings.float()
        names = [q for name in vocabulary for q in split_synonyms(name)] if len(queries) != len(vocabulary) else \
            list(vocabulary)                                      # 'mean': one query per class
        np.save(out / VOCABULARY_EMBEDDINGS, queries.numpy(), allow_pickle=False)
        (out / VOCABULARY_FILE).write_text(json.dumps(dict(
            classes=list(vocabulary), queries=names,
            class_index=classes.class_index.tolist(), templates=list(text_encoder.templates),
            synonym_reduce=text_encoder.synonym_reduce, embeddings=VOCABULARY_EMBEDDINGS), indent=1))
        vocab_entry = dict(file=VOCABULARY_FILE, num_classes=len(vocabulary), num_queries=len(queries))
    with torch.no_grad():
        export_image_encoder(backbone, out / IMAGE_FILE, queries, opset)
        if text_encoder is not None:
            export_text_encoder(text_encoder.clip, text_encoder.tokenizer, out / TEXT_FILE, opset)
    manifest = dict(
        format=EXPORT_FORMAT, model_name=backbone.model_name, family=backbone.family, mode=backbone.mode,
        attn_scale=backbone.attn_scale, patch_size=backbone.patch_size, embed_dim=backbone.embed_dim,
        width=backbone.width, num_heads=backbone.num_heads, mean=list(CLIP_MEAN_255_ROUNDED),
        std=list(CLIP_STD_255_ROUNDED), pixel_scale=255,
        image_encoder=dict(file=IMAGE_FILE, inputs=['image'],
                           outputs=['dense', 'dense_raw'] + (['query_cosines'] if queries is not None else [])),
        text_encoder=None if text_encoder is None else dict(
            file=TEXT_FILE, inputs=['tokens'], outputs=['embeddings'], tokenizer=backbone.model_name,
            context_length=int(text_encoder.tokenizer(['a']).shape[-1]), templates=list(text_encoder.templates)),
        vocabulary=vocab_entry, random_weights=bool(random_weights), sources=dict(sources or {}), opset=opset,
        torch=torch.__version__)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest
