"""Which runtime the user APIs run their towers on: ``'pytorch'`` (the modules themselves) or ``'onnxruntime'``
(an ONNX export folder, ``declip_mm/deploy/``). The protocols around the towers (sizes, windows, softmax,
thresholds, pooling) are the same PyTorch code either way."""
from typing import Optional, Tuple

from ..constants import TINY_MODELS
from .random_weights import warn_if_random

BACKENDS = ('pytorch', 'onnxruntime')


def check_backend(backend: str, device, precision: str) -> None:
    """A clear error for a backend name, or an onnxruntime run on another device or precision than it has."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
    if backend == 'onnxruntime':
        import torch
        if torch.device(device).type != 'cpu':
            raise ValueError(f"the onnxruntime backend runs on the CPU (its CPU provider), not on '{device}'")
        if precision not in ('auto', 'fp32'):
            raise ValueError(f"the onnxruntime backend runs the exported float32 graphs, not '{precision}': "
                             'use --precision fp32 (or auto)')


def check_export(manifest: dict, folder, model_name: Optional[str], mode: Optional[str]) -> None:
    """``model_name`` and ``mode``, when given, must be the export's (both are fixed in its graphs); the default
    model name (the first tiny preset) counts as not given."""
    if model_name not in (None, TINY_MODELS[0], manifest['model_name']):
        raise ValueError(f"{folder} is an export of '{manifest['model_name']}', not '{model_name}'")
    if mode is not None and mode != manifest['mode']:
        raise ValueError(f"{folder} was exported in mode '{manifest['mode']}' (fixed in the graph), not '{mode}': "
                         f'export again with --mode {mode}')


def onnx_towers(folder, model_name: Optional[str], mode: Optional[str], attn_scale=None, text: bool = True,
                templates=None) -> Tuple[object, Optional[object], dict]:
    """(image encoder, text encoder or None, manifest) of an export folder, checked against the caller's
    ``model_name``, ``mode`` and ``attn_scale`` (:func:`check_export`; a scale is fixed in the graph, so none may
    be given); warns when the export was made from random towers."""
    from ..deploy.onnx_runtime import OnnxImageEncoder, OnnxTextEncoder, read_manifest
    if folder is None:
        raise ValueError('the onnxruntime backend needs the export folder as the backbone (declip-mm export --onnx '
                         'DIR writes one)')
    manifest = read_manifest(folder)
    check_export(manifest, folder, model_name, mode)
    if attn_scale is not None:
        raise ValueError(f"attn_scale: the export's scale ({manifest['attn_scale']:g}) is fixed in its graph")
    warn_if_random(manifest['model_name'], backbone=None if manifest['random_weights'] else folder)
    image = OnnxImageEncoder(folder, manifest)
    return image, (OnnxTextEncoder(folder, templates=templates, manifest=manifest) if text else None), manifest
