"""Class-name text embeddings (templates, synonyms, batching, cache)."""
import pytest
import torch
import torch.nn.functional as F

from declip_mm.models import OpenCLIPTextEncoder
from declip_mm.models.text import TEMPLATE_SETS, split_synonyms


def make_encoder(tmp_path, seed=0, **kwargs):
    torch.manual_seed(seed)
    return OpenCLIPTextEncoder('DeCLIP-Tiny-ViT-16', embedding_cache=str(tmp_path / 'cache'), **kwargs)


def test_templates_and_synonyms_match_direct_encoding(tmp_path):
    enc = make_encoder(tmp_path, batch_size=7)
    assert len(TEMPLATE_SETS['imagenet80']) == 80 and 'a photo of a {}.' in TEMPLATE_SETS['imagenet80']
    ce = enc(['sofa; couch', 'cat'])
    assert ce.embeddings.shape == (3, 32) and ce.class_index.tolist() == [0, 0, 1]
    # independent: tokenize each prompt, encode one by one, average the normalised embeddings
    with torch.no_grad():
        for row, name in enumerate(['sofa', 'couch', 'cat']):
            tokens = enc.tokenizer([t.format(name) for t in TEMPLATE_SETS['imagenet80']])
            want = F.normalize(F.normalize(enc.clip.encode_text(tokens), dim=-1).mean(0), dim=-1)
            torch.testing.assert_close(ce.embeddings[row], want, atol=1e-5, rtol=0)
    feats = F.normalize(torch.randn(4, 32), dim=-1)
    logits = ce.logits(feats, scale=40.)
    sims = feats @ ce.embeddings.t()
    torch.testing.assert_close(logits[:, 0], 40 * torch.maximum(sims[:, 0], sims[:, 1]))
    torch.testing.assert_close(logits[:, 1], 40 * sims[:, 2])
    dense = F.normalize(torch.randn(2, 32, 3, 5), dim=1)
    maps = ce.logits_map(dense)
    assert maps.shape == (2, 2, 3, 5)
    torch.testing.assert_close(maps[1, :, 2, 4], ce.logits(dense[1, :, 2, 4]))


def test_mean_reduction_averages_synonym_embeddings(tmp_path):
    max_enc = make_encoder(tmp_path)
    mean_enc = make_encoder(tmp_path, synonym_reduce='mean')
    per_syn = max_enc(['sofa; couch']).embeddings
    ce = mean_enc(['sofa; couch'])
    assert ce.embeddings.shape == (1, 32)
    torch.testing.assert_close(ce.embeddings[0], F.normalize(per_syn.mean(0), dim=0), atol=1e-6, rtol=0)


def test_cache_hits_and_keys(tmp_path):
    enc = make_encoder(tmp_path, templates=['a photo of a {}.', 'a {}'])
    first = enc(['cat', 'dog; puppy']).embeddings
    assert enc.num_encoded_prompts == 6 and enc.cache_file.is_file()
    same = make_encoder(tmp_path, templates=['a photo of a {}.', 'a {}'])   # same weights and templates
    again = same(['dog; puppy', 'cat', 'bird']).embeddings
    assert same.num_encoded_prompts == 2                                     # only 'bird' was new
    torch.testing.assert_close(again[:2], first[1:], rtol=0, atol=0)
    torch.testing.assert_close(again[2], first[0], rtol=0, atol=0)
    other_templates = make_encoder(tmp_path, templates=['{}'])
    other_weights = make_encoder(tmp_path, seed=1, templates=['a photo of a {}.', 'a {}'])
    assert len({enc.cache_file, other_templates.cache_file, other_weights.cache_file}) == 3
    no_cache = OpenCLIPTextEncoder('DeCLIP-Tiny-ViT-16', embedding_cache=False, templates='none')
    no_cache(['cat'])
    assert no_cache.cache_file is None


def test_many_classes_are_batched(tmp_path):
    enc = make_encoder(tmp_path, templates='none', batch_size=256)
    calls = []
    original = enc.clip.encode_text
    enc.clip.encode_text = lambda tokens: calls.append(len(tokens)) or original(tokens)
    ce = enc([f'class {i}' for i in range(1100)])
    assert ce.embeddings.shape == (1100, 32)
    assert calls == [256, 256, 256, 256, 76]


def test_bad_names_and_templates(tmp_path):
    with pytest.raises(ValueError, match="empty class name ' ; '"):
        split_synonyms(' ; ')
    with pytest.raises(ValueError, match='has no {} for the class name'):
        make_encoder(tmp_path, templates=['a photo'])
    with pytest.raises(ValueError, match='synonym_reduce'):
        make_encoder(tmp_path, synonym_reduce='min')
