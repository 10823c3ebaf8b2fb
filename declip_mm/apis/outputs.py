"""``OutputFolder``: where a ``declip-mm`` run writes its results, without ever losing a user's file.

* The folder is checked before any model is built (:func:`check_output_folder`): a path that is a file, lies under
  a file or cannot be written is an :class:`OutputError`.
* Each result is written atomically (a temporary name, then renamed), and ``summary.json`` is rewritten after every
  input. It lists every file this tool wrote in the folder, so the folder's own record says which files are ours.
* A file that exists and that this tool did not write in this folder (per ``summary.json``) is never replaced:
  :meth:`OutputFolder.claim` raises :class:`OutputError` (``overwrite=True``, the ``--overwrite`` flag, allows it).
* Earlier runs' entries are kept: ``summary.json`` merges by input (source file and frame); a re-run replaces the
  entry of an input it processes again, and ``finished(source)`` tells ``--skip-existing`` what is done.
* The files of earlier runs are never taken as inputs (:meth:`OutputFolder.own_files`).
"""
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

SUMMARY = 'summary.json'


class OutputError(Exception):
    """The output folder cannot be used as asked; the message names the path and what to do."""


def check_output_folder(out: Path) -> None:
    """Create ``out`` if needed and check that it is a writable folder (:class:`OutputError` otherwise)."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = 'is a file' if parent == out else f'lies under {parent}, which is a file'
            raise OutputError(f'--out {out} {where}: give a folder')
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix='.declip-mm-write-test-'):
            pass
    except OSError as err:
        raise OutputError(f'--out {out}: cannot write there ({err.strerror or err})') from None


def _key(entry: dict) -> Tuple[str, Optional[int]]:
    return str(entry.get('source')), entry.get('frame')


class OutputFolder:
    """A run's output folder (module doc). ``settings`` go into ``summary.json`` as this run's."""

    def __init__(self, out: Path, command: str, settings: dict, overwrite: bool = False):
        check_output_folder(out)
        self.out, self.command, self.overwrite = out, command, overwrite
        previous = self._read_previous()
        self._entries: Dict[Tuple[str, Optional[int]], dict] = {_key(e): e for e in previous.get('processed', [])}
        self._skips: Dict[str, dict] = {str(s.get('source')): s for s in previous.get('skipped', [])
                                        if isinstance(s, dict)}
        self._owned: Set[str] = {SUMMARY}
        for entry in self._entries.values():
            self._owned.update(self._names(entry))
        self.summary = dict(command=command, settings=settings, processed=[], skipped=[])
        self.processed_now, self.skipped_now = 0, 0

    # ------------------------------------------------------------------ what is ours
    def _read_previous(self) -> dict:
        path = self.out / SUMMARY
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get('processed'), list):
            if self.overwrite:
                return {}
            raise OutputError(f'{path} exists but was not written by declip-mm; not replaced (choose another '
                              '--out, or pass --overwrite)')
        if data.get('command') not in (None, self.command):
            raise OutputError(f"{self.out} holds the results of 'declip-mm {data.get('command')}'; write "
                              f"'{self.command}' results to another --out")
        return data

    @staticmethod
    def _names(entry: dict) -> List[str]:
        files = entry.get('files') or {}
        return [Path(p).name for p in files.values() if isinstance(p, str)] + \
               ([f"{entry['name']}.json"] if 'name' in entry else [])

    def own_files(self) -> Set[Path]:
        """The files in the folder this tool wrote (earlier runs included), resolved."""
        return {(self.out / name).resolve() for name in self._owned}

    def claim(self, names: Iterable[str]) -> None:
        """Raise :class:`OutputError` if writing ``names`` would replace a file this tool did not write here."""
        if self.overwrite:
            return
        foreign = [n for n in names if n not in self._owned and (self.out / n).exists()]
        if foreign:
            raise OutputError(f"{self.out} already holds {', '.join(foreign[:4])}"
                              f"{' ...' if len(foreign) > 4 else ''}, not written by declip-mm; not replaced "
                              '(choose another --out, or pass --overwrite)')

    def finished(self, source: str, frame: Optional[int] = None) -> bool:
        """True when an earlier run processed ``source`` (``frame``) and all its files are still there."""
        entry = self._entries.get((str(source), frame))
        return entry is not None and all((self.out / n).is_file() for n in self._names(entry))

    # ------------------------------------------------------------------ writing
    def _atomic(self, name: str, write: Callable[[Path], None]) -> str:
        self.claim([name])
        final = self.out / name
        tmp = final.with_name(f'.{final.name}.tmp{os.getpid()}')
        try:
            write(tmp)
            tmp.replace(final)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._owned.add(name)
        return str(final)

    def image(self, name: str, pil_image) -> str:
        return self._atomic(name, lambda p: pil_image.save(p, format='PNG'))

    def json(self, name: str, data) -> str:
        return self._atomic(name, lambda p: p.write_text(json.dumps(data, indent=1)))

    def array(self, name: str, array, fmt: str) -> str:
        import torch
        if fmt == 'npy':
            data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)

            def save(p):
                with open(p, 'wb') as f:
                    np.save(f, data)
            return self._atomic(f'{name}.npy', save)
        tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))
        return self._atomic(f'{name}.pt', lambda p: torch.save(tensor.contiguous(), p))

    def done(self, entry: dict) -> None:
        self._entries[_key(entry)] = entry
        self._skips.pop(str(entry.get('source')), None)
        self.processed_now += 1
        self.flush()

    def skip(self, source: str, reason: str) -> None:
        self._skips[str(source)] = dict(source=str(source), reason=reason)
        self.skipped_now += 1
        self.flush()

    def flush(self) -> None:
        s = self.summary
        s['processed'], s['skipped'] = list(self._entries.values()), list(self._skips.values())
        s['counts'] = dict(processed=len(s['processed']), skipped=len(s['skipped']),
                           processed_this_run=self.processed_now, skipped_this_run=self.skipped_now)
        self.json(SUMMARY, s)
