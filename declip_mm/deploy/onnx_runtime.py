"""Run an ONNX export (``onnx_export.py``) with onnxruntime behind the PyTorch towers' interfaces, so the user
APIs' protocols (``OpenVocabSegmenter``, ``DenseFeatureExtractor``; ``declip-mm segment/features --backend
onnxruntime``) run unchanged on it:

- :class:`OnnxImageEncoder` answers ``extract_dense`` like a ``DeCLIPViT`` in the export's mode;
- :class:`OnnxTextEncoder` is an ``OpenCLIPTextEncoder`` whose tower is ``text_encoder.onnx`` (same prompts, same
  cache rules); a baked vocabulary's query embeddings are used as they are when the prompts match.

onnxruntime's CPU provider runs float32 only; the sessions use torch's thread count.
"""
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..models.text.text_encoder import OpenCLIPTextEncoder
from .onnx_export import EXPORT_FORMAT, MANIFEST, OnnxExportError

REQUIRED_KEYS = ('model_name', 'mode', 'attn_scale', 'patch_size', 'embed_dim', 'width', 'num_heads', 'mean', 'std',
                 'image_encoder', 'text_encoder')


def is_onnx_export(path) -> bool:
    """Whether ``path`` is a folder written by :func:`~declip_mm.deploy.onnx_export.export_onnx`."""
    return path is not None and (Path(path) / MANIFEST).is_file()


def read_manifest(folder) -> dict:
    """The checked ``declip_onnx.json`` of an export folder; an OnnxExportError names what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise OnnxExportError(f'{folder}: not a folder (an ONNX export is the folder `declip-mm export --onnx` writes)')
    if not path.is_file():
        raise OnnxExportError(f'{folder}: no {MANIFEST}, so not a declip-mm ONNX export')
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise OnnxExportError(f'{path}: unreadable ({err})') from None
    if not isinstance(manifest, dict) or manifest.get('format') != EXPORT_FORMAT:
        raise OnnxExportError(f"{path}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                              f"expected '{EXPORT_FORMAT}'")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise OnnxExportError(f'{path}: missing {missing}')
    for part in ('image_encoder', 'text_encoder'):
        if part == 'text_encoder' and manifest[part] is None:
            continue                                           # an image-only export
        graph = folder / manifest[part]['file']
        if not graph.is_file():
            raise OnnxExportError(f'{folder}: {manifest[part]["file"]} ({part}) is missing')
    return manifest


def open_session(path: Path):
    """An onnxruntime CPU session with torch's thread count; an unreadable graph is an OnnxExportError."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as err:                                   # onnxruntime raises its own exception types
        raise OnnxExportError(f'{path}: onnxruntime cannot load it ({str(err).splitlines()[0]})') from None


class OnnxImageEncoder(torch.nn.Module):
    """``image_encoder.onnx`` behind ``DeCLIPViT``'s dense interface (no parameters; CPU, float32).

    Args:
        folder (str | Path): the export folder.
        manifest (dict, optional): its :func:`read_manifest`; read when None. Defaults to None.
    """

    def __init__(self, folder, manifest: Optional[dict] = None):
        super().__init__()
        self.folder = Path(folder)
        self.manifest = manifest or read_manifest(folder)
        m = self.manifest
        self.model_name, self.family, self.mode, self.attn_scale = m['model_name'], m.get('family'), m['mode'], \
            m['attn_scale']
        self.patch_size, self.embed_dim, self.width, self.num_heads = m['patch_size'], m['embed_dim'], m['width'], \
            m['num_heads']
        self.session = open_session(self.folder / m['image_encoder']['file'])

    def extract_dense(self, images: torch.Tensor, mode: Optional[str] = None, normalize: bool = True) -> torch.Tensor:
        """Normalised images (B, 3, H, W), H and W multiples of the patch -> dense map (B, D, H/p, W/p) (L2-normalised
        if ``normalize``), float32 on the CPU. ``mode`` must be the export's (it is fixed in the graph)."""
        if mode is not None and mode != self.mode:
            raise ValueError(f"this ONNX export runs mode '{self.mode}' (fixed in the graph), not '{mode}': export "
                             f'again with --mode {mode}')
        p = self.patch_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] % p or images.shape[3] % p:
            raise ValueError(f'expected images (B, 3, H, W) with H and W multiples of {p}, got {tuple(images.shape)}')
        feed = {'image': np.ascontiguousarray(images.detach().float().cpu().numpy())}
        name = 'dense' if normalize else 'dense_raw'
        return torch.from_numpy(self.session.run([name], feed)[0])


class OnnxTextEncoder(OpenCLIPTextEncoder):
    """An :class:`OpenCLIPTextEncoder` whose tower is the export's ``text_encoder.onnx``.

    Args:
        folder (str | Path): the export folder.
        templates / synonym_reduce / batch_size / embedding_cache: as for OpenCLIPTextEncoder. Defaults to the
            export's templates (as a list), 'max', 256, None.
        manifest (dict, optional): its :func:`read_manifest`; read when None. Defaults to None.
    """

    def __init__(self, folder, templates: Union[None, str, Sequence[str]] = None, synonym_reduce: str = 'max',
                 batch_size: int = 256, embedding_cache: Union[None, str, bool] = None,
                 manifest: Optional[dict] = None):
        super(OpenCLIPTextEncoder, self).__init__()            # BaseModule's: there is no open_clip tower to build
        self.folder = Path(folder)
        self.manifest = manifest or read_manifest(folder)
        text = self.manifest['text_encoder']
        if text is None:
            raise OnnxExportError(f'{folder} is an image-only export (no text_encoder.onnx): export with the text '
                                  'tower to segment with it')
        self.init_prompts(self.manifest['model_name'], list(text['templates']) if templates is None else templates,
                          synonym_reduce, batch_size)
        graph = self.folder / text['file']
        self.session = open_session(graph)
        self.init_cache(embedding_cache, 'onnx:' + self._weights_id(str(graph)))
        self._memory.update(self.baked_queries())

    def baked_queries(self) -> dict:
        """{query: (D,) embedding} of the export's baked vocabulary when it was made with these prompts, else {}."""
        entry = self.manifest.get('vocabulary')
        if not entry:
            return {}
        vocab = json.loads((self.folder / entry['file']).read_text())
        if list(vocab['templates']) != list(self.templates) or vocab.get('synonym_reduce', 'max') != 'max':
            return {}
        emb = torch.from_numpy(np.load(self.folder / vocab['embeddings'], allow_pickle=False)).float()
        if emb.shape != (len(vocab['queries']), self.manifest['embed_dim']):
            raise OnnxExportError(f"{self.folder}: {vocab['embeddings']} has shape {tuple(emb.shape)}, expected "
                                  f"({len(vocab['queries'])}, {self.manifest['embed_dim']})")
        return dict(zip(vocab['queries'], emb))

    def train(self, mode: bool = True):
        return super(OpenCLIPTextEncoder, self).train(mode)      # no ``clip`` to keep in eval mode

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(['embeddings'], {'tokens': tokens.long().numpy()})[0])
