"""Errors a user can act on, and the checks of user-given files and paths that raise them.

``BnnhwError`` is a user error: the CLI prints its message as one sentence and exits 2.
The helpers here are light (standard library only) so that every command can use them
before it imports anything heavy:

- ``check_output`` / ``check_output_folder``: refuse an output file (or folder) up
  front, before any long work: a folder where a file should go (or a file where a folder
  should), a special file (device, pipe, socket), a place that cannot be created or
  written, or a file that is also one of the command's inputs;
- ``write_together``: write one or more files atomically as a group: each goes to a
  temporary file beside it and they are all renamed into place at the end; on any
  failure (Ctrl-C included) none of them is left behind, nor any temporary;
- ``check_json_depth`` / ``check_value_depth``: refuse JSON text or loaded values
  nested deeper than any bnnhw file needs (``MAX_DEPTH``), before anything recursive
  (the json module, ``copy.deepcopy``) sees them;
- ``memory_bytes`` / ``format_bytes``: the machine's memory, for refusing sizes that
  cannot fit before allocating them.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

# Specs, folding files, IR files and checkpoint metadata nest a few levels (a spec's
# layers are 3 deep, a checkpoint's training history 3); 32 leaves ample room.
MAX_DEPTH = 32


class BnnhwError(Exception):
    """A user-facing error: bad input, a file that is not what it should be, ..."""


# -- nesting ------------------------------------------------------------------------------

_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def json_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Bracket nesting depth of JSON ``text`` (strings skipped); stops counting past
    ``limit`` (returns ``limit + 1``). Works without recursion on any text."""
    depth = deepest = 0
    for m in _JSON_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


def check_json_depth(text: str, what: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``BnnhwError`` if JSON ``text`` (named ``what``) nests deeper than ``limit``."""
    if json_depth(text, limit) > limit:
        raise BnnhwError(f"{what} nests brackets more than {limit} levels deep, deeper than "
                         f"any bnnhw file needs")


def read_json_text(path: Path, what: str, folder_advice: str,
                   encoding: str = "utf-8") -> str:
    """The text of the JSON file ``path`` (``what`` names it: "folding file x.json"), its
    nesting checked (``check_json_depth``); one ``BnnhwError`` sentence for a folder
    (with ``folder_advice``), a missing or unreadable file, or one that is not text."""
    if path.is_dir():
        raise BnnhwError(f"{what} is a folder; {folder_advice}")
    try:
        text = path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise BnnhwError(f"{what} does not exist") from None
    except UnicodeDecodeError:
        raise BnnhwError(f"{what} is not a text file") from None
    except OSError as e:
        raise BnnhwError(f"{what} cannot be read ({e.strerror})") from None
    check_json_depth(text, what)
    return text


def value_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of lists, tuples and dicts in ``value`` (a scalar is 0), computed
    iteratively; stops past ``limit`` (returns ``limit + 1``)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children: Iterable[Any] = v.values()
        elif isinstance(v, (list, tuple)):
            children = v
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def check_value_depth(value: Any, what: str, limit: int = MAX_DEPTH) -> None:
    """Raise ``BnnhwError`` if ``value`` (named ``what``) nests deeper than ``limit``."""
    if value_depth(value, limit) > limit:
        raise BnnhwError(f"{what} nests lists or dicts more than {limit} levels deep, which "
                         f"no bnnhw file needs")


# -- memory -------------------------------------------------------------------------------

def memory_bytes() -> int:
    """The memory this process may use: physical RAM, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux/macOS
        total = 16 << 30
    for limit_file in ("/sys/fs/cgroup/memory.max",
                       "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
        break
    return total


def format_bytes(n: int) -> str:
    """``n`` bytes as a short phrase: ``512 bytes``, ``3.1 GB``, ``12.5 TB``, any size."""
    n = int(n)
    if n < 1000:
        return f"{n} bytes"
    for power, unit in enumerate(("kB", "MB", "GB", "TB", "PB", "EB"), 1):
        if n < 1000 ** (power + 1) or unit == "EB":
            if n >= 1000 ** (power + 1):  # beyond what a float holds exactly: integers
                return f"{n // 1000 ** power:,} {unit}"
            return f"{n / 1000 ** power:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


# -- output paths -------------------------------------------------------------------------

_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"))


def _special_kind(mode: int) -> str | None:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "special file"


def _refuse_non_regular(path: Path, what: str, advice: str = "give a file name") -> None:
    """Refuse to replace anything at ``path`` but a regular file (or nothing)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # nothing there (or a dangling link, which a rename replaces)
    except NotADirectoryError:
        folder = path.parent
        while not folder.exists():
            folder = folder.parent
        raise BnnhwError(f"{what} {path} cannot be created: {folder} is a file, not a "
                         f"folder") from None
    if stat.S_ISDIR(mode):
        raise BnnhwError(f"{what} {path} is a folder; {advice}")
    kind = _special_kind(mode)
    if kind is not None:
        raise BnnhwError(f"{what} {path} is a {kind}, not a regular file, and bnnhw writes "
                         f"regular files only; {advice}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str | os.PathLike[str], what: str,
                 inputs: Iterable[tuple[str | os.PathLike[str], str]] = (),
                 advice: str = "give a file name") -> Path:
    """Check, before any work, that ``path`` can be written as a regular file; return it.

    ``what`` names the output in messages (``--out``); ``inputs`` are ``(path, role)``
    pairs the output must not be (compared as the same file or the same resolved path);
    ``advice`` ends the message when something is in the way.
    Raises ``BnnhwError`` for a name ending in a slash, a folder, a special file, an
    output that is an input, or a place where the file cannot be created: a parent that
    is a file, or a folder where no file can be made (probed with a temporary file,
    removed at once). Creates nothing.
    """
    text = os.fspath(path)
    name = os.path.basename(text.rstrip("/" + os.sep))
    if not text or text.endswith(("/", os.sep)) or name in ("", ".", ".."):
        raise BnnhwError(f"{what} {text or repr(text)} must be a file name, not a folder")
    path = Path(text)
    _refuse_non_regular(path, what, advice)
    for other, role in inputs:
        if _same_file(path, Path(other)):
            raise BnnhwError(f"{what} {path} is also {role}; {advice}")
    _check_creatable(Path(os.path.abspath(path)).parent, path, what)
    return path


def check_output_folder(path: str | os.PathLike[str], what: str) -> Path:
    """Check, before any work, that ``path`` is a folder or can be made one, and that
    files can be created in it; return it. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BnnhwError(f"{what} {path} is a file, not a folder; give a folder")
    _check_creatable(Path(os.path.abspath(path)), path, what)
    return path


def _check_creatable(folder: Path, path: Path, what: str) -> None:
    """The nearest existing folder of ``folder`` must be a folder we can create files in
    (probed with a temporary file, removed at once)."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise BnnhwError(f"{what} {path} cannot be created: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bnnhw-probe-", dir=folder)
    except OSError as e:
        raise BnnhwError(f"{what} {path} cannot be written: no file can be created in "
                         f"{folder} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parents(folder: Path, created: list[Path]) -> None:
    """``mkdir -p folder``, listing the folders it created (outermost first)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
        created.append(f)


def write_together(files: Sequence[tuple[str | os.PathLike[str],
                                         Callable[[BinaryIO], None]]]) -> list[Path]:
    """Write every ``(path, writer)`` atomically as a group; return the paths.

    Each ``writer(f)`` writes its file's bytes to the binary file object ``f`` (a
    temporary beside the target, with the usual mode for the umask). Only when all of
    them succeeded are they renamed into place. On any failure, Ctrl-C included, the
    temporaries, the files already renamed and the folders created are removed, so no
    target is left without the others. Only regular files (or nothing) are replaced:
    anything else raises ``BnnhwError`` before a byte is written.
    """
    targets = [Path(p) for p, _ in files]
    for path in targets:
        _refuse_non_regular(path, "output")
    created: list[Path] = []
    temps: list[str] = []
    placed: list[Path] = []
    try:
        for path, (_, writer) in zip(targets, files):
            _make_parents(path.parent, created)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give the usual mode
        for path in targets:
            _refuse_non_regular(path, "output")
        for path, tmp in zip(targets, temps):
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        for path in placed:
            path.unlink(missing_ok=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return targets
