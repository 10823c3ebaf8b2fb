"""Every checkpoint format the package reads, in one place: detect, unwrap, convert, report keys.

timm keeps a model family's ``checkpoint_filter_fn`` beside the model it feeds; this module is that for DeCLIPViT and
the models built on it. A file is read through :func:`read_checkpoint` (the one entry point: it calls
``declip_mm.utils.checkpoint_io.load_checkpoint``, the package's only ``torch.load``, ``weights_only=True`` plus an
allow-list, ``--trust-checkpoint`` to opt out), which returns a :class:`Checkpoint`: the detected format, the state
dict unwrapped from whatever held it, and the DeCLIPViT metadata if any. :func:`load_into` converts it for a built
model and loads it, returning a :class:`LoadReport` (missing / unexpected / ignored keys; ``strict`` raises).

Formats, in detection order (:data:`FORMATS`; docs/backbone.md "Checkpoint formats" has the table):

* ``open_clip_hf``: a folder in open_clip's Hugging Face layout (``open_clip_config.json`` +
  ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``, as ``open_clip.push_to_hf_hub`` / ``save_for_hf``
  write it; a local folder, a Hub snapshot in the local cache, or the weights file inside one): open_clip keys; the config's extra ``declip`` entry
  (written by :func:`save_hf_dir`, ignored by open_clip) restores mode, attn_scale and input_size;
* ``declip_vit``: ours, ``{'state_dict', 'meta': {'declip': {mode, attn_scale, input_size, model_name, ...}}}``;
  DeCLIPViT keys as they are, the metadata restores how the weights are run;
* ``eva_clip``: EVA-CLIP / the authors' DeCLIP ``.pt`` (``visual.pos_embed``; bare or in any wrapper, e.g. their
  training file ``{epoch, name, state_dict, optimizer, scaler}``): timm's EVA key mapping, rotary tables ignored;
* ``open_clip``: a CLIP / open_clip state dict (``visual.*``): open_clip's own keys;
* ``catseg_d2``: the authors' CAT-Seg detectron2 model (``sem_seg_head.predictor.*``): mapped onto our CATSeg;
* ``mmengine``: any other state dict, a whole model's (an mmengine Runner checkpoint, or bare): loaded as it is.

A new format is one :class:`CheckpointFormat` entry here (its detector, what it converts), its conversion function and
branch in :func:`load_into`, a recorded layout in ``tests/fixtures/reference/`` and a row in
tests/models/backbones/test_checkpoint_formats.py; ``tools/test.py`` (``attach_checkpoint``) and the converters ask this
module. It is long on purpose (timm's habit): every format's detection and conversion stays in this one file, so that
reading or adding a format touches one place.
"""
import json
import logging
import types
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import torch

from ...constants import FOLDER_WEIGHTS_FILES, OPEN_CLIP_HF_CONFIG
from ...utils.checkpoint_io import load_checkpoint

logger = logging.getLogger('declip_mm')

OPEN_CLIP_HF = 'open_clip_hf'
DECLIP_VIT, EVA_CLIP, OPEN_CLIP, CATSEG_D2, MMENGINE = 'declip_vit', 'eva_clip', 'open_clip', 'catseg_d2', 'mmengine'
UNKNOWN = 'unknown'
# CLIP weights: what a DeCLIPViT's ``pretrained`` or a text encoder takes
CLIP_FORMATS = (OPEN_CLIP_HF, EVA_CLIP, OPEN_CLIP)

# open_clip's Hugging Face layout (open_clip/constants.py: HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)
HF_CONFIG_FILE = OPEN_CLIP_HF_CONFIG
HF_SAFE_WEIGHTS_FILE, HF_WEIGHTS_FILE = FOLDER_WEIGHTS_FILES[:2]   # open_clip_model.safetensors, ..._pytorch_model.bin
HF_DECLIP_KEY = 'declip'         # our extra top-level key of open_clip_config.json (open_clip reads only model_cfg and
                                 # preprocess_cfg): DeCLIPViT.declip_meta()
HF_CONFIG_IN_CONTENTS = 'open_clip_config'   # how read_checkpoint hands a folder's config to the detectors
WRAPPER_KEYS = ('state_dict', 'model', 'module')

CATSEG_CLIP = 'sem_seg_head.predictor.clip_model.'
CATSEG_RENAMES = (('sem_seg_head.predictor.transformer.', 'aggregator.'), ('upsample1.', 'guidance_up.0.'),
                  ('upsample2.', 'guidance_up.1.'))


# ------------------------------------------------------------------------------------------------------------------
# Key reports and unwrapping
# ------------------------------------------------------------------------------------------------------------------
class LoadReport(NamedTuple):
    """What a weights load did: keys the model kept at init, keys of the file nobody used, keys dropped."""
    missing: List[str]
    unexpected: List[str]
    ignored: List[str]

    def check(self, source: str, strict: bool) -> None:
        """Raise (strict) or log a warning naming ``source`` when keys did not match."""
        if not self.missing and not self.unexpected:
            if self.ignored:
                logger.info('%s: ignored %d recomputed buffers (%s)', source, len(self.ignored),
                            ', '.join(self.ignored[:5]))
            return

        def fmt(keys):
            return ', '.join(keys[:20]) + (f' ... (+{len(keys) - 20} more)' if len(keys) > 20 else '')

        message = (f'{source}: {len(self.missing)} missing keys [{fmt(self.missing)}]; '
                   f'{len(self.unexpected)} unexpected keys [{fmt(self.unexpected)}]')
        if self.unexpected and all(k.startswith(('student.', 'teacher.')) for k in self.unexpected):
            message = (f'{source} is a distillation checkpoint (student.* keys): use the backbone that run exported, '
                       f'declip_backbone_final.pth or declip_backbone_epoch_E.pth ({message})')
        if strict:
            raise KeyError(message + '. Pass strict=False to load anyway (the mismatch is still logged).')
        logger.warning(message)


def _unwrap(checkpoint) -> Tuple[dict, str]:
    """(state dict, wrapper): the state dict under the usual wrappers and a leading 'module.' prefix stripped;
    ``wrapper`` names what was taken off ('bare', 'state_dict', 'model.state_dict', ..., '+ module. prefix')."""
    sd, path = checkpoint, []
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            path.append(key)
    if not isinstance(sd, dict):
        raise TypeError(f'expected a state dict, got {type(sd).__name__}')
    wrapper = '.'.join(path) or 'bare'
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
        wrapper += ' + module. prefix'
    return sd, wrapper


def unwrap_state_dict(checkpoint) -> dict:
    """Strip the usual wrappers ({'state_dict'|'model'|'module': ...}) and a leading 'module.' prefix."""
    return _unwrap(checkpoint)[0]


# ------------------------------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------------------------------
def declip_meta_of(contents) -> Optional[dict]:
    """The ``meta['declip']`` dict of a DeCLIPViT checkpoint (mode, attn_scale, input_size, ...), else None."""
    meta = contents.get('meta', {}) if isinstance(contents, dict) else {}
    return meta['declip'] if isinstance(meta, dict) and isinstance(meta.get('declip'), dict) else None


def hf_config_of(contents) -> Optional[dict]:
    """The ``open_clip_config.json`` of an open_clip Hugging Face folder as :func:`read_checkpoint` hands it on
    (``{'open_clip_config': ..., 'state_dict': ...}``), else None."""
    config = contents.get(HF_CONFIG_IN_CONTENTS) if isinstance(contents, dict) else None
    return config if isinstance(config, dict) else None


def hf_declip_meta_of(contents) -> Optional[dict]:
    """The ``declip`` entry of an open_clip Hugging Face folder's config (mode, attn_scale, ...), else None."""
    config = hf_config_of(contents) or {}
    return config[HF_DECLIP_KEY] if isinstance(config.get(HF_DECLIP_KEY), dict) else None


def hf_layout(path) -> Optional[Tuple[Path, Path]]:
    """(config file, weights file) when ``path`` is a folder in open_clip's Hugging Face layout or the weights file
    inside one (``open_clip_config.json`` beside ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``),
    else None. Symbolic links (a Hub cache snapshot's) are not resolved: the sibling is the snapshot's."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder = path
        weights = next((folder / n for n in FOLDER_WEIGHTS_FILES if (folder / n).is_file()), None)
    elif path.name in FOLDER_WEIGHTS_FILES:
        folder, weights = path.parent, path
    else:
        return None
    config = folder / HF_CONFIG_FILE
    return (config, weights) if config.is_file() and weights is not None else None


def read_hf_config(config_file) -> dict:
    """``open_clip_config.json`` read; ``CheckpointError`` naming the file when it is not a JSON object with
    ``model_cfg`` (what open_clip requires)."""
    from ...utils.checkpoint_io import CheckpointError
    try:
        config = json.loads(Path(config_file).read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise CheckpointError(f'{config_file} is not a readable JSON file ({err})') from None
    if not isinstance(config, dict) or not isinstance(config.get('model_cfg'), dict):
        raise CheckpointError(f"{config_file} has no 'model_cfg' object: not an open_clip config")
    return config


def is_eva_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return 'visual.pos_embed' in state_dict and 'visual.trunk.pos_embed' not in state_dict


def is_open_clip_state_dict(state_dict: dict) -> bool:
    return any(k.startswith('visual.') for k in state_dict)


def is_catseg_d2_state_dict(state_dict: dict) -> bool:
    return any(k.startswith('sem_seg_head.predictor.') for k in state_dict)


class CheckpointFormat(NamedTuple):
    """One format: its name, what it is, how it is recognised and converted, and the detector
    ``detect(contents, state_dict) -> bool`` (``contents``: the loaded file; ``state_dict``: it unwrapped)."""
    name: str
    what: str
    detected_by: str
    converted: str
    detect: Callable[[object, dict], bool]


FORMATS: Dict[str, CheckpointFormat] = {f.name: f for f in (
    CheckpointFormat(
        OPEN_CLIP_HF,
        what="an open_clip Hugging Face folder (open_clip_config.json + open_clip_model.safetensors, as open_clip's "
             'push_to_hf_hub / save_for_hf write it; a local folder, hf-hub:org/name from the local cache, or the '
             'weights file in one)',
        detected_by='open_clip_config.json beside the weights file (read_checkpoint hands it on)',
        converted="nothing (open_clip keys); the config's extra 'declip' entry (save_hf_dir) restores mode, "
                  'attn_scale and input_size',
        detect=lambda contents, sd: hf_config_of(contents) is not None),
    CheckpointFormat(
        DECLIP_VIT,
        what='our DeCLIPViT backbone checkpoint (DeCLIPViT.save_checkpoint, the distillation export)',
        detected_by="meta['declip'] is a dict",
        converted='nothing (DeCLIPViT keys, visual.*); the meta restores mode, attn_scale and input_size',
        detect=lambda contents, sd: declip_meta_of(contents) is not None),
    CheckpointFormat(
        EVA_CLIP,
        what="EVA-CLIP / the authors' DeCLIP .pt (bare or wrapped, e.g. their training file {epoch, name, state_dict, "
             'optimizer, scaler})',
        detected_by="'visual.pos_embed' and no 'visual.trunk.pos_embed'",
        converted="visual.* -> visual.trunk.* (timm's eva.checkpoint_filter_fn); rotary tables and text.attn_mask "
                  'ignored; text.* and logit_scale as they are',
        detect=lambda contents, sd: is_eva_clip_state_dict(sd)),
    CheckpointFormat(
        OPEN_CLIP,
        what='a CLIP / open_clip state dict',
        detected_by="any 'visual.*' key",
        converted="nothing; OpenAI-style text keys to open_clip's custom-text layout where the model has one",
        detect=lambda contents, sd: is_open_clip_state_dict(sd)),
    CheckpointFormat(
        CATSEG_D2,
        what="the authors' CAT-Seg detectron2 model (DeCLIP_CATSeg branch, {'model': ..., 'iteration': ...})",
        detected_by="any 'sem_seg_head.predictor.*' key",
        converted='predictor.transformer.* -> aggregator.*, upsample1/2 -> guidance_up.0/1, clip_model.visual.* -> '
                  'backbone.visual.* (as eva_clip), clip_model.text.* / logit_scale -> text_encoder.*; the saved shift '
                  'masks checked equal to ours and ignored',
        detect=lambda contents, sd: is_catseg_d2_state_dict(sd)),
    CheckpointFormat(
        MMENGINE,
        what="a whole model's state dict (an mmengine Runner checkpoint {meta, state_dict, ...}, or bare)",
        detected_by='any other non-empty state dict (tools/test.py matches its top-level keys to the config)',
        converted="nothing; 'module.' prefixes stripped, as mmengine's load_from",
        detect=lambda contents, sd: bool(sd)),
)}


def _detect(contents, state_dict: Optional[dict]) -> str:
    if state_dict is None:
        return UNKNOWN
    return next((f.name for f in FORMATS.values() if f.detect(contents, state_dict)), UNKNOWN)


def detect_format(contents) -> str:
    """The name of the first of :data:`FORMATS` that ``contents`` (a loaded file) is, else ``'unknown'``."""
    try:
        return _detect(contents, unwrap_state_dict(contents))
    except TypeError:
        return UNKNOWN


class Checkpoint(NamedTuple):
    """A checkpoint file, read and recognised.

    Attributes:
        source: the file (or a caller's name for an in-memory object).
        format: a name of :data:`FORMATS`, or ``'unknown'``.
        state_dict: the state dict, unwrapped (None when the file holds none; ``problem`` says why).
        meta: ``meta['declip']`` of a ``declip_vit`` checkpoint, or the config's ``declip`` entry of an
            ``open_clip_hf`` folder (mode, attn_scale, input_size, model_name), else {}.
        wrapper: what held the state dict ('bare', 'state_dict', 'model', ..., '+ module. prefix').
        top_level: the file's top-level keys (``()`` for a non-dict).
        problem: why there is no state dict ('' when there is one).
        config: an ``open_clip_hf`` folder's ``open_clip_config.json`` (``model_cfg``, ``preprocess_cfg``, ...),
            else None.
    """
    source: str
    format: str
    state_dict: Optional[dict]
    meta: dict
    wrapper: str
    top_level: Tuple[str, ...]
    problem: str = ''
    config: Optional[dict] = None

    @property
    def saved_by_runner(self) -> bool:
        """Saved by an mmengine Runner (``{'meta', 'state_dict', ...}``)."""
        return {'meta', 'state_dict'} <= set(self.top_level)

    @property
    def prefixes(self) -> set:
        """The state dict keys' first components (``backbone``, ``visual``, ``student``, ...)."""
        return {key.split('.', 1)[0] for key in self.state_dict or ()}

    def require_state_dict(self) -> dict:
        """The state dict; ``TypeError`` naming the file when it holds none."""
        if self.state_dict is None:
            raise TypeError(f'{self.source}: {self.problem}')
        return self.state_dict

    def describe(self) -> str:
        known = FORMATS.get(self.format)
        return (known.what if known else 'no known checkpoint format') + f' [{self.format}]'


def parse_checkpoint(contents, source: str = '<in memory>') -> Checkpoint:
    """Recognise an already-loaded file (or a state dict built in memory) as a :class:`Checkpoint`."""
    top_level = tuple(str(k) for k in contents) if isinstance(contents, dict) else ()
    config = hf_config_of(contents)
    meta = hf_declip_meta_of(contents) if config is not None else declip_meta_of(contents)
    try:
        sd, wrapper = _unwrap(contents)
        problem = '' if sd else 'an empty state dict'
    except TypeError as err:
        sd, wrapper, problem = None, '', str(err)
    if config is not None:
        wrapper = HF_CONFIG_FILE + ' folder'
    return Checkpoint(str(source), _detect(contents, sd), sd, dict(meta) if meta is not None else {}, wrapper,
                      top_level, problem, config)


def read_checkpoint(path, map_location='cpu', trust: Optional[bool] = None, mmap: bool = False) -> Checkpoint:
    """Read ``path`` safely (``utils.checkpoint_io.load_checkpoint``: ``FileNotFoundError``, ``CheckpointError`` or
    ``UntrustedCheckpointError`` naming the file) and recognise it. ``mmap=True`` maps the tensors instead of reading
    them (cheap: for a look at the metadata only).

    A folder in open_clip's Hugging Face layout, or the weights file inside one (:func:`hf_layout`), is read as
    ``{'open_clip_config': <open_clip_config.json>, 'state_dict': <the weights file>}``: format ``open_clip_hf``."""
    layout = hf_layout(path)
    if layout is not None:
        config = read_hf_config(layout[0])
        contents = {HF_CONFIG_IN_CONTENTS: config,
                    'state_dict': load_checkpoint(layout[1], map_location, trust=trust, mmap=mmap)}
        return parse_checkpoint(contents, str(path))
    if Path(path).expanduser().is_dir():
        raise FileNotFoundError(f'{path} is a folder without an open_clip Hugging Face layout ({HF_CONFIG_FILE} and '
                                f"{' or '.join(FOLDER_WEIGHTS_FILES[:2])})")
    return parse_checkpoint(load_checkpoint(path, map_location, trust=trust, mmap=mmap), str(path))


def stored_settings(path: Optional[str]) -> dict:
    """What a DeCLIPViT checkpoint at ``path`` says about itself (``meta['declip']``, or the ``declip`` entry of an
    open_clip Hugging Face folder's config: mode, attn_scale, input_size, model_name), or {} for every other format, a
    lone safetensors file or no file. A torch file is memory-mapped, so only its small pickled header is read; of a
    folder only its ``open_clip_config.json``."""
    if not path:
        return {}
    layout = hf_layout(path)
    if layout is not None:
        meta = read_hf_config(layout[0]).get(HF_DECLIP_KEY)
        return dict(meta) if isinstance(meta, dict) else {}
    if str(path).endswith('.safetensors'):
        return {}
    found = read_checkpoint(path, mmap=True)
    return dict(found.meta) if found.format == DECLIP_VIT else {}


# ------------------------------------------------------------------------------------------------------------------
# Writing open_clip's Hugging Face layout
# ------------------------------------------------------------------------------------------------------------------
def save_hf_dir(clip_model, folder, model_name: str, declip_meta: Optional[dict] = None,
                safe_serialization='safetensors', readme: bool = True) -> Path:
    """Write ``clip_model`` (a full open_clip CLIP model built by open_clip's factory) to ``folder`` in open_clip's
    Hugging Face layout, the files ``open_clip.push_to_hf_hub`` uploads (``save_for_hf`` + the model card):

    * ``open_clip_model.safetensors``: ``clip_model.state_dict()`` (``safe_serialization='both'`` adds
      ``open_clip_pytorch_model.bin``, ``False`` writes only that), written as ``save_for_hf`` writes them;
    * ``open_clip_config.json``: ``{'model_cfg': open_clip.get_model_config(model_name), 'preprocess_cfg': {mean, std,
      interpolation, resize_mode}}`` by open_clip's own ``save_config_for_hf``, plus our top-level ``declip`` entry
      (``declip_meta``: DeCLIPViT.declip_meta(), the mode / attn_scale / input_size the weights run with), which
      open_clip ignores;
    * ``README.md``: the model card ``push_to_hf_hub`` writes when a repository has none (``generate_readme``).

    No tokenizer files: open_clip builds the CLIP BPE tokenizer from ``model_cfg`` (they are read only when
    ``text_cfg`` names an ``hf_tokenizer_name``). Returns the folder."""
    import open_clip
    import safetensors.torch
    from open_clip.push_to_hf_hub import generate_readme, save_config_for_hf
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip model '{model_name}'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in clip_model.state_dict().items()}
    if safe_serialization in ('safetensors', True, 'both'):
        safetensors.torch.save_file(tensors, str(folder / HF_SAFE_WEIGHTS_FILE))
    if safe_serialization in (False, 'both'):
        torch.save(tensors, folder / HF_WEIGHTS_FILE)
    config_file = folder / HF_CONFIG_FILE
    save_config_for_hf(clip_model, config_file, model_config=model_cfg)
    if declip_meta is not None:
        config = json.loads(config_file.read_text(encoding='utf-8'))
        config[HF_DECLIP_KEY] = dict(declip_meta)
        config_file.write_text(json.dumps(config, indent=2), encoding='utf-8')
    if readme:
        # license 'other' (generate_readme's default is 'mit'): the weights keep the licence of those they came from
        card = dict(tags=('clip', 'open_clip', 'declip'), pipeline_tag='zero-shot-image-classification',
                    license='other', description=_card_description(model_name, declip_meta))
        (folder / 'README.md').write_text(generate_readme(card, model_name), encoding='utf-8')
    return folder


def export_hf_dir(backbone, folder, text_weights: Optional[str] = None, strict: bool = True,
                  safe_serialization='safetensors', cache_dir: Optional[str] = None) -> Path:
    """Write a DeCLIPViT (a built one, or the path of its checkpoint) as an open_clip Hugging Face folder
    (:func:`save_hf_dir`): the image tower exactly, the text tower and ``logit_scale`` from ``text_weights`` (the
    ORIGINAL CLIP weights, which DeCLIP leaves frozen: an open_clip tag resolved offline, a file or a folder; None =
    random), ``declip_meta()`` in the config. ``DeCLIPViT(model_name, pretrained=folder)`` gives back every tensor,
    the mode, the scale and the input size; ``open_clip.create_model('local-dir:' + folder)`` the raw CLIP."""
    from ..clip_factory import create_clip
    if not isinstance(backbone, torch.nn.Module):
        found = read_checkpoint(backbone, mmap=True)
        if found.format != DECLIP_VIT:
            raise ValueError(f'{backbone} is not a DeCLIPViT checkpoint (no meta.declip); it is {found.describe()}')
        from .declip_vit import DeCLIPViT
        backbone = DeCLIPViT(found.meta['model_name'], pretrained=str(backbone), cache_dir=cache_dir)
    clip, _ = create_clip(backbone.model_name, text_weights, cache_dir, strict)
    clip.visual.load_state_dict(backbone.visual.state_dict(), strict=True)
    meta = dict(backbone.declip_meta(), text_weights=None if text_weights is None else str(text_weights))
    return save_hf_dir(clip, folder, backbone.model_name, meta, safe_serialization)


def _card_description(model_name: str, meta: Optional[dict]) -> str:
    if not meta:
        return f'open_clip {model_name} weights, written by declip-mm.'
    return (f"A DeCLIP image tower ({model_name}, mode {meta.get('mode')}, attention scale {meta.get('attn_scale')}, "
            f"input size {meta.get('input_size')}) in open_clip's layout, written by declip-mm. Dense features: "
            "`DeCLIPViT('" + model_name + "', pretrained='hf-hub:ORG/NAME')` (declip-mm; mode and scale are read "
            "from the 'declip' entry of open_clip_config.json). The raw tower: "
            "`open_clip.create_model('hf-hub:ORG/NAME')`.")


# ------------------------------------------------------------------------------------------------------------------
# Conversions
# ------------------------------------------------------------------------------------------------------------------
def convert_eva_clip_state_dict(state_dict: Dict[str, torch.Tensor], clip_model) -> Tuple[Dict, List[str]]:
    """(open_clip state dict, ignored keys) for an authors'-format EVA-CLIP/DeCLIP state dict.

    EVA-CLIP (and DeCLIP, which fine-tunes it without adding modules) saves a ``CustomCLIP`` state dict::

        visual.cls_token, visual.pos_embed, visual.patch_embed.proj.*, visual.rope.freqs_{cos,sin},
        visual.blocks.N.attn.{q_bias, v_bias, q_proj.weight, k_proj.weight, v_proj.weight, inner_attn_ln.*, proj.*},
        visual.blocks.N.attn.rope.freqs_{cos,sin}  (the shared rotary module, saved once more per block),
        visual.blocks.N.{norm1, norm2}.*, visual.blocks.N.mlp.{w1, w2, ffn_ln, w3}.*, visual.norm.*, visual.head.*,
        text.*, logit_scale

    (recorded from the reference model code: tests/fixtures/reference/declip_authors_pt_{b16,l14}.json,
    xiaomoguhz/DeCLIP@2c0b3de, and eva02_clip_b16.json, baaivision/EVA@5623d08). open_clip builds the same network as
    ``visual.trunk.*`` (timm names); timm's own ``eva.checkpoint_filter_fn`` maps the visual keys, text keys are
    already open_clip's. Rotary tables (every ``rope`` key: recomputed for every grid; the reference's loader deletes
    them as well) and a text causal mask, if a file has one, are dropped and returned as ignored.
    """
    from timm.models.eva import checkpoint_filter_fn
    trunk = getattr(clip_model.visual, 'trunk', None)
    if trunk is None:
        raise ValueError('an EVA-CLIP checkpoint (visual.blocks.*, visual.pos_embed) needs an EVA02 open_clip model '
                         f'(e.g. EVA02-B-16), not {type(clip_model.visual).__name__}')
    ignored = [k for k in state_dict if k.startswith('visual.') and 'rope' in k]
    ignored += [k for k in state_dict if k == 'text.attn_mask']
    visual = checkpoint_filter_fn({k: v for k, v in state_dict.items() if k.startswith('visual.')}, trunk)
    out = {f'visual.trunk.{k}': v for k, v in visual.items()}
    out.update({k: v for k, v in state_dict.items() if not k.startswith('visual.') and k not in ignored})
    return out, ignored


def _catseg_rename(key: str) -> Optional[str]:
    for old, new in CATSEG_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def convert_catseg_d2_head_state_dict(d2: dict, model) -> tuple:
    """(our state dict, ignored keys, unmapped keys) for the non-CLIP keys of a detectron2 CAT-Seg state dict: the
    aggregator and the two guidance ConvTs. ``model`` needs the ``aggregator`` (whose recomputed shift masks the
    checkpoint's saved ``attn_mask`` buffers must equal: ValueError otherwise).

    Module names are CAT-Seg @6d3a188 / DeCLIP_CATSeg @06262d4's (every reference key is listed in
    tests/fixtures/reference/catseg_d2_state_dict_*.json, recorded by instantiating the reference's own code)::

        sem_seg_head.predictor.transformer.*        -> aggregator.*
        ...layers.{i}.swin_block.block_2.attn_mask  -> checked equal to our recomputed mask, ignored
        upsample1.* / upsample2.*                    -> guidance_up.0.* / guidance_up.1.*
    """
    out, ignored, unmapped = {}, [], []
    ours = dict(model.named_buffers())
    for k, v in d2.items():
        if k.startswith(CATSEG_CLIP):
            continue
        new = _catseg_rename(k)
        if new is None:
            unmapped.append(k)
        elif new.endswith('.attn_mask') and new.startswith('aggregator.'):
            mine = ours.get(new)                   # named_buffers() leaves out the unshifted blocks' None
            if mine is None:
                unmapped.append(k)
                continue
            if tuple(v.shape) != tuple(mine.shape) or not torch.equal(v.to(mine), mine):
                raise ValueError(f'{k}: the checkpoint\'s shifted-window mask {tuple(v.shape)} differs from ours '
                                 f'({new}, {tuple(mine.shape)}): the config\'s feature_size / window do not match')
            ignored.append(k)
        else:
            out[new] = v
    return out, ignored, unmapped


def convert_catseg_d2_state_dict(d2: dict, model) -> tuple:
    """(our state dict, ignored keys, unmapped keys) for a detectron2 CAT-Seg state dict and a built CATSeg:
    ``sem_seg_head.predictor.clip_model.visual.*`` -> ``backbone.visual.*`` (:func:`convert_eva_clip_state_dict`),
    ``clip_model.text.*`` / ``logit_scale`` -> ``text_encoder.*``, the head by
    :func:`convert_catseg_d2_head_state_dict`. Rotary tables and the text attention mask are ignored."""
    clip = {k[len(CATSEG_CLIP):]: v for k, v in d2.items() if k.startswith(CATSEG_CLIP)}
    visual, ignored = convert_eva_clip_state_dict({k: v for k, v in clip.items() if k.startswith('visual.')},
                                                  types.SimpleNamespace(visual=model.backbone.visual))
    out = {f'backbone.{k}': v for k, v in visual.items()}
    for k, v in clip.items():
        if k.startswith('visual.'):
            continue
        if k == 'text.attn_mask':
            ignored.append(k)
            continue
        out[f'text_encoder.{k}'] = v
    head, head_ignored, unmapped = convert_catseg_d2_head_state_dict(d2, model)
    out.update(head)
    return out, ignored + head_ignored, unmapped


# ------------------------------------------------------------------------------------------------------------------
# Loading into a built model
# ------------------------------------------------------------------------------------------------------------------
def _report(model: torch.nn.Module, state_dict: dict, ignored=(), unmapped=()) -> LoadReport:
    result = model.load_state_dict(state_dict, strict=False)
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys) + list(unmapped), list(ignored))


def load_clip_state_dict(model: torch.nn.Module, state_dict, source: str, strict: bool = True) -> LoadReport:
    """Load an open_clip or EVA-CLIP (authors' format) CLIP state dict (or a loaded file, or a :class:`Checkpoint`)
    into an open_clip model."""
    if isinstance(state_dict, Checkpoint):
        state_dict = state_dict.require_state_dict()
    state_dict = unwrap_state_dict(state_dict)
    ignored: List[str] = []
    if is_eva_clip_state_dict(state_dict):
        state_dict, ignored = convert_eva_clip_state_dict(state_dict, model)
    elif 'positional_embedding' in state_dict and not hasattr(model, 'positional_embedding'):
        from open_clip.model import convert_to_custom_text_state_dict
        state_dict = convert_to_custom_text_state_dict(state_dict)
    report = _report(model, state_dict, ignored)
    report.check(source, strict)
    return report


def load_into(model: torch.nn.Module, checkpoint, strict: bool = True, source: Optional[str] = None) -> LoadReport:
    """Convert ``checkpoint`` (a path, read with :func:`read_checkpoint`, or a :class:`Checkpoint`) for ``model`` by
    its format and load it; raise (``strict``) or log the key mismatches, naming ``source`` (default: the file).

    ``declip_vit`` -> a DeCLIPViT; ``eva_clip`` / ``open_clip`` -> an open_clip CLIP model; ``catseg_d2`` -> our CATSeg
    (unmapped keys count as unexpected); ``mmengine`` -> the whole model it was saved from. Returns the
    :class:`LoadReport`."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    source = checkpoint.source if source is None else source
    state_dict = checkpoint.require_state_dict()
    if checkpoint.format in CLIP_FORMATS:
        return load_clip_state_dict(model, state_dict, source, strict)
    if checkpoint.format == CATSEG_D2:
        converted, ignored, unmapped = convert_catseg_d2_state_dict(state_dict, model)
        report = _report(model, converted, ignored, unmapped)
    elif checkpoint.format == DECLIP_VIT:
        report = _report(model, state_dict)
    elif checkpoint.format == MMENGINE:                 # as mmengine's load_from: every 'module.' prefix stripped
        report = _report(model, {k[len('module.'):] if k.startswith('module.') else k: v
                                 for k, v in state_dict.items()})
    else:
        raise ValueError(f'{source} is {checkpoint.describe()}: nothing to load')
    report.check(source, strict)
    return report
