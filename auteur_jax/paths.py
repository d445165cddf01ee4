"""One path layer: local paths and cloud URIs (gs://, s3://, ...) through etils.epath.

Data sets, workdirs, checkpoints and outputs may live on cloud storage, as pod and
Dataflow users keep them. Code that touches a file takes its path through here (or
through `epath.Path`, which orbax uses too), never `open` / `os.path` on a URI. Local
paths keep their local behaviour (temporary file + rename, fsync, pread); a URI is an
object store: an object appears whole when its writer closes, there are no folders (a
"folder" exists while objects are under it), and a rename is a copy + delete.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

PathLike = str | os.PathLike


def is_uri(path: PathLike) -> bool:
  """Whether `path` is a URI (scheme://...) rather than a local path."""
  return "://" in os.fspath(path)


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path (gs:// etc. go to their filesystem)."""
  return epath.Path(p)


def join(base: PathLike, *parts: str) -> str:
  """`base`/`parts` as a string; URIs joined with '/' (a part may be a local relative
  path: its os.sep become '/'), local paths with os.path."""
  base = os.fspath(base)
  if is_uri(base):
    return posixpath.join(base, *(p.replace(os.sep, "/") for p in parts))
  return os.path.join(base, *parts)


def dirname(p: PathLike) -> str:
  """The folder of `p` (a URI's keeps its scheme)."""
  p = os.fspath(p).rstrip("/")
  return posixpath.dirname(p) if is_uri(p) else os.path.dirname(p)


def absolute(p: PathLike) -> str:
  """A local path made absolute; a URI unchanged (trailing '/' dropped)."""
  p = os.fspath(p)
  return p.rstrip("/") if is_uri(p) else os.path.abspath(p)


def relative(p: PathLike, start: PathLike) -> str:
  """`p` relative to the folder `start` (both local or both URIs)."""
  p, start = os.fspath(p), os.fspath(start)
  if is_uri(p):
    return posixpath.relpath(p.split("://", 1)[1], start.rstrip("/").split("://", 1)[1])
  return os.path.relpath(p, start)


def exists(p: PathLike) -> bool:
  return path(p).exists()


def is_file(p: PathLike) -> bool:
  return path(p).is_file()


def is_dir(p: PathLike) -> bool:
  return path(p).is_dir()


def makedirs(p: PathLike) -> None:
  """Creates the folder and its parents (a no-op on object stores: no folders there)."""
  path(p).mkdir(parents=True, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
  """Names in the folder `p`, sorted."""
  return sorted(c.name for c in path(p).iterdir())


def glob(pattern: PathLike) -> list[str]:
  """Files and folders matching a glob (no `**`), sorted."""
  pattern = os.fspath(pattern)
  folder, name = (posixpath if is_uri(pattern) else os.path).split(pattern)
  return sorted(os.fspath(m) for m in path(folder).glob(name))


def files_under(p: PathLike) -> list[str]:
  """Every file under the folder `p`, in sub-folders too, sorted."""
  out: list[str] = []
  for child in path(p).iterdir():
    out += files_under(child) if child.is_dir() else [os.fspath(child)]
  return sorted(out)


def size(p: PathLike) -> int:
  """The file's size in bytes."""
  return int(path(p).stat().length)


def open_file(p: PathLike, mode: str = "r"):  # noqa: ANN201 (a file object of the mode)
  """Opens a local file with `open` (buffered, seekable), a URI through epath."""
  if is_uri(p):
    return path(p).open(mode)
  return open(p, mode, encoding=None if "b" in mode else "utf-8")


def remove_tree(p: PathLike) -> None:
  """Removes a folder and everything under it, if there."""
  if is_uri(p):
    if path(p).exists():
      path(p).rmtree()
  else:
    shutil.rmtree(p, ignore_errors=True)


def write_atomic(p: PathLike, data: str | bytes) -> None:
  """Writes a whole file so that a reader sees the old one or the new one: locally a
  temporary file + rename, on an object store one upload (objects appear whole)."""
  p = os.fspath(p)
  mode = "wb" if isinstance(data, bytes) else "w"
  if is_uri(p):
    with path(p).open(mode) as f:
      f.write(data)
    return
  tmp = f"{p}.tmp-{os.getpid()}"
  with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
    f.write(data)
  os.replace(tmp, p)


@contextlib.contextmanager
def local_copy(p: PathLike) -> Iterator[str]:
  """A local file with `p`'s bytes, for readers that need one (video decoders): `p`
  itself when local, else a temporary copy, removed after."""
  p = os.fspath(p)
  if not is_uri(p):
    yield p
    return
  suffix = os.path.splitext(p)[1]
  with tempfile.TemporaryDirectory(prefix="auteur-") as d:
    local = os.path.join(d, "file" + suffix)
    with path(p).open("rb") as src, open(local, "wb") as dst:
      shutil.copyfileobj(src, dst, 1 << 22)
    yield local


def upload_tree(local_dir: PathLike, dst: PathLike, last: str | None = None) -> None:
  """Copies the files under a local folder to `dst` (a URI or a local folder); the
  top-level file named `last`, if any, goes last (a reader's sign that all are there)."""
  local_dir, dst = os.fspath(local_dir), os.fspath(dst)
  files = []
  for folder, _, names in os.walk(local_dir):
    rel = os.path.relpath(folder, local_dir)
    files += [name if rel == "." else os.path.join(rel, name) for name in names]
  files.sort(key=lambda f: (f == last, f))
  for rel in files:
    out = join(dst, rel)
    makedirs(dirname(out))
    with open(os.path.join(local_dir, rel), "rb") as src, open_file(out, "wb") as f:
      shutil.copyfileobj(src, f, 1 << 22)
