"""OV-LVIS / OV-COCO class names and class-embedding files.

The truth for LVIS is the official annotation files' categories, recorded in
tests/fixtures/reference/lvis_v1_categories.json from detectron2's lvis_v1_categories.py (generated from the
official lvis_v1_val.json; provenance in the file). CLIPSelf's embedding format (F-ViT/tools/
dump_{lvis,coco}_openclip_feature.py @1c7fe9c): a dict name -> (D,) float32 L2-normalised tensor, keys = the
annotation json's categories sorted by id, then 'background'. The OV-COCO split and ids: coco_ov_split.json.
"""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.reference

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / 'tests' / 'fixtures' / 'reference'
TINY = 'DeCLIP-Tiny-EVA02-16'
SPEAKER = 654                                                    # label of category id 655


@pytest.fixture(scope='module')
def lvis_reference():
    return json.loads((FIXTURES / 'lvis_v1_categories.json').read_text())


@pytest.fixture(scope='module')
def official(lvis_reference):
    return [c['name'] for c in lvis_reference['categories']]


def official_layout_json(categories, path: Path) -> Path:
    """An LVIS v1 annotation file in the official layout (what lvis-api's ``LVIS`` and mmdet's ``LVISV1Dataset``
    read): images with coco_url / size / neg_category_ids / not_exhaustive_category_ids, polygon annotations, the
    categories in id order with their counts. Two images; one annotation of 'speaker_(stero_equipment)' (id 655)."""
    anns = [dict(id=1, image_id=1, category_id=655, bbox=[10.0, 20.0, 30.0, 40.0], area=1200.0,
                 segmentation=[[10, 20, 40, 20, 40, 60, 10, 60]]),
            dict(id=2, image_id=2, category_id=1, bbox=[5.0, 5.0, 20.0, 20.0], area=400.0,
                 segmentation=[[5, 5, 25, 5, 25, 25, 5, 25]])]
    counts = {a['category_id']: 1 for a in anns}
    data = dict(
        info=dict(description='test file in the LVIS v1 layout'), licenses=[],
        images=[dict(id=i, coco_url=f'http://images.cocodataset.org/val2017/{i:012d}.jpg', width=64, height=80,
                     license=1, flickr_url='', date_captured='', neg_category_ids=[],
                     not_exhaustive_category_ids=[]) for i in (1, 2)],
        annotations=anns,
        categories=[dict(c, image_count=counts.get(c['id'], 0), instance_count=counts.get(c['id'], 0))
                    for c in categories])
    path.write_text(json.dumps(data))
    return path


def clipself_file(names, dim, path: Path, seed=0) -> Path:
    """A file in CLIPSelf's layout: {name: (D,) float32 unit vector} for the names in order, then 'background'."""
    g = torch.Generator().manual_seed(seed)
    vectors = F.normalize(torch.randn(len(names) + 1, dim, generator=g), dim=-1)
    torch.save({n: v.clone() for n, v in zip(list(names) + ['background'], vectors)}, path)
    return path


def text_classifier(embeddings, class_names, dim):
    """The head's classifier as the configs build it (K + 1 outputs for the K classes of ``class_names``)."""
    from declip_mm.datasets.ov_detection import class_names_from
    from declip_mm.models.detectors import TextEmbeddingClassifier
    return TextEmbeddingClassifier(dim, len(class_names_from(class_names)) + 1, str(embeddings), class_names)


# ----------------------------------------------------------------------------------------------- the reference
def test_fixture_is_the_official_category_list(lvis_reference, official):
    prov = lvis_reference['provenance']
    assert 'facebookresearch/detectron2@' in prov['source'] and 'lvis_v1_val.json' in prov['generated_from']
    cats = lvis_reference['categories']
    assert [c['id'] for c in cats] == list(range(1, 1204)) and len(set(official)) == 1203
    assert {k for c in cats for k in c} == {'id', 'name', 'synonyms', 'frequency'}
    assert [sum(c['frequency'] == f for c in cats) for f in 'rcf'] == [337, 461, 405]
    assert all(c['synonyms'] and isinstance(c['synonyms'], list) for c in cats)
    assert official[SPEAKER] == 'speaker_(stero_equipment)'


def test_our_lvis_names_are_the_official_ones(official):
    from declip_mm.datasets.ov_coco_dataset import OVLVISV1Dataset
    from declip_mm.datasets.ov_detection import class_names_from, lvis_v1
    from declip_mm.models.text.vocabulary import load_class_names
    assert list(lvis_v1()) == official == class_names_from('lvis_v1') == load_class_names('lvis_v1')
    assert list(OVLVISV1Dataset.METAINFO['classes']) == official


def test_every_difference_from_mmdet_lvis_names(lvis_reference, official):
    """mmdet's LVISV1Dataset list against the official names: exactly the recorded differences (mmdet 3.3.0: one)."""
    import mmdet
    from mmdet.datasets import LVISV1Dataset
    theirs = list(LVISV1Dataset.METAINFO['classes'])
    assert len(theirs) == len(official) == 1203
    found = [dict(label=i, id=i + 1, mmdet=a, official=b) for i, (a, b) in enumerate(zip(theirs, official)) if a != b]
    recorded = lvis_reference['provenance']['mmdet_differences']
    if not recorded['mmdet'].startswith(mmdet.__version__ + ','):
        pytest.skip(f'differences recorded for mmdet {recorded["mmdet"]}, installed {mmdet.__version__}: {found}')
    assert found == recorded['differences']
    assert found == [dict(label=654, id=655, mmdet='speaker_(stereo_equipment)', official='speaker_(stero_equipment)')]


# ------------------------------------------------------------------------------------ the annotation file rules
def test_class_names_come_from_the_annotation_file(lvis_reference, official, tmp_path):
    from declip_mm.datasets.ov_detection import build_ov_lvis, class_names_from
    path = official_layout_json(lvis_reference['categories'], tmp_path / 'lvis_v1_val.json')
    assert class_names_from(str(path)) == official
    data = json.loads(path.read_text())
    data['categories'] = data['categories'][::-1]            # listed out of order: names still by id
    (tmp_path / 'reversed.json').write_text(json.dumps(data))
    assert class_names_from(str(tmp_path / 'reversed.json')) == official
    # the category-info list the OV-LVIS converter writes (the LVIS config's class_names and class weights)
    info = build_ov_lvis(json.loads(path.read_text()))['categories']
    (tmp_path / 'info.json').write_text(json.dumps(info))
    assert class_names_from(str(tmp_path / 'info.json')) == official
    (tmp_path / 'bad.json').write_text(json.dumps({'images': []}))
    with pytest.raises(KeyError, match="bad.json has no 'categories'"):
        class_names_from(str(tmp_path / 'bad.json'))


def test_ov_lvis_dataset_reads_the_official_file_and_refuses_other_names(lvis_reference, tmp_path):
    from mmengine.registry import init_default_scope
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    path = official_layout_json(lvis_reference['categories'], tmp_path / 'lvis_v1_val.json')
    dataset = DATASETS.build(dict(type='OVLVISV1Dataset', ann_file=str(path), data_prefix=dict(img=''),
                                  test_mode=True, pipeline=[]))
    assert len(dataset) == 2 and dataset.metainfo['classes'][SPEAKER] == 'speaker_(stero_equipment)'
    first = dataset.get_data_info(0)
    assert [i['bbox_label'] for i in first['instances']] == [SPEAKER] and first['img_path'].endswith('000000000001.jpg')
    assert not hasattr(dataset, 'lvis')                                     # released after loading, as mmdet does
    # mmdet's spelling in the file: refused, naming the file, the label and both names
    cats = [dict(c, name='speaker_(stereo_equipment)') if c['id'] == 655 else c for c in lvis_reference['categories']]
    bad = official_layout_json(cats, tmp_path / 'mmdet_names.json')
    with pytest.raises(ValueError, match=r"mmdet_names.json: label 654 would be the category "
                                         r"'speaker_\(stereo_equipment\)' but classes\[654\] is "
                                         r"'speaker_\(stero_equipment\)'"):
        DATASETS.build(dict(type='OVLVISV1Dataset', ann_file=str(bad), data_prefix=dict(img=''), test_mode=True,
                            pipeline=[]))


# ------------------------------------------------------------------------------------------ embedding files
def test_clipself_lvis_embedding_file_loads_into_the_lvis_head(lvis_reference, official, tmp_path):
    """A file in CLIPSelf's layout (1204 keys: the official names by id, then 'background') loads into the head
    with the LVIS config's class source (the annotation categories) and with 'lvis_v1'; mmdet's names fail
    clearly."""
    from declip_mm.datasets.ov_detection import build_ov_lvis
    path = official_layout_json(lvis_reference['categories'], tmp_path / 'lvis_v1_val.json')
    info = tmp_path / 'lvis_v1_train_cat_norare_info.json'
    info.write_text(json.dumps(build_ov_lvis(json.loads(path.read_text()))['categories']))
    emb = clipself_file(official, 32, tmp_path / 'lvis_with_background_clipself_layout.pt')
    data = torch.load(emb, weights_only=True)
    want = torch.stack(list(data.values()))
    assert list(data)[-1] == 'background' and len(data) == 1204
    for source in (str(info), str(path), 'lvis_v1'):
        head = text_classifier(emb, source, 32)
        assert head.class_names == official
        torch.testing.assert_close(head.text, want)
    from mmdet.datasets import LVISV1Dataset
    with pytest.raises(ValueError) as err:
        text_classifier(emb, list(LVISV1Dataset.METAINFO['classes']), 32)
    msg = str(err.value)
    assert 'lvis_with_background_clipself_layout.pt' in msg and 'class 654' in msg and 'index 654' in msg
    assert "'speaker_(stereo_equipment)'" in msg and "'speaker_(stero_equipment)'" in msg
    # a bare (K + 1, D) tensor has no names: refused, not guessed
    torch.save(want, tmp_path / 'bare.pt')
    with pytest.raises(ValueError, match=r'bare.pt: a bare \(1204, 32\) tensor has no class names'):
        text_classifier(tmp_path / 'bare.pt', 'lvis_v1', 32)


class StubTextEncoder:
    """Stands in for the text tower in the dump tool (1204 names x 63 prompts through even the tiny tower take
    minutes on 2 cores; test_detection's fixture runs the real tower): one seeded vector per name."""

    def __init__(self, dim=32):
        self.dim, self.seen = dim, []

    def embed_synonyms(self, names):
        self.seen = list(names)
        return torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, n))))
                            for n in names])


def test_dump_tool_file_loads_into_the_lvis_head(lvis_reference, official, tmp_path, monkeypatch):
    """The command of the LVIS config comment (--classes the annotation json): the file holds the official names
    + 'background' and loads into the head built as the config builds it."""
    import tools.dump_class_embeddings as dump_tool
    built, stub = [], StubTextEncoder()
    monkeypatch.setattr(dump_tool.MODELS, 'build', lambda cfg: built.append(cfg) or stub)
    path = official_layout_json(lvis_reference['categories'], tmp_path / 'lvis_v1_val.json')
    out = tmp_path / 'lvis_v1_tiny_vild.pt'
    dump_tool.main([str(out), '--model-name', TINY, '--random', '--classes', str(path)])
    assert built[0]['templates'] == 'vild' and stub.seen == official + ['background']
    data = torch.load(out, weights_only=True)
    assert data['names'] == official + ['background'] and data['classes_from'] == str(path)
    assert data['embeddings'].shape == (1204, 32) and data['embeddings'].dtype == torch.float32
    head = text_classifier(out, str(path), 32)
    torch.testing.assert_close(head.text, data['embeddings'])
    torch.testing.assert_close(text_classifier(out, 'lvis_v1', 32).text, data['embeddings'])
    names = list(official)
    names[SPEAKER] = 'speaker_(stereo_equipment)'
    with pytest.raises(ValueError, match=r"lvis_v1_tiny_vild.pt: class 654 is 'speaker_\(stereo_equipment\)' in "
                                         r"class_names .* but the file's names \(1204\) have "
                                         r"'speaker_\(stero_equipment\)' at index 654"):
        text_classifier(out, names, 32)


def test_count_and_subset_rules(tmp_path):
    """Our format must list exactly the classes + background; CLIPSelf's by-name files may hold more (the 81-key
    COCO file serves 65 classes) but not fewer, and the missing name is named with the closest key."""
    from declip_mm.models.detectors.fvit_heads import check_class_embedding_names
    from declip_mm.models.text.embedding_file import save_class_embeddings
    save_class_embeddings(str(tmp_path / 'ours.pt'), ['a', 'b', 'background'], torch.randn(3, 8))
    check_class_embedding_names(str(tmp_path / 'ours.pt'), ['a', 'b'])
    with pytest.raises(ValueError, match=r"class 2 is 'c' in the dataset \(4 names with background\), but the "
                                         r"file's names \(3\) have 'background' at index 2"):
        check_class_embedding_names(str(tmp_path / 'ours.pt'), ['a', 'b', 'c'])
    clipself_file(['cat', 'dog', 'teddy bear'], 8, tmp_path / 'theirs.pt')
    check_class_embedding_names(str(tmp_path / 'theirs.pt'), ['dog', 'cat'])
    with pytest.raises(ValueError, match=r"class 1 is 'teddy_bear' in the dataset .* the file \(4 keys\) has no "
                                         r"key 'teddy_bear' \(closest: 'teddy bear'\)"):
        check_class_embedding_names(str(tmp_path / 'theirs.pt'), ['cat', 'teddy_bear'])


# ----------------------------------------------------------------------------------------------------- OV-COCO
def test_ov_coco_names_split_and_ids_equal_clipself(tmp_path):
    """The 65 / 48 / 17 names (order included) and the category ids against CLIPSelf's lists and the official
    COCO ids; mmdet's 80 COCO names against the official ones (no difference); CLIPSelf's 81-key COCO file
    layout loads into the OV-COCO head for the 65 classes."""
    from mmengine.config import Config
    from declip_mm.datasets.ov_detection import COCO_BASE_48, COCO_NOVEL_17, build_ov_coco, coco_80, ov_coco_65
    ref = json.loads((FIXTURES / 'coco_ov_split.json').read_text())
    assert 'wusize/CLIPSelf@' in ref['provenance']['split'] and 'detectron2@' in ref['provenance']['coco_80']
    official80 = [c['name'] for c in ref['coco_80']]
    assert list(coco_80()) == official80                                   # mmdet 3.3.0 = official
    assert list(ov_coco_65()) == ref['classes_65']
    assert list(COCO_BASE_48) == ref['base_48'] and list(COCO_NOVEL_17) == ref['novel_17']
    cfg = Config.fromfile(str(REPO / 'configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py'))
    assert list(cfg.metainfo.classes) == ref['classes_65'] and list(cfg.metainfo.base_classes) == ref['base_48']
    assert sorted(cfg.metainfo.novel_classes) == sorted(ref['novel_17'])
    # the converter keeps the official ids: an instances json with the official categories
    categories = [dict(id=c['id'], name=c['name'], supercategory='x') for c in ref['coco_80']]
    annotations = [dict(id=k + 1, image_id=1, category_id=c['id'], bbox=[0, 0, 5, 5], area=25, iscrowd=0)
                   for k, c in enumerate(ref['coco_80'])]
    instances = dict(images=[dict(id=1, file_name='a.jpg', width=10, height=10)], annotations=annotations,
                     categories=categories)
    ids = {c['name']: c['id'] for c in ref['coco_80']}
    for split in ('train_seen_2_65_cat', 'val_all_2'):
        out = build_ov_coco(json.loads(json.dumps(instances)), split)
        assert [(c['id'], c['name']) for c in out['categories']] == [(ids[n], n) for n in ref['classes_65']]
    emb = clipself_file(official80, 16, tmp_path / 'coco_with_background_clipself_layout.pt')
    data = torch.load(emb, weights_only=True)
    head = text_classifier(emb, list(cfg.model.roi_head.bbox_head.cls_predictor_cfg.class_names), 16)
    torch.testing.assert_close(head.text, torch.stack([data[n] for n in ref['classes_65'] + ['background']]))
