"""Checkpoint reading, in one place.

torch >= 2.6 loads with ``weights_only=True`` by default, which rejects mmengine checkpoints: they pickle
the message hub, the config and numpy arrays next to the weights. Importing ``declip_mm`` re-registers
mmengine's loader for local paths (``CheckpointLoader`` scheme ``''``) so that ``Runner.load_checkpoint``,
``--resume`` and ``load_from`` read them with ``weights_only=False``, as mmengine did before torch 2.6.
Only load checkpoints you trust: unpickling can run code.

Plain weight files (open_clip / EVA-CLIP / DINOv2 state dicts, ``.safetensors``) go through
:func:`load_weights_file`, which keeps ``weights_only=True``.
"""
import os.path as osp

import torch
from mmengine.runner.checkpoint import CheckpointLoader


def load_trusted_checkpoint(filename, map_location='cpu'):
    """Read a local mmengine/torch checkpoint that may hold pickled Python objects."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    return torch.load(filename, map_location=map_location, weights_only=False)


CheckpointLoader.register_scheme(prefixes='', loader=load_trusted_checkpoint, force=True)


def load_weights_file(filename, map_location='cpu'):
    """Read a file of tensors (``.pt``/``.pth``/``.bin`` state dict or ``.safetensors``) safely.

    Returns the loaded object (usually a dict). Raises ``FileNotFoundError`` naming the file, and a
    ``RuntimeError`` that names the file when it holds pickled objects other than tensors.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'weights file not found: {filename}')
    if filename.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(filename, device=str(map_location))
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends
        raise RuntimeError(
            f'{filename} holds pickled Python objects besides tensors, so it was not loaded with '
            f'weights_only=True. If you trust the file, load it with '
            f'declip_mm.utils.load_trusted_checkpoint and pass the state dict instead. ({err})') from err
