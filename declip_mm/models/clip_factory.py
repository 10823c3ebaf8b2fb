"""Build open_clip models by name and load their weights offline, reporting every key mismatch.

``pretrained`` may be ``None`` (random init), a local file or folder (open_clip's Hugging Face layout:
``open_clip_config.json`` + ``open_clip_model.safetensors``), ``'hf-hub:org/name'`` (such a folder in the local
Hugging Face cache), or an open_clip pretrained tag (``'openai'``, ``'merged2b_s8b_b131k'``, ...).

``hf-hub:org/name`` is looked up only in the local cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``; ``cache_dir`` wins), at the revision ``refs/main`` points to, with huggingface_hub's
``try_to_load_from_cache``, which never makes a network call (``HF_HUB_OFFLINE=1`` semantics); when the files are not
there one line names the repository and the folder searched.

A tag is resolved without network access, in this order:

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
from .backbones.checkpoints import HF_CONFIG_FILE
from ..constants import FOLDER_WEIGHTS_FILES

_HF_DEFAULT_FILES = FOLDER_WEIGHTS_FILES[:2]        # open_clip_model.safetensors, open_clip_pytorch_model.bin
HF_HUB_PREFIX = 'hf-hub:'                           # open_clip's name for a Hub repository (open_clip.factory)


def weights_dir() -> Path:
    return Path(os.environ.get('DECLIP_WEIGHTS', Path.home() / '.cache' / 'declip-mm' / 'weights'))


def hf_hub_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """The Hugging Face hub cache folder as huggingface_hub computes it, read from the environment now (not at
    import): ``cache_dir``, else ``$HF_HUB_CACHE`` (or the legacy ``$HUGGINGFACE_HUB_CACHE``), else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    home = os.environ.get('HF_HOME') or os.path.join(os.environ.get('XDG_CACHE_HOME') or
                                                     os.path.join(os.path.expanduser('~'), '.cache'), 'huggingface')
    hub = os.environ.get('HF_HUB_CACHE') or os.environ.get('HUGGINGFACE_HUB_CACHE') or os.path.join(home, 'hub')
    return Path(os.path.expandvars(os.path.expanduser(hub)))


def _from_hf_cache(repo: str, filename: str, cache: Path) -> Optional[str]:
    """The cached file's path (the snapshot's, links unresolved), or None; never a network call."""
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache))
    return found if isinstance(found, str) else None


def resolve_hf_hub(name: str, cache_dir: Optional[str] = None) -> str:
    """``'hf-hub:org/name'`` -> the weights file of that repository's open_clip folder in the local Hugging Face
    cache (its snapshot at ``refs/main``: ``open_clip_config.json`` and ``open_clip_model.safetensors`` or
    ``open_clip_pytorch_model.bin``). Offline only: ``FileNotFoundError``, one line naming the repository and the
    cache folder searched, when they are not there."""
    repo = name[len(HF_HUB_PREFIX):].strip('/')
    if repo.count('/') != 1 or not all(repo.split('/')):
        raise ValueError(f"'{name}': expected hf-hub:ORG/NAME (a Hugging Face Hub repository)")
    cache = hf_hub_cache_dir(cache_dir)
    config = _from_hf_cache(repo, HF_CONFIG_FILE, cache)
    weights = next((w for w in map(lambda f: _from_hf_cache(repo, f, cache), _HF_DEFAULT_FILES) if w), None)
    if config and weights and Path(config).parent == Path(weights).parent:
        return weights
    folder = cache / f"models--{repo.replace('/', '--')}"
    have = 'has no snapshot at refs/main' if config is None and weights is None else \
        f"lacks {HF_CONFIG_FILE if config is None else ' and '.join(_HF_DEFAULT_FILES)}"
    raise FileNotFoundError(
        f"{name}: repository '{repo}' is not in the local Hugging Face cache ({folder} {have}; cache from "
        f"HF_HUB_CACHE / HF_HOME); nothing is downloaded: run `huggingface-cli download {repo}` where there is network "
        "and copy the cache here, or pass the folder itself")


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
    if str(pretrained).startswith(HF_HUB_PREFIX):
        return resolve_hf_hub(str(pretrained), cache_dir)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    if path.is_dir():
        for name in FOLDER_WEIGHTS_FILES:
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
        for name in files:
            found = _from_hf_cache(repo, name, hf_hub_cache_dir(cache_dir))
            if found:
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
    path = resolve_pretrained(model_name, pretrained, cache_dir)
    if path is not None and weights is None:
        weights = read_checkpoint(path)
    quick_gelu = False
    if getattr(weights, 'config', None):                      # an open_clip Hugging Face folder says it itself
        quick_gelu = bool(weights.config['model_cfg'].get('quick_gelu', False))
    elif pretrained and not Path(pretrained).expanduser().exists():
        quick_gelu = bool(open_clip.get_pretrained_cfg(model_name, pretrained).get('quick_gelu', False))
    model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu,
                                   pretrained_text=False, pretrained_image=False)
    report = None
    if path is not None:
        report = load_clip_state_dict(model, weights, source=path, strict=strict)
    model.eval()
    return model, report
