"""Issue 18 items 10-11: large vocabularies in bounded memory, and two UX fixes.

Item 10: the training-free segmentor scores the text queries in chunks (``TrainingFreeSegmentor.predict``,
``ChunkedClassProbabilities``) and the text encoder encodes the names in chunks; the results equal the unchunked
path's (labels equal, probabilities within 1e-5) on the sample photos with chunks small enough to force several.
Item 11: the configs' ``tools/test.py`` lines run from the repository root; ``--vocab AC/DC`` suggests a spelling
that works.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from declip_mm.apis import OpenVocabSegmenter
from declip_mm.apis.vocabulary import VocabularyError, parse_vocabulary
from declip_mm.models import OpenCLIPTextEncoder
from declip_mm.models.text.text_encoder import ChunkedClassProbabilities, ClassEmbeddings

REPO = Path(__file__).resolve().parents[1]
TINY = 'DeCLIP-Tiny-ViT-16'
# synonyms that straddle the chunk borders of query_chunk=3 (queries 0-2, 3-5, ...)
VOCAB = ['cat; kitten', 'dog', 'sofa; couch; settee', 'person; people', 'car', 'tree; bush', 'sky', 'road',
         'grass', 'water; sea']
PHOTOS = ['2011_000003.jpg', 'chelsea.png', 'coffee.png']


pytestmark = pytest.mark.usefixtures('isolated_declip_cache')   # conftest.py: a fresh $DECLIP_CACHE


def unchunked(model):
    """Make ``model.predict`` the unchunked path: all S query maps (slide or whole), then the softmax over them."""
    def predict(inputs, data_samples=None):
        return model.postprocess_result(model.inference(inputs, [s.metainfo for s in data_samples]), data_samples)
    model.predict = predict


def assert_same_labels(got, want):
    """Labels equal, except at a float tie of the reference (its two best classes within 1e-6: any reordering of
    the float sums may swap them); there are none on these photos today."""
    top2 = np.sort(want.probs, axis=0)[-2:]
    tie = top2[1] - top2[0] < 1e-6
    assert np.array_equal(got.labels[~tie], want.labels[~tie]) and tie.mean() < 1e-4


def chunk_sizes(model):
    """Record the number of queries of every map that :meth:`output_logits` receives."""
    sizes, output_logits = [], model.output_logits

    def recording(cosines, meta):
        sizes.append(cosines.shape[0])
        return output_logits(cosines, meta)
    model.output_logits = recording
    return sizes


@pytest.mark.parametrize('window', [336, 0])
def test_chunked_scoring_equals_the_unchunked_path(sample_root, window):
    """Sliding windows and whole-image: query_chunk=3 (several chunks, synonyms split across them) and the default
    budget (one chunk: the same numbers) against all S query maps at once: labels equal, probabilities within
    1e-5."""
    torch.manual_seed(0)
    seg = OpenVocabSegmenter(TINY, precision='fp32', window=window)
    torch.manual_seed(0)
    reference = OpenVocabSegmenter(TINY, precision='fp32', window=window)
    unchunked(reference.model)
    sizes = chunk_sizes(seg.model)
    queries = sum(len(c.split(';')) for c in VOCAB)
    for name in PHOTOS:
        photo = np.array(Image.open(sample_root / 'photos' / name).convert('RGB'))
        want = reference(photo, VOCAB)
        for chunk in (3, None):
            seg.model.test_cfg['query_chunk'] = chunk
            sizes.clear()
            got = seg(photo, VOCAB)
            assert sizes == ([3] * (queries // 3) + [queries % 3] if chunk else [queries])
            assert got.probs.shape == want.probs.shape == (len(VOCAB), *photo.shape[:2])
            if chunk is None:
                assert np.array_equal(got.probs, want.probs) and np.array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-5)
            assert_same_labels(got, want)
            assert len(np.unique(got.labels)) >= 2                               # not a constant map


def test_chunked_background_threshold(sample_root):
    """With a named background: labels equal except where the best probability is within rounding (1e-5) of the
    threshold, where any float reordering may move a pixel across it (as the batched windows do)."""
    torch.manual_seed(0)
    seg = OpenVocabSegmenter(TINY, precision='fp32', bg_thresh=0.25)
    seg.model.test_cfg['query_chunk'] = 4
    photo = np.array(Image.open(sample_root / 'photos' / '2011_000003.jpg').convert('RGB'))
    got = seg(photo, VOCAB, background='background')
    unchunked(seg.model)
    want = seg(photo, VOCAB, background='background')
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-5)
    near = np.abs(want.probs.max(0) - 0.25) < 1e-5
    assert np.array_equal(got.labels[~near], want.labels[~near])
    assert 0.05 < (want.labels == len(VOCAB)).mean() < 0.95                 # the threshold is active


def test_chunked_class_probabilities_equal_the_softmax():
    """Any chunking and any order of the chunks: the softmax over all S queries, then each class's best query;
    logits over a wide range (no overflow: the running maximum); every query must come exactly once."""
    torch.manual_seed(0)
    class_index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    classes = ClassEmbeddings(torch.randn(9, 4), class_index, list('abcde'))
    logits = torch.randn(9, 6, 7) * 60
    logits[3] += 150                                                        # one query far above the rest
    want = classes.class_probabilities(logits, dim=0)
    for chunks in ([slice(0, 9)], [slice(0, 2), slice(2, 5), slice(5, 9)], [slice(6, 9), slice(0, 1), slice(1, 6)],
                   [slice(i, i + 1) for i in reversed(range(9))]):
        probs = classes.chunked_class_probabilities()
        for queries in chunks:
            probs.add(logits[queries], queries)
        got = probs.result()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        assert torch.equal(got.argmax(0), want.argmax(0))
    probs = ChunkedClassProbabilities(classes)
    probs.add(logits[:4], slice(0, 4))
    with pytest.raises(ValueError, match='4 of the 9 queries'):
        probs.result()
    with pytest.raises(ValueError, match='3 query logits for the 2 queries'):
        probs.add(logits[:3], slice(4, 6))


def test_chunk_size_follows_the_budget():
    torch.manual_seed(0)
    seg = OpenVocabSegmenter(TINY, precision='fp32')
    model = seg.model
    # one query: 4 bytes x (448 x 663 canvas + one 336 x 336 window + 3 x 338 x 500 outputs) = 3.5 MB
    per_query = 4 * (448 * 663 + 336 * 336 + 3 * 338 * 500)
    assert model.queries_per_chunk(1, (448, 663), (336, 336), 338 * 500) == 256 * 2 ** 20 // per_query == 73
    model.test_cfg.update(score_budget_mb=16, query_chunk=None)
    assert model.queries_per_chunk(1, (448, 663), (336, 336), 338 * 500) == 4
    model.test_cfg['score_budget_mb'] = 0.001
    assert model.queries_per_chunk(1, (448, 663), (336, 336), 338 * 500) == 1
    model.test_cfg.update(score_budget_mb=1e6, query_chunk=5)
    assert model.queries_per_chunk(2, (448, 663), (336, 336), 338 * 500) == 5
    for bad in (dict(score_budget_mb=0), dict(score_budget_mb='1'), dict(query_chunk=0), dict(query_chunk=2.5)):
        with pytest.raises(ValueError, match='score_budget_mb|query_chunk'):
            OpenVocabSegmenter(TINY, precision='fp32', test_cfg=dict(mode='whole', **bad))


def test_text_encoding_in_chunks_equals_one_pass(tmp_path):
    """Names encoded ``batch_size`` at a time give the embeddings of one pass over all prompts (bit for bit), go
    into the disk cache, and are not encoded again."""
    names = [f'thing number {i}' for i in range(11)] + ['cat; kitten']
    def encoder(**kwargs):
        torch.manual_seed(0)
        return OpenCLIPTextEncoder(TINY, **kwargs)
    chunked = encoder(embedding_cache=str(tmp_path / 'a'), batch_size=4)
    one_pass = encoder(embedding_cache=False, batch_size=10 ** 4)
    with torch.no_grad():
        got, want = chunked(names), one_pass(names)
        assert torch.equal(got.embeddings, want.embeddings) and got.embeddings.shape == (13, 32)
        assert chunked.num_encoded_prompts == one_pass.num_encoded_prompts == 13 * 80
        prompts = [p for name in ('cat', 'dog') for p in chunked.prompts_for(name)]
        direct = torch.nn.functional.normalize(chunked.clip.encode_text(chunked.tokenizer(prompts)), dim=-1)
        torch.testing.assert_close(chunked.encode_prompts(prompts), direct, rtol=0, atol=1e-6)
    again = encoder(embedding_cache=str(tmp_path / 'a'), batch_size=4)
    assert torch.equal(again(names).embeddings, want.embeddings) and again.num_encoded_prompts == 0


# ------------------------------------------------------------------ item 11


def test_config_test_lines_run_from_the_repository_root():
    """Every ``python tools/test.py CONFIG ...`` in the segmentation configs' headers and docs/evaluation.md names
    a config that exists relative to the repository root (the way the line is run)."""
    found = 0
    for path in [*sorted((REPO / 'configs/segmentation').glob('*.py')), REPO / 'docs/evaluation.md']:
        for config in re.findall(r'python tools/test\.py (\S+)', path.read_text()):
            if config.endswith('.py'):
                found += 1
                assert (REPO / config).is_file(), f'{path.relative_to(REPO)}: {config} does not exist'
    assert found >= 8 + 3


def test_a_class_name_with_a_slash_gets_a_suggestion_that_works(sample_root, tmp_path, capsys):
    """``--vocab AC/DC`` looks like a missing file; the message suggests a spelling, and that spelling is the one
    class 'AC/DC', in Python and on the command line."""
    from declip_mm.cli import main
    with pytest.raises(VocabularyError, match='vocabulary file not found') as err:
        parse_vocabulary('AC/DC')
    suggestion = re.search(r"put a comma after it: '([^']+)'", str(err.value)).group(1)
    assert suggestion == 'AC/DC,'
    vocab = parse_vocabulary(suggestion)
    assert vocab.classes == vocab.names == ['AC/DC']
    assert parse_vocabulary(suggestion, background='background').classes == ['AC/DC', 'background']
    assert parse_vocabulary('cat,dog,').classes == ['cat', 'dog']            # one trailing comma ends the list
    for bad, message in (('cat,,', 'class 2'), (',', 'empty'), ('AC/DC;,', 'empty name')):
        with pytest.raises(VocabularyError, match=message):
            parse_vocabulary(bad)
    one_line = tmp_path / 'bands.txt'
    one_line.write_text('AC/DC,\n')
    assert parse_vocabulary(str(one_line)).classes == ['AC/DC']

    photo = sample_root / 'photos' / 'chelsea.png'
    out = tmp_path / 'o'
    assert main(['segment', str(photo), '--vocab', 'AC/DC', '--out', str(out), '--quiet', '--random-weights']) == 2
    assert "put a comma after it: 'AC/DC,'" in capsys.readouterr().err
    torch.manual_seed(0)
    assert main(['segment', str(photo), '--vocab', suggestion, '--out', str(out), '--quiet', '--random-weights',
                 '--precision', 'fp32']) == 0
    assert json.loads((out / 'chelsea.json').read_text())['class_names'] == ['AC/DC']
