"""The model zoo (model-index.yml, configs/*/metafile.yml) and README's "Results and models" block: the block is what
tools/model_zoo.py generates, every metafile is imported, every Config exists, every result names its source and
says whether this package reproduced it, and the published numbers agree with the other places the package records
them. Reads YAML and text only (no model is built); well under a second."""
import ast
import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location('model_zoo', REPO / 'tools' / 'model_zoo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zoo_tool = _load_tool()
ZOO = zoo_tool.load_zoo(REPO)
MODELS = [m for _, data in ZOO for m in data['Models']]
RESULTS = [(m['Name'], r) for m in MODELS for r in m['Results']]


def test_metafiles_are_valid():
    assert zoo_tool.validate(REPO) == []


def test_readme_block_is_the_generated_one():
    text = (REPO / 'README.md').read_text(encoding='utf-8')
    assert text.count(zoo_tool.START) == 1 and text.count(zoo_tool.END) == 1
    assert zoo_tool.readme_block(text) == zoo_tool.render(ZOO), 'run: python tools/model_zoo.py --write'
    # after the "Use it on your images" section, before the next one
    assert text.index('## Use it on your images') < text.index(zoo_tool.START) < text.index('## Security')


def test_model_index_imports_every_metafile():
    index = yaml.safe_load((REPO / 'model-index.yml').read_text())
    on_disk = sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').glob('*/metafile.yml'))
    assert sorted(index['Import']) == on_disk
    families = sorted(p.name for p in (REPO / 'configs').iterdir() if p.is_dir() and p.name != '_base_')
    assert on_disk == [f'configs/{f}/metafile.yml' for f in families]


def test_every_config_exists():
    for model in MODELS:
        assert (REPO / model['Config']).is_file(), model['Config']
        for res in model['Results']:
            if 'Test Config' in res:
                assert list(REPO.glob(res['Test Config'])), res['Test Config']


def test_every_result_has_a_source_and_a_reproduced_flag():
    assert RESULTS, 'no published number at all'
    for name, res in RESULTS:
        assert {'Task', 'Dataset', 'Metrics', 'Source', 'Source Checked', 'Reproduced'} <= set(res), name
        assert isinstance(res['Source'], str) and len(res['Source']) > 30, name
        assert isinstance(res['Reproduced'], bool) and isinstance(res['Source Checked'], bool), name
    for model in MODELS:
        assert isinstance(model['Metadata']['Reproduced'], bool), model['Name']
        assert model['Results'] or model['Results Note'], model['Name']


def test_nothing_is_claimed_as_reproduced_yet():
    """No weights were available here: a paper number must never read as ours."""
    assert all(m['Metadata']['Reproduced'] is False for m in MODELS)
    assert all(r['Reproduced'] is False and 'Reproduced Metrics' not in r for _, r in RESULTS)
    block = zoo_tool.render(ZOO)
    assert 'reproduced none' in ' '.join(block.split())
    rows = [line for line in block.splitlines() if line.startswith('| ') and ' | no |' in line]
    assert len(rows) == len(RESULTS)


def test_weights_are_the_authors_links_with_where_they_are_listed():
    weights = {m['Name']: m['Weights'] for m in MODELS if m.get('Weights')}
    assert set(weights.values()) == {
        'https://huggingface.co/xiaomoguhzz/DeCLIP_EVA-B_DINOv2-B_csa_0.05_2.0',
        'https://huggingface.co/xiaomoguhzz/DeCLIP_evab_dinov2B_csa_560_0.25_seg',
        'https://huggingface.co/xiaomoguhzz/CATSeg_DeCLIP_EVA-B_DINOv2-B_csa_0.05_2.0/tree/main',
    }
    for model in MODELS:
        ckpt = model['Checkpoint']
        if model.get('Weights'):
            assert re.search(r'xiaomoguhz/DeCLIP@[0-9a-f]{7}', ckpt['Listed In']), model['Name']
        for key in ('Convert', 'Use'):
            for script in re.findall(r'(tools/\S+\.(?:py|sh))', ckpt.get(key, '')):
                assert (REPO / script).is_file(), script


def _catseg_values_in_eval_benchmarks():
    tree = ast.parse((REPO / 'tools' / 'eval_benchmarks.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'SUITES' for t in node.targets):
            suites = node.value
    catseg = suites.values[[k.value for k in suites.keys].index('catseg')]
    paper = catseg.keywords[[k.arg for k in catseg.keywords].index('paper')].value
    values = paper.keywords[[k.arg for k in paper.keywords].index('values')].value
    return {k.arg: ast.literal_eval(k.value) for k in values.keywords}


def test_numbers_agree_with_the_packages_other_records():
    by_config = {}
    for name, res in RESULTS:
        by_config.setdefault(res.get('Test Config'), []).append(res)
    # CAT-Seg: tools/eval_benchmarks.py's reference row (the DeCLIP_CATSeg README @06262d4)
    for bench, value in _catseg_values_in_eval_benchmarks().items():
        (res,) = by_config[f'configs/catseg/catseg_declip-eva02-b16_test-{bench}.py']
        assert res['Metrics'] == {'mIoU': value} and '06262d4' in res['Source'] and res['Source Checked']
    # F-ViT: docs/detection.md's configs table
    docs = (REPO / 'docs' / 'detection.md').read_text()
    rows = re.findall(r'\| `(configs/detection/\S+\.py)` \|.*\| (?:novel AP50|mask APr) ([\d.]+) \|', docs)
    assert len(rows) == 4
    for config, value in rows:
        (res,) = by_config[config]
        assert list(res['Metrics'].values()) == [float(value)]
    # training-free: tools/eval_training_free.py's docstring
    doc = (REPO / 'tools' / 'eval_training_free.py').read_text()
    cvpr, journal = re.search(r'\(ViT-B/16\): ([\d.]+) \(CVPR DeCLIP\), ([\d.]+) \(journal DeCLIP\)', doc).groups()
    averages = {m['Name']: m['Results'][0]['Metrics']['mIoU'] for m in MODELS
                if m['Name'].startswith('training-free') and m['Results']}
    assert averages == {'training-free_declip-eva02-b16_cvpr': float(cvpr),
                        'training-free_declip-eva02-b16_journal': float(journal)}


def _mini_repo(tmp_path: Path) -> Path:
    (tmp_path / 'configs' / 'fam').mkdir(parents=True)
    (tmp_path / 'configs' / '_base_').mkdir()
    (tmp_path / 'configs' / 'fam' / 'a.py').write_text('x = 1\n')
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'fam.md').write_text('# fam\n')
    (tmp_path / 'model-index.yml').write_text('Import:\n  - configs/fam/metafile.yml\n')
    (tmp_path / 'README.md').write_text(f'# x\n\n## Use it\n\n{zoo_tool.START}\nold\n{zoo_tool.END}\n\n## Next\n')
    meta = {
        'Collections': [{'Name': 'Fam', 'Metadata': {'Training Data': 'none'},
                         'Paper': {'Title': 'P', 'URL': 'https://arxiv.org/abs/0000.00000'},
                         'README': 'docs/fam.md', 'Code': {'URL': 'configs/fam/a.py', 'Version': 'x'}}],
        'Models': [{'Name': 'a', 'In Collection': 'Fam', 'Config': 'configs/fam/a.py',
                    'Metadata': {'Reproduced': False},
                    'Results': [{'Task': 'Semantic Segmentation', 'Dataset': 'D', 'Metrics': {'mIoU': 1.5},
                                 'Source': 'somewhere@abc1234, README.md, table', 'Source Checked': True,
                                 'Reproduced': False}],
                    'Checkpoint': {'Hosted': 'not released', 'Use': 'python tools/test.py configs/fam/a.py X'}}]}
    (tmp_path / 'configs' / 'fam' / 'metafile.yml').write_text(yaml.safe_dump(meta, sort_keys=False))
    return tmp_path


def test_check_and_write_replace_only_the_block(tmp_path, capsys):
    repo = _mini_repo(tmp_path)
    assert zoo_tool.main(['--check', '--repo', str(repo)]) == 1
    assert zoo_tool.main(['--write', '--repo', str(repo)]) == 0
    text = (repo / 'README.md').read_text()
    assert text.startswith('# x\n\n## Use it\n\n<!-- model-zoo:start -->\n## Results and models')
    assert text.endswith(f'{zoo_tool.END}\n\n## Next\n') and 'old' not in text
    assert '| a | [a.py](configs/fam/a.py) | D | mIoU 1.5 |' in text
    assert zoo_tool.main(['--check', '--repo', str(repo)]) == 0
    assert zoo_tool.main(['--write', '--repo', str(repo)]) == 0 and (repo / 'README.md').read_text() == text


@pytest.mark.parametrize('breakage, message', [
    (lambda m: m['Models'][0]['Results'][0].pop('Source'), 'no Source'),
    (lambda m: m['Models'][0]['Results'][0].pop('Reproduced'), 'Reproduced (true/false) is missing'),
    (lambda m: m['Models'][0]['Results'][0].update(Reproduced=True), 'no Reproduced Metrics'),
    (lambda m: m['Models'][0].update(Config='configs/fam/missing.py'), 'does not exist'),
    (lambda m: m['Models'][0]['Metadata'].pop('Reproduced'), 'Metadata.Reproduced'),
    (lambda m: m['Models'][0].update(Results=[]), 'no Results Note'),
    (lambda m: m['Models'][0].update(Weights='https://example.org/w.pth'), 'Listed In'),
    (lambda m: m['Models'][0]['Results'][0]['Metrics'].update(mIoU='12'), 'mapping of numbers'),
])
def test_validate_names_each_problem(tmp_path, breakage, message):
    repo = _mini_repo(tmp_path)
    assert zoo_tool.validate(repo) == []
    path = repo / 'configs' / 'fam' / 'metafile.yml'
    meta = yaml.safe_load(path.read_text())
    breakage(meta)
    path.write_text(yaml.safe_dump(meta, sort_keys=False))
    errors = zoo_tool.validate(repo)
    assert any(message in e for e in errors), errors
    assert zoo_tool.main(['--check', '--repo', str(repo)]) == 1


def test_validate_finds_an_unimported_metafile_and_a_family_without_one(tmp_path):
    repo = _mini_repo(tmp_path)
    shutil.copytree(repo / 'configs' / 'fam', repo / 'configs' / 'other')
    (repo / 'configs' / 'third').mkdir()
    errors = zoo_tool.validate(repo)
    assert any('configs/other/metafile.yml is not imported' in e for e in errors)
    assert any('configs/third: no metafile.yml' in e for e in errors)
