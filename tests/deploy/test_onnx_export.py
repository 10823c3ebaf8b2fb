"""ONNX export and the onnxruntime backend (declip_mm/deploy/): onnxruntime gives PyTorch's numbers on real photos
at two sizes, for both tower families (OpenAI-style ViT, EVA02 with rotary embeddings) and every mode of the last
block; the baked vocabulary; an operator that does not convert is named; broken export folders are refused."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from declip_mm.apis import DenseFeatureExtractor, OpenVocabSegmenter
from declip_mm.apis.inputs import load_image
from declip_mm.constants import TINY_MODELS
from declip_mm.deploy import OnnxExportError, OnnxImageEncoder, OnnxTextEncoder, export_onnx, read_manifest
from declip_mm.deploy.onnx_export import MANIFEST, export_image_encoder
from declip_mm.models.backbones.declip_vit import MODES

RTOL = 1e-4           # the bound, relative to the largest magnitude of the PyTorch output
VOCAB = ['cat', 'dog; puppy', 'sofa; couch', 'person']


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE


@pytest.fixture(scope='module')
def photos(sample_root):
    files = sorted((Path(sample_root) / 'photos').glob('*.jpg'))[:2]
    return [load_image(f) for f in files]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """{model name: (segmenter, export folder)}: each tiny tower family's PyTorch segmenter (random towers, mode
    csa at 1/sqrt(d), the segment protocol's) and its export with a baked vocabulary."""
    torch.manual_seed(0)
    out = {}
    for name in TINY_MODELS:
        seg = OpenVocabSegmenter(name, precision='fp32')
        folder = tmp_path_factory.mktemp(f'onnx-{name}')
        export_onnx(seg.model.backbone, seg.text_encoder, folder, vocabulary=VOCAB, random_weights=True)
        out[name] = seg, folder
    return out


@pytest.mark.parametrize('name', TINY_MODELS)
def test_segmentation_through_onnxruntime_equals_pytorch(name, exported, photos):
    seg, folder = exported[name]
    ort = OpenVocabSegmenter(backbone=str(folder), backend='onnxruntime')
    assert isinstance(ort.model.backbone, OnnxImageEncoder) and isinstance(ort.text_encoder, OnnxTextEncoder)
    for photo in photos:
        for short_side in (224, 320):                     # two network sizes: the graph's height and width are free
            seg.size_rule['short_side'] = ort.size_rule['short_side'] = short_side
            a, b = seg(photo, VOCAB), ort(photo, VOCAB)
            assert a.input_shape == b.input_shape
            assert relative_error(torch.from_numpy(b.probs), torch.from_numpy(a.probs)) < RTOL
            assert (a.labels == b.labels).mean() > 0.999  # a flip needs two classes tied within 1e-4


@pytest.mark.parametrize('name', TINY_MODELS)
def test_text_tower_and_baked_vocabulary(name, exported):
    seg, folder = exported[name]
    text = OnnxTextEncoder(folder, embedding_cache=False)
    # the baked queries are used as they are: no prompt goes through the text graph
    baked = text(VOCAB)
    assert text.num_encoded_prompts == 0
    expected = seg.text_encoder(VOCAB)
    assert torch.equal(baked.class_index, expected.class_index)
    assert relative_error(baked.embeddings, expected.embeddings) < 1e-5
    # names that are not baked go through text_encoder.onnx, prompts and all
    fresh = text(['zebra; striped horse', 'traffic light'])
    assert text.num_encoded_prompts == 3 * len(text.templates)
    expected = seg.text_encoder(['zebra; striped horse', 'traffic light']).embeddings
    assert relative_error(fresh.embeddings, expected) < 1e-5
    # other prompts than the baked ones: the baked embeddings are not used
    assert OnnxTextEncoder(folder, templates='simple', embedding_cache=False).baked_queries() == {}


def test_baked_query_cosines_output(exported, photos):
    import onnxruntime
    seg, folder = exported[TINY_MODELS[0]]
    session = onnxruntime.InferenceSession(str(folder / 'image_encoder.onnx'), providers=['CPUExecutionProvider'])
    assert [o.name for o in session.get_outputs()] == ['dense', 'dense_raw', 'query_cosines']
    image = torch.randn(1, 3, 48, 80)
    dense, raw, cosines = session.run(None, {'image': image.numpy()})
    with torch.no_grad():
        reference = seg.model.backbone.extract_dense(image, normalize=False)
    assert relative_error(torch.from_numpy(raw), reference) < RTOL
    queries = torch.from_numpy(np.load(folder / 'vocabulary.npy'))
    vocab = json.loads((folder / 'vocabulary.json').read_text())
    assert vocab['queries'] == ['cat', 'dog', 'puppy', 'sofa', 'couch', 'person'] and len(queries) == 6
    assert vocab['class_index'] == [0, 1, 1, 2, 2, 3]
    assert np.allclose(cosines, np.einsum('bdhw,sd->bshw', dense, queries.numpy()), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', TINY_MODELS)
@pytest.mark.parametrize('mode', MODES)
def test_dense_features_every_mode(name, mode, tmp_path, photos):
    """DenseFeatureExtractor through onnxruntime equals PyTorch in every mode, on two photos at two sizes."""
    torch.manual_seed(1)
    fx = DenseFeatureExtractor(name, precision='fp32', mode=mode)
    export_onnx(fx.backbone, None, tmp_path, random_weights=True)             # image only: no text tower needed
    ort = DenseFeatureExtractor(backbone=str(tmp_path), backend='onnxruntime')
    assert ort.backbone.mode == mode and not (tmp_path / 'text_encoder.onnx').exists()
    for photo in photos:
        for long_side in (224, 352):
            fx.long_side = ort.long_side = long_side
            a, b = fx(photo), ort(photo)
            assert a.map.shape == b.map.shape
            assert relative_error(b.map, a.map) < RTOL
    boxes = [[10, 20, 200, 150], [0, 0, 60, 60]]
    assert relative_error(ort.regions(b, boxes), fx.regions(a, boxes)) < RTOL


def test_an_operator_without_onnx_conversion_is_named(tmp_path):
    @torch.library.custom_op('declip_test::not_in_onnx', mutates_args=())
    def not_in_onnx(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @not_in_onnx.register_fake
    def _(x):
        return torch.empty_like(x)

    fx = DenseFeatureExtractor(TINY_MODELS[0], precision='fp32')
    backbone = fx.backbone
    plain = backbone.extract_dense
    backbone.extract_dense = lambda images, **kw: not_in_onnx(plain(images, **kw))
    with pytest.raises(OnnxExportError, match=r"cannot export the image encoder.*'declip_test\.not_in_onnx\.default' "
                                              r'has no ONNX conversion'):
        export_image_encoder(backbone, tmp_path / 'image_encoder.onnx')


def test_broken_export_folders_are_refused(exported, tmp_path):
    _, folder = exported[TINY_MODELS[0]]
    with pytest.raises(OnnxExportError, match='no declip_onnx.json'):
        read_manifest(tmp_path)
    with pytest.raises(OnnxExportError, match='not a folder'):
        read_manifest(tmp_path / 'nothing')
    copy = tmp_path / 'copy'
    copy.mkdir()
    manifest = json.loads((folder / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(OnnxExportError, match=r'image_encoder.onnx \(image_encoder\) is missing'):
        read_manifest(copy)
    (copy / 'image_encoder.onnx').write_bytes(b'not a graph')
    (copy / 'text_encoder.onnx').write_bytes((folder / 'text_encoder.onnx').read_bytes())
    with pytest.raises(OnnxExportError, match='onnxruntime cannot load it'):
        OnnxImageEncoder(copy)
    (copy / MANIFEST).write_text(json.dumps(dict(manifest, format='something/2')))
    with pytest.raises(OnnxExportError, match="expected 'declip_mm.onnx/1'"):
        read_manifest(copy)


def test_backend_usage_errors(exported):
    _, folder = exported[TINY_MODELS[0]]
    with pytest.raises(ValueError, match="exported in mode 'csa'.*not 'qq'"):
        OpenVocabSegmenter(backbone=str(folder), backend='onnxruntime', mode='qq')
    with pytest.raises(ValueError, match='runs the exported float32 graphs'):
        OpenVocabSegmenter(backbone=str(folder), backend='onnxruntime', precision='bf16')
    with pytest.raises(ValueError, match='text_weights'):
        OpenVocabSegmenter(backbone=str(folder), text_weights='x.pth', backend='onnxruntime')
    with pytest.raises(ValueError, match="is an export of 'DeCLIP-Tiny-ViT-16', not 'DeCLIP-Tiny-EVA02-16'"):
        DenseFeatureExtractor(TINY_MODELS[1], backbone=str(folder), backend='onnxruntime')
    with pytest.raises(ValueError, match='backend must be one of'):
        DenseFeatureExtractor(backend='tensorrt')
    with pytest.raises(ValueError, match='fixed in the graph'):
        OnnxImageEncoder(folder).extract_dense(torch.zeros(1, 3, 32, 32), mode='kk')
    with pytest.raises(ValueError, match='multiples of 16'):
        OnnxImageEncoder(folder).extract_dense(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match='a vocabulary is baked with the text tower'):
        export_onnx(exported[TINY_MODELS[0]][0].model.backbone, None, folder.parent / 'x', vocabulary=['cat'])
