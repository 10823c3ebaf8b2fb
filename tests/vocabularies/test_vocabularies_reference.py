"""The bundled benchmark class-name files are the reference files (ProxyCLIP @e7b767f / the DeCLIP zero-shot branch, by
git blob id), with no name in two classes."""
import hashlib
from pathlib import Path

import pytest
import torch

from declip_mm.models.text import split_synonyms
from declip_mm.models.text.vocabulary import CLASS_NAME_DIR, load_class_names
from reference.declip_segmentation_ref import reference_parse_class_file

BENCHMARK_FILES = ('voc21', 'pc60', 'coco_object', 'voc20', 'pc59', 'coco_stuff', 'cityscapes', 'ade20k')
REFERENCE_BLOBS = {'voc21': '5b8dc7e2', 'pc60': 'a6209938', 'coco_object': 'db0f4779', 'voc20': '3f073de0',
                   'pc59': 'f9fb2a22', 'coco_stuff': 'b76c5a67', 'cityscapes': 'a1560efb', 'ade20k': 'dba5aa2c'}
# the one collision the reference file itself has: 'bed' is a background word and class 60 of COCO-Object
REFERENCE_COLLISIONS = {'coco_object': {'bed'}}

pytestmark = pytest.mark.reference


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


@pytest.mark.parametrize('name', BENCHMARK_FILES)
def test_benchmark_class_files_are_the_references(name):
    path = CLASS_NAME_DIR / f'{name}.txt'
    assert git_blob(path).startswith(REFERENCE_BLOBS[name]), f'{path} differs from the reference file'
    ref_queries, ref_idx = reference_parse_class_file(path)
    classes = load_class_names(name)
    ours = [(q, k) for k, c in enumerate(classes) for q in split_synonyms(c)]
    # get_cls_idx keeps a trailing space ('wood ' in PC60); the tokenizer gives the same tokens either way
    assert ours == [(q.strip(), k) for q, k in zip(ref_queries, ref_idx)]


def test_background_lines_are_the_references():
    voc21, coco_object, pc60 = (load_class_names(n)[0] for n in ('voc21', 'coco_object', 'pc60'))
    assert 'background' not in split_synonyms(voc21) and len(split_synonyms(voc21)) == 26
    assert 'background' not in split_synonyms(coco_object) and len(split_synonyms(coco_object)) == 17
    assert split_synonyms(pc60) == ['background']
    assert 'sands' in split_synonyms(voc21)


@pytest.mark.parametrize('name', sorted(p.stem for p in CLASS_NAME_DIR.glob('*.txt')))
def test_no_name_in_two_classes(name):
    """Every bundled file: a name in two classes makes one of them unreachable (only the reference's own
    collision is accepted, since the benchmark is defined by that file)."""
    seen, clashes = {}, set()
    for k, cls in enumerate(load_class_names(name)):
        for q in split_synonyms(cls):
            if q in seen and seen[q] != k:
                clashes.add(q)
            seen.setdefault(q, k)
    assert clashes == REFERENCE_COLLISIONS.get(name, set()), f'{name}: {sorted(clashes)} name two classes'


def test_trailing_space_tokenizes_the_same():
    import open_clip
    from declip_mm.models.text.prompts import TEMPLATE_SETS
    tok = open_clip.get_tokenizer('EVA02-B-16')
    prompts = TEMPLATE_SETS['imagenet80']
    assert torch.equal(tok([t.format('wood ') for t in prompts]), tok([t.format('wood') for t in prompts]))
