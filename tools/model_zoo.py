"""Check the model zoo (model-index.yml, configs/*/metafile.yml) and generate README's "Results and models" block.

The metafiles follow OpenMMLab's model-index schema (what `mim` reads); the README block is generated from them.

    python tools/model_zoo.py            # check the metafiles and print the generated block
    python tools/model_zoo.py --check    # also exit 1 when README.md's block differs from the generated one
    python tools/model_zoo.py --write    # rewrite README.md between <!-- model-zoo:start --> and <!-- model-zoo:end -->

Every number in the metafiles is a published one (authors' README or paper) with its source; this package has
reproduced none of them yet, and each Results entry and each model says so (`Reproduced: false`). Beside the
schema's keys (Collections: Name, Metadata, Paper, README, Code; Models: Name, In Collection, Config, Metadata,
Results with Task / Dataset / Metrics, Weights) the files carry: per result `Source`, `Source Checked` (the number
was read at that source by whoever recorded it) and `Reproduced`, optionally `Test Config` (a path or a glob);
per model `Metadata.Reproduced`, `Results Note` (why no number is listed) and `Checkpoint` (`Hosted`, and for a
released file `Name` / `Listed In`; `Convert` / `Use` commands; `Note`). Only PyYAML and the standard library are used.
"""
import argparse
import difflib
import glob
import sys
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
INDEX = 'model-index.yml'
README = 'README.md'
START = '<!-- model-zoo:start -->'
END = '<!-- model-zoo:end -->'
SECTION_ORDER = ['distill', 'segmentation', 'region_classification', 'detection', 'catseg']


class ZooError(Exception):
    pass


def _load_yaml(path: Path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def load_zoo(repo: Path = REPO):
    """[(metafile path relative to repo, {'Collections': [...], 'Models': [...]}), ...] in model-index.yml's order."""
    index = _load_yaml(repo / INDEX)
    if not isinstance(index, dict) or not isinstance(index.get('Import'), list):
        raise ZooError(f'{INDEX}: expected a mapping with an Import list')
    zoo = []
    for rel in index['Import']:
        path = repo / rel
        if not path.is_file():
            raise ZooError(f'{INDEX}: imports {rel}, which does not exist')
        zoo.append((rel, _load_yaml(path) or {}))
    return zoo


def _exists(repo: Path, rel) -> bool:
    if not isinstance(rel, str) or not rel:
        return False
    if any(c in rel for c in '*?['):
        return bool(glob.glob(str(repo / rel)))
    return (repo / rel).exists()


def _is_url(value) -> bool:
    return isinstance(value, str) and value.startswith('https://')


def validate(repo: Path = REPO):
    """Every problem of the index and metafiles, as one line each (empty: all good)."""
    errors = []
    try:
        zoo = load_zoo(repo)
    except (ZooError, OSError, yaml.YAMLError) as err:
        return [str(err)]
    listed = [rel for rel, _ in zoo]
    on_disk = sorted(str(p.relative_to(repo)) for p in (repo / 'configs').glob('*/metafile.yml'))
    for rel in on_disk:
        if rel not in listed:
            errors.append(f'{INDEX}: {rel} is not imported')
    if len(set(listed)) != len(listed):
        errors.append(f'{INDEX}: a metafile is imported twice')
    for family in sorted(p.name for p in (repo / 'configs').iterdir() if p.is_dir() and p.name != '_base_'):
        if f'configs/{family}/metafile.yml' not in on_disk:
            errors.append(f'configs/{family}: no metafile.yml')
    names = set()
    for rel, data in zoo:
        where = rel
        if not isinstance(data, dict) or set(data) - {'Collections', 'Models'}:
            errors.append(f'{where}: top level must be Collections and Models only')
            continue
        collections = data.get('Collections') or []
        col_names = set()
        for col in collections:
            name = col.get('Name')
            col_names.add(name)
            for key in ('Name', 'Metadata', 'Paper', 'README', 'Code'):
                if not col.get(key):
                    errors.append(f'{where}: collection {name!r} has no {key}')
            paper = col.get('Paper') or {}
            if not (paper.get('Title') and _is_url(paper.get('URL'))):
                errors.append(f'{where}: collection {name!r}: Paper needs Title and an https URL')
            if col.get('README') and not _exists(repo, col['README']):
                errors.append(f'{where}: collection {name!r}: README {col["README"]} does not exist')
            code = (col.get('Code') or {}).get('URL')
            if code and not _is_url(code) and not _exists(repo, code):
                errors.append(f'{where}: collection {name!r}: Code URL {code} does not exist')
        models = data.get('Models') or []
        if not models:
            errors.append(f'{where}: no Models')
        for model in models:
            name = model.get('Name')
            at = f'{where}: model {name!r}'
            if not name:
                errors.append(f'{where}: a model has no Name')
            elif name in names:
                errors.append(f'{at}: the name is used twice')
            names.add(name)
            if model.get('In Collection') not in col_names:
                errors.append(f'{at}: In Collection {model.get("In Collection")!r} is not a collection of {where}')
            if not _exists(repo, model.get('Config')):
                errors.append(f'{at}: Config {model.get("Config")} does not exist')
            meta = model.get('Metadata')
            if not isinstance(meta, dict) or not isinstance(meta.get('Reproduced'), bool):
                errors.append(f'{at}: Metadata.Reproduced (true/false) is missing')
            results = model.get('Results')
            if not isinstance(results, list):
                errors.append(f'{at}: Results must be a list (empty when no number is published)')
                results = []
            if not results and not model.get('Results Note'):
                errors.append(f'{at}: no Results and no Results Note saying why')
            for i, res in enumerate(results):
                rat = f'{at} result {i}'
                for key in ('Task', 'Dataset'):
                    if not isinstance(res.get(key), str) or not res.get(key):
                        errors.append(f'{rat}: {key} missing')
                metrics = res.get('Metrics')
                if not isinstance(metrics, dict) or not metrics or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
                    errors.append(f'{rat}: Metrics must be a non-empty mapping of numbers')
                if not isinstance(res.get('Source'), str) or len(res['Source'].strip()) < 10:
                    errors.append(f'{rat}: no Source')
                for key in ('Source Checked', 'Reproduced'):
                    if not isinstance(res.get(key), bool):
                        errors.append(f'{rat}: {key} (true/false) is missing')
                if res.get('Reproduced') is True and not res.get('Reproduced Metrics'):
                    errors.append(f'{rat}: Reproduced is true but no Reproduced Metrics (ours) are given')
                if res.get('Reproduced') is True and isinstance(meta, dict) and meta.get('Reproduced') is False:
                    errors.append(f'{rat}: Reproduced is true but the model says Metadata.Reproduced false')
                if 'Test Config' in res and not _exists(repo, res['Test Config']):
                    errors.append(f'{rat}: Test Config {res["Test Config"]} does not exist')
            if isinstance(meta, dict) and meta.get('Reproduced') is True and not any(
                    r.get('Reproduced') is True for r in results):
                errors.append(f'{at}: Metadata.Reproduced is true but no result is')
            ckpt = model.get('Checkpoint')
            if not isinstance(ckpt, dict) or not ckpt.get('Hosted') or not ckpt.get('Use'):
                errors.append(f'{at}: Checkpoint needs Hosted and Use')
                ckpt = {}
            weights = model.get('Weights')
            if weights is not None:
                if not _is_url(weights):
                    errors.append(f'{at}: Weights must be an https URL as the authors give it')
                if not (ckpt.get('Name') and ckpt.get('Listed In')):
                    errors.append(f'{at}: Weights given without Checkpoint Name and Listed In (where the link is from)')
                if ckpt.get('Hosted') != weights:
                    errors.append(f'{at}: Checkpoint Hosted differs from Weights')
    return errors


def _cell(value) -> str:
    text = ' '.join(str(value).split())
    return text.replace('|', '\\|')


def _number(value) -> str:
    return f'{value}'


def _config_link(rel: str) -> str:
    if any(c in rel for c in '*?['):
        return f'`{rel}`'
    return f'[{Path(rel).name}]({rel})'


def _family(rel: str) -> str:
    return Path(rel).parent.name


def render(zoo) -> str:
    """The README block (markers included) for the loaded zoo."""
    intro = (
        'Generated from [model-index.yml](model-index.yml) and `configs/*/metafile.yml` (OpenMMLab\'s model-index '
        'schema, as `mim` reads it) by `python tools/model_zoo.py --write`; a test keeps this block and the metafiles '
        'equal. **Every number here is published by the authors, with its source; this package has reproduced none '
        'of them yet** (no weights were available where it was built), which the last column and `Reproduced: false` '
        'in the metafiles say. "read at source": the number was read in the file named; "not re-read": recorded from '
        'the paper, whose tables could not be read again here. Checkpoints are listed as the authors\' READMEs or '
        'issues give them; none is hosted by this package.')
    lines = [START, '## Results and models', '', *textwrap.wrap(intro, 118, break_on_hyphens=False,
                                                                 break_long_words=False)]
    order = {name: i for i, name in enumerate(SECTION_ORDER)}
    for rel, data in sorted(zoo, key=lambda item: order.get(_family(item[0]), len(order))):
        for col in data.get('Collections') or []:
            models = [m for m in data.get('Models') or [] if m.get('In Collection') == col.get('Name')]
            readme = col.get('README')
            lines += ['', f'### {col["Name"]}', '',
                      f'`{Path(rel).parent}/` · [{Path(readme).name}]({readme}) · paper: '
                      f'[{_cell(col["Paper"]["Title"])}]({col["Paper"]["URL"]}) · metafile: [{Path(rel).name}]({rel})',
                      '',
                      '| model | config | benchmark | published | source | reproduced here |',
                      '|---|---|---|---|---|---|']
            for m in models:
                results = m.get('Results') or []
                if not results:
                    lines.append(f'| {_cell(m["Name"])} | {_config_link(m["Config"])} | – | none recorded | '
                                 f'{_cell(m.get("Results Note", ""))} | – |')
                previous = None
                for res in results:
                    metrics = ', '.join(f'{k} {_number(v)}' for k, v in res['Metrics'].items())
                    checked = 'read at source' if res['Source Checked'] else 'not re-read'
                    source = (f'{_cell(res["Source"])} ({checked})' if (res['Source'], checked) != previous
                              else 'as above')
                    previous = (res['Source'], checked)
                    test = res.get('Test Config')
                    bench = _cell(res['Dataset']) + (f' ({_config_link(test)})' if test and test != m['Config']
                                                     else '')
                    ours = (', '.join(f'{k} {_number(v)}' for k, v in res['Reproduced Metrics'].items())
                            if res['Reproduced'] else 'no')
                    lines.append(f'| {_cell(m["Name"])} | {_config_link(m["Config"])} | {bench} | {metrics} | '
                                 f'{source} | {ours} |')
            lines += ['', '| model | checkpoint (as the authors host it) | convert / use here |', '|---|---|---|']
            for m in models:
                ckpt = m.get('Checkpoint') or {}
                if m.get('Weights'):
                    where = f'[{_cell(ckpt["Name"])}]({m["Weights"]}) (listed in {_cell(ckpt["Listed In"])})'
                else:
                    where = _cell(ckpt.get('Hosted', ''))
                    if ckpt.get('Listed In'):
                        where += f' (listed in {_cell(ckpt["Listed In"])})'
                if ckpt.get('Note'):
                    where += f'. {_cell(ckpt["Note"])}'
                steps = [f'`{_cell(ckpt[k])}`' if ckpt[k].split()[0] in ('python', 'bash') else _cell(ckpt[k])
                         for k in ('Convert', 'Use') if ckpt.get(k)]
                lines.append(f'| {_cell(m["Name"])} | {where} | {"; ".join(steps)} |')
    lines.append(END)
    return '\n'.join(lines) + '\n'


def readme_block(text: str):
    """The README's block between the markers, markers included (None when the markers are missing)."""
    start = text.find(START)
    end = text.find(END, start + 1)
    if start < 0 or end < 0:
        return None
    return text[start:end + len(END)] + '\n'


def replace_block(text: str, block: str) -> str:
    start = text.find(START)
    end = text.find(END, start + 1)
    if start < 0 or end < 0:
        raise ZooError(f'{README}: the markers {START} ... {END} are missing')
    after = text[end + len(END):]
    return text[:start] + block.rstrip('\n') + after


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument('--check', action='store_true', help='exit 1 if README.md\'s block is not the generated one')
    action.add_argument('--write', action='store_true', help='rewrite README.md\'s block')
    parser.add_argument('--repo', default=str(REPO), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repo = Path(args.repo)
    errors = validate(repo)
    if errors:
        print('model_zoo: the metafiles have problems:', *errors, sep='\n  ', file=sys.stderr)
        return 1
    block = render(load_zoo(repo))
    readme = repo / README
    text = readme.read_text(encoding='utf-8')
    if args.write:
        try:
            new = replace_block(text, block)
        except ZooError as err:
            print(f'model_zoo: {err}', file=sys.stderr)
            return 1
        if new != text:
            readme.write_text(new, encoding='utf-8')
            print(f'model_zoo: {README} updated')
        else:
            print(f'model_zoo: {README} already up to date')
        return 0
    if args.check:
        current = readme_block(text)
        if current != block:
            print(f'model_zoo: {README}\'s block differs from the metafiles; run python tools/model_zoo.py --write',
                  file=sys.stderr)
            sys.stderr.writelines(difflib.unified_diff((current or '').splitlines(True), block.splitlines(True),
                                                       f'{README} (current)', 'generated'))
            return 1
        print(f'model_zoo: {README} matches the metafiles')
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == '__main__':
    sys.exit(main())
