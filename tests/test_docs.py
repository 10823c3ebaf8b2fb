"""The documentation is self-contained: every relative link in README.md and docs/*.md reaches a file of the
repository (and, for a ``#section`` of a markdown page, one of its headings), and no file points at the team's
planning notes outside the repository, which readers of this repository do not have. Reads text only; well under
a second."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
# the planning notes' file names, assembled so that this file does not name them itself
OUTSIDE_NOTES = [name.encode() + b'.md' for name in ('METHOD', 'DOWNSTREAM')]
SKIPPED_DIRS = {'.git', '.venv', 'data', 'work_dirs', 'outputs', '__pycache__', 'declip_mm.egg-info'}

FENCE = re.compile(r'^(```|~~~).*?^\1', re.S | re.M)
CODE_SPAN = re.compile(r'`[^`\n]*`')
LINK = re.compile(r'!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
EXTERNAL = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)           # http:, https:, mailto:, ...


def repository_files():
    """Tracked and untracked, not ignored files; a walk of the tree where git is not available."""
    try:
        out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                             capture_output=True, check=True, timeout=30).stdout
        return [REPO / name for name in out.decode().split('\0') if name]
    except (OSError, subprocess.SubprocessError):
        return [p for p in REPO.rglob('*') if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(REPO).parts)]


def links(page: Path):
    """(line number, target) of every markdown link outside code blocks and code spans."""
    text = FENCE.sub(lambda m: '\n' * m.group(0).count('\n'), page.read_text(encoding='utf-8'))
    for number, line in enumerate(text.splitlines(), 1):
        for match in LINK.finditer(CODE_SPAN.sub('', line)):
            yield number, match.group(1)


def anchors(page: Path):
    """GitHub's heading anchors of a markdown page: lower case, punctuation dropped, spaces -> '-', repeats -1, -2."""
    text = FENCE.sub('', page.read_text(encoding='utf-8'))
    seen, found = {}, set()
    for heading in re.findall(r'^#{1,6}\s+(.+?)\s*#*\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f'{slug}-{count}')
    return found


@pytest.mark.parametrize('page', PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve(page):
    broken = []
    for number, target in links(page):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition('#')
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f'{page.relative_to(REPO)}:{number}: {target} (no such file)')
        elif anchor and resolved.suffix == '.md' and anchor.lower() not in anchors(resolved):
            broken.append(f'{page.relative_to(REPO)}:{number}: {target} (no such heading)')
    assert not broken, '\n'.join(broken)


def test_no_file_points_outside_the_repository():
    pointing = []
    for path in repository_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        for name in OUTSIDE_NOTES:
            start = data.find(name)
            while start >= 0:
                line = data.count(b'\n', 0, start) + 1
                pointing.append(f'{path.relative_to(REPO)}:{line}: {name.decode()}')
                start = data.find(name, start + 1)
    assert not pointing, ('these files point at notes outside the repository; state the fact, or point at '
                          'docs/method.md or another page of docs/:\n' + '\n'.join(pointing))
