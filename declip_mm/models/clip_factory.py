"""Build open_clip models by name and load their weights offline, reporting every key mismatch.

``pretrained`` may be ``None`` (random init), a local file or folder, or an open_clip pretrained tag
(``'openai'``, ``'merged2b_s8b_b131k'``, ...). A tag is resolved without network access, in this order:

1. ``<weights_dir>/<model_name>/<tag>/<file>`` with ``weights_dir`` = ``$DECLIP_WEIGHTS`` or
   ``~/.cache/declip-mm/weights``;
2. the Hugging Face hub cache (``$HF_HOME`` / ``cache_dir``), where open_clip itself would have put it.

When the file is in neither place the error names the Hub repository and file to fetch and the
folder to put it in. Nothing is ever downloaded.
"""
import os
from pathlib import Path
from typing import List, Optional

import open_clip

from . import presets  # noqa: F401  (registers the tiny presets with open_clip and timm)
# every checkpoint format is read, recognised, converted and reported there; kept importable from here
from .backbones.checkpoints import LoadReport, load_clip_state_dict, read_checkpoint, unwrap_state_dict  # noqa: F401

_HF_DEFAULT_FILES = ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')


def weights_dir() -> Path:
    return Path(os.environ.get('DECLIP_WEIGHTS', Path.home() / '.cache' / 'declip-mm' / 'weights'))


def _files_for_tag(cfg: dict) -> List[str]:
    hub = cfg.get('hf_hub', '')
    if hub:
        _, name = os.path.split(hub)
        if not name:
            return list(_HF_DEFAULT_FILES)
        return [name[:-4] + '.safetensors', name] if name.endswith('.bin') else [name]
    if cfg.get('url'):
        return [os.path.basename(cfg['url'])]
    return []


def resolve_pretrained(model_name: str, pretrained: Optional[str], cache_dir: Optional[str] = None) -> Optional[str]:
    """Return a local weights path for ``pretrained`` (tag, file or folder), or None for random init."""
    if not pretrained:
        return None
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir():
        for name in _HF_DEFAULT_FILES + ('model.safetensors', 'pytorch_model.bin'):
            if (path / name).is_file():
                return str(path / name)
        raise FileNotFoundError(f'no open_clip weights file ({", ".join(_HF_DEFAULT_FILES)}) in folder {path}')

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if os.sep in pretrained or path.suffix:
            raise FileNotFoundError(f'weights file not found: {pretrained}')
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"'{pretrained}' is neither a file nor an open_clip pretrained tag of {model_name} "
                         f"(known tags: {tags or 'none'})")

    files = _files_for_tag(cfg)
    local = weights_dir() / model_name / pretrained
    for name in files:
        if (local / name).is_file():
            return str(local / name)

    repo = os.path.split(cfg['hf_hub'])[0] if cfg.get('hf_hub') else None
    if repo:
        from huggingface_hub import try_to_load_from_cache
        for name in files:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
    source = f"file {' or '.join(files)} of the Hugging Face Hub repository '{repo}'" if repo \
        else f"file {files[0] if files else '?'} ({cfg.get('url', 'no url known')})"
    raise FileNotFoundError(
        f"weights for open_clip model '{model_name}' tag '{pretrained}' are not on this machine and are never "
        f"downloaded. Fetch the {source}, then put it in {local}/ or pass pretrained='/path/to/file'.")


def create_clip(model_name: str, pretrained: Optional[str] = None, cache_dir: Optional[str] = None,
                strict: bool = True, weights: Optional[dict] = None):
    """Create open_clip model ``model_name`` and load ``pretrained`` offline. Returns (model, report).

    ``weights``: ``pretrained``'s file already read (a :class:`~declip_mm.models.backbones.checkpoints.Checkpoint`,
    or the loaded object), so that a caller that had to look into the file does not read it twice.
    """
    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model '{model_name}'; see open_clip.list_models()")
    quick_gelu = False
    if pretrained and not Path(pretrained).expanduser().exists():
        quick_gelu = bool(open_clip.get_pretrained_cfg(model_name, pretrained).get('quick_gelu', False))
    model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu,
                                   pretrained_text=False, pretrained_image=False)
    path = resolve_pretrained(model_name, pretrained, cache_dir)
    report = None
    if path is not None:
        weights = read_checkpoint(path) if weights is None else weights
        report = load_clip_state_dict(model, weights, source=path, strict=strict)
    model.eval()
    return model, report
