"""The images ``poundcam analyze`` reads: the files and folders named on its command line,
walked and checked by the one rule of the local store.

The rule is the same for files and folders, whether named on the command line or found in a
walked folder: a path is resolved to its real path (symlinks followed, ``..`` removed), and it
is read only if that real path lies under an allowed root. The check is
:meth:`poundcam.storage.LocalStore.path`, the one every local read makes. The allowed roots
are ``POUNDCAM_ALLOWED_ROOTS`` when it is set; unset, the real path of each file and folder
given (:func:`default_roots`). A path that fails the check is skipped with its code and
reason, never read. Each real file is listed once, each skipped path once.

A walked folder's files whose names lack an image suffix (IMAGE_SUFFIXES) are not read either,
by design rather than by refusal: they are not "skipped" (a skipped path makes ``analyze``
exit 1), but listed apart (``Inputs.other_files``) and counted in one line on stderr, so that a
reviewer sees that a folder held more than was read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import ErrorCode
from ..storage import LocalStore, StorageError, make_store

# A walked folder's files with these suffixes are analysed; a file named on the command line
# is analysed whatever its name.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
OTHER_FILES_SHOWN = 3  # the other files named in the stderr line; the rest are counted


@dataclass(frozen=True)
class Skipped:
    """A path that is not analysed: its error code and the reason."""

    path: str
    code: ErrorCode
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code.value, "reason": self.reason}


@dataclass
class Inputs:
    """What a command line names: the real paths to analyse, in walk order, the skipped, and
    the walked folders' files not read for their names (as found, in walk order)."""

    files: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)


def default_roots(paths: Iterable[str], settings) -> tuple[str, ...]:
    """The allowed roots when ``POUNDCAM_ALLOWED_ROOTS`` is unset: the real path of each file
    and folder given (parsed and resolved by the local store of ``settings``, the embedded
    mode's). A path the store cannot parse gives no root; :func:`collect` reports it."""
    anywhere = make_store(settings, allowed_roots=("/",))
    assert isinstance(anywhere, LocalStore), "the embedded mode's settings (local_root set)"
    roots = []
    for raw in paths:
        try:
            roots.append(str(anywhere.path(raw)))
        except StorageError:
            continue
    return tuple(dict.fromkeys(roots))


def collect(
    paths: Iterable[str], store: LocalStore, outputs: Iterable[Path] = (), command: str | None = "analyze"
) -> Inputs:
    """The files to analyse and the paths skipped, checked by ``store`` (its read roots).

    Folders in ``outputs`` (the command's own output folder) are not walked into, so a second
    run over a folder that holds the first run's output does not analyse its heatmaps; named
    on the command line they are walked as any other. When a walked folder holds files without
    an image suffix, ``poundcam COMMAND:`` prints :func:`other_files_line` on stderr (``command``
    None: nothing is printed)."""
    walk = _Walk(store, {Path(p).resolve() for p in outputs})
    for raw in paths:
        walk.visit(raw, given=True)
    if command is not None and walk.inputs.other_files:
        print(f"poundcam {command}: {other_files_line(walk.inputs.other_files)}", file=sys.stderr)
    return walk.inputs


def other_files_line(other_files: list[str]) -> str:
    """How many files of the walked folders were not read for their names, the first few, and
    how to read one."""
    shown = ", ".join(repr(p) for p in other_files[:OTHER_FILES_SHOWN])
    more = len(other_files) - OTHER_FILES_SHOWN
    return (
        f"{len(other_files)} file(s) in the folders not read, their names lacking an image "
        f"extension ({' '.join(sorted(IMAGE_SUFFIXES))}): {shown}"
        + (f" and {more} more" if more > 0 else "")
        + "; name a file on the command line to read it whatever its name"
    )


class _Walk:
    def __init__(self, store: LocalStore, outputs: set[Path]):
        self.store = store
        self.outputs = outputs
        self.inputs = Inputs()
        self._files: set[str] = set()
        self._folders: set[Path] = set()
        self._skipped: set[str] = set()

    def _skip(self, skipped: Skipped) -> None:
        if skipped.path not in self._skipped:
            self._skipped.add(skipped.path)
            self.inputs.skipped.append(skipped)

    def visit(self, path: str, given: bool) -> None:
        try:
            real = self.store.path(path)
        except StorageError as exc:
            self._skip(Skipped(path, exc.code, str(exc)))
            return
        if os.path.isdir(real):
            if given or real not in self.outputs:
                self._folder(path, real)
        elif (given or Path(path).suffix.lower() in IMAGE_SUFFIXES) and str(real) not in self._files:
            # A missing file named on the command line is kept: it fails as an item (not_found).
            self._files.add(str(real))
            self.inputs.files.append(str(real))

    def _folder(self, path: str, real: Path) -> None:
        if real in self._folders:  # walked already (named twice, or a link to it)
            return
        self._folders.add(real)
        try:
            with os.scandir(real) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as exc:
            code = ErrorCode.ACCESS_DENIED if isinstance(exc, PermissionError) else ErrorCode.NOT_FOUND
            self._skip(Skipped(path, code, f"{path!r}: folder not readable: {exc.strerror or exc}"))
            return
        base = str(real) if path.startswith("file://") else path  # children: plain paths
        for name in names:
            child = os.path.join(base, name)
            if os.path.isdir(child) or Path(name).suffix.lower() in IMAGE_SUFFIXES:
                self.visit(child, given=False)
            else:  # not read, for its name: counted, not skipped
                self.inputs.other_files.append(child)
