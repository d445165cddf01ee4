"""An offline `gs://` for tests: one in-memory bucket that both of the package's ways to
cloud storage reach, as they reach Cloud Storage on a pod.

- tensorstore (orbax's arrays) talks to its native `gcs` driver, pointed at a local
  Cloud Storage emulator (gcp-storage-emulator, in-memory) by TENSORSTORE_GCS_HTTP_URL;
- etils.epath (everything else: orbax's metadata, TFRecords, JSON, videos, metrics)
  opens `gs://` through fsspec's `gcs` protocol, which `FakeGCSFileSystem` serves here
  (gcsfs on a real machine) from the same emulator, through tensorstore's `gcs` kvstore.

So a test that writes `gs://bucket/...` fails if code opens it with `open()` /
`os.path` (a local folder named `gs:` appears instead, and the bucket stays empty).
Objects only, no folders: a "directory" exists while objects are under it, as on GCS.

The emulator is made to keep Cloud Storage's generation contract, which tensorstore's
conditional writes (OCDBT's manifest) rely on (`_patch_emulator`): generations are
integers from one counter (never 0, never reused), every read of an object's bytes
reports its generation (`x-goog-generation`), `ifGenerationMatch` /
`ifGenerationNotMatch` are honoured (412 / 304), and empty objects can be uploaded.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import fsspec
import tensorstore as ts
from fsspec.spec import AbstractFileSystem

BUCKET = "auteur-test"
# Object generations, as Cloud Storage's: positive, increasing, never reused.
_GENERATIONS = itertools.count(1)
_Handler = Callable[[Any, Any, Any], None]


def _precondition_fails(request: Any, generation: int | None) -> HTTPStatus | None:
  """The status for a request whose ifGenerationMatch / ifGenerationNotMatch does not
  hold on an object of `generation` (None: no live object), else None. As on GCS:
  ifGenerationMatch=0 means "does not exist"; a failed NotMatch is 304 on a read."""
  match, not_match = (
    request.query.get("ifGenerationMatch"),
    request.query.get("ifGenerationNotMatch"),
  )
  current = generation or 0
  if match is not None and int(match[0]) != current:
    return HTTPStatus.PRECONDITION_FAILED
  if not_match is not None and int(not_match[0]) == current:
    return HTTPStatus.NOT_MODIFIED if request.method == "GET" else HTTPStatus.PRECONDITION_FAILED
  return None


def _generation_of(storage: Any, bucket: str, name: str) -> int | None:
  """The live object's generation, None if there is none."""
  from gcp_storage_emulator.exceptions import NotFound

  try:
    return int(storage.get_file_obj(bucket, name)["generation"])
  except NotFound:
    return None


def _object_call(handler: _Handler, is_upload: bool) -> _Handler:
  """`handler` (an object GET / download / DELETE / upload) with GCS's preconditions, and
  a download answering with the object's generation, as GCS's media downloads do."""

  def call(request: Any, response: Any, storage: Any) -> None:
    bucket = request.params["bucket_name"]
    name = request.query["name"][0] if is_upload else request.params.get("object_id")
    if name is None:  # A multipart / resumable upload: the name is in the body; not ours.
      return handler(request, response, storage)
    generation = _generation_of(storage, bucket, name)
    if generation is None and not is_upload:
      response.status = HTTPStatus.NOT_FOUND
      return None
    failed = _precondition_fails(request, generation)
    if failed is not None:
      response.status = failed
      return None
    if is_upload and request.get_header("Content-Length") == "0":
      request._data = b""  # The emulator reads an empty body as "no data" and fails.
    handler(request, response, storage)
    if not is_upload and request.method == "GET" and response.status.value < 300:
      response["x-goog-generation"] = str(generation)
      response["x-goog-metageneration"] = "1"
    return None

  return call


def _patch_emulator() -> None:
  """Makes gcp-storage-emulator keep GCS's generation contract (see the module docstring):
  out of the box it stamps generations with the clock (time.time_ns()), sends no x-goog-generation
  on downloads (tensorstore then reads generation 0, and its next conditional write fails
  with "Malformed StorageGeneration") and ignores every precondition. Idempotent."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  if getattr(server, "_auteur_patched", False):
    return
  make = objects._make_object_resource

  def make_object(base_url: str, bucket: str, name: str, *args: Any, **kwargs: Any) -> Any:
    obj = make(base_url, bucket, name, *args, **kwargs)
    old, new = obj["generation"], str(next(_GENERATIONS))
    obj["generation"], obj["id"] = new, f"{bucket}/{name}/{new}"
    obj["mediaLink"] = obj["mediaLink"].replace(f"generation={old}", f"generation={new}")
    return obj

  objects._make_object_resource = make_object
  wrapped = {
    objects.get: _object_call(objects.get, is_upload=False),
    objects.download: _object_call(objects.download, is_upload=False),
    objects.delete: _object_call(objects.delete, is_upload=False),
    objects.insert: _object_call(objects.insert, is_upload=True),
  }
  server.HANDLERS = tuple(
    (regex, {method: wrapped.get(h, h) for method, h in handlers.items()})
    for regex, handlers in server.HANDLERS
  )
  server._auteur_patched = True


class FakeGCSFileSystem(AbstractFileSystem):
  """fsspec's `gs` / `gcs` protocol over the emulator's bucket (a gcsfs stand-in)."""

  protocol = ("gs", "gcs")
  cachable = False

  def __init__(self, *args: Any, **kwargs: Any):  # gcsfs options are ignored.
    super().__init__()
    self._kv: dict[str, ts.KvStore] = {}

  def _store(self, bucket: str) -> ts.KvStore:
    if bucket not in self._kv:
      self._kv[bucket] = ts.KvStore.open({"driver": "gcs", "bucket": bucket}).result()
    return self._kv[bucket]

  @staticmethod
  def _split(path: str) -> tuple[str, str]:
    path = FakeGCSFileSystem._strip_protocol(path).rstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key

  def _keys(self, bucket: str, prefix: str) -> list[str]:
    """Object names under `prefix` (the whole bucket for "")."""
    keys = {k.decode() for k in self._store(bucket).list().result()}
    return sorted(k for k in keys if k.startswith(prefix))

  def _read(self, path: str) -> bytes | None:
    bucket, key = self._split(path)
    r = self._store(bucket).read(key).result() if key else None
    return None if r is None or r.state != "value" else bytes(r.value)

  def _write(self, path: str, data: bytes) -> None:
    bucket, key = self._split(path)
    self._store(bucket).write(key, data).result()

  def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
    bucket, key = self._split(path)
    name = f"{bucket}/{key}" if key else bucket
    if not key:
      return {"name": name, "size": 0, "type": "directory"}
    data = self._read(path)
    if data is not None:
      return {"name": name, "size": len(data), "type": "file"}
    if self._keys(bucket, key + "/"):
      return {"name": name, "size": 0, "type": "directory"}
    raise FileNotFoundError(path)

  def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
    bucket, key = self._split(path)
    prefix = key + "/" if key else ""
    seen: dict[str, dict[str, Any]] = {}
    for k in self._keys(bucket, prefix):
      head, sep, _ = k[len(prefix) :].partition("/")
      name = f"{bucket}/{prefix}{head}"
      if name not in seen:
        seen[name] = {"name": name, "size": 0, "type": "directory" if sep else "file"}
    if not seen:
      info = self.info(path)  # A file lists itself; nothing there raises.
      if info["type"] == "file":
        return [info] if detail else [info["name"]]
    entries = [seen[n] for n in sorted(seen)]
    return entries if detail else [e["name"] for e in entries]

  def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.BytesIO:
    if "r" in mode:
      data = self._read(path)
      if data is None:
        raise FileNotFoundError(path)
      return io.BytesIO(data)
    start = (self._read(path) or b"") if "a" in mode else b""
    return _Upload(self, path, start)

  def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
    pass  # No folders on GCS (gcsfs: the same, below a bucket).

  def makedirs(self, path: str, exist_ok: bool = False) -> None:
    pass

  def rmdir(self, path: str) -> None:
    pass

  def rm_file(self, path: str) -> None:
    bucket, key = self._split(path)
    if self._read(path) is None:
      raise FileNotFoundError(path)
    self._store(bucket).write(key, None).result()  # delete_range: the emulator lists all.

  def _rm(self, path: str) -> None:
    self.rm_file(path)

  def rm(self, path: Any, recursive: bool = False, maxdepth: Any = None) -> None:
    for p in [path] if isinstance(path, str) else path:
      bucket, key = self._split(p)
      if self._read(p) is not None:
        self.rm_file(p)
      elif recursive and self._keys(bucket, key + "/"):
        for k in self._keys(bucket, key + "/"):
          self.rm_file(f"{bucket}/{k}")
      else:
        raise FileNotFoundError(p)

  def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
    data = self._read(path1)
    if data is None:
      raise FileNotFoundError(path1)
    self._write(path2, data)

  def mv(self, path1: str, path2: str, recursive: bool = False, **kwargs: Any) -> None:
    """A rename: copy + delete (as on GCS), of one object or of every one under a prefix."""
    if self._read(path1) is not None:
      self.cp_file(path1, path2)
      self.rm_file(path1)
      return
    bucket, key = self._split(path1)
    keys = self._keys(bucket, key + "/")
    if not keys:
      raise FileNotFoundError(path1)
    b2, k2 = self._split(path2)
    for k in keys:
      self.cp_file(f"{bucket}/{k}", f"{b2}/{k2}/{k[len(key) + 1 :]}")
      self.rm_file(f"{bucket}/{k}")

  rename = mv

  def find(self, path: str, maxdepth: Any = None, withdirs: bool = False, **kwargs: Any) -> Any:
    bucket, key = self._split(path)
    out = {
      f"{bucket}/{k}": {"name": f"{bucket}/{k}", "type": "file"}
      for k in self._keys(bucket, key + "/" if key else "")
    }
    if not out and self._read(path) is not None:
      out = {f"{bucket}/{key}": {"name": f"{bucket}/{key}", "type": "file"}}
    return out if kwargs.get("detail") else sorted(out)

  def glob(self, path: str, **kwargs: Any) -> list[str]:
    pattern = self._strip_protocol(path)
    root = pattern.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
    return [p for p in self.find(root) if fnmatch.fnmatchcase(p, pattern)] + sorted(
      d
      for d in {p.rsplit("/", n)[0] for p in self.find(root) for n in range(1, p.count("/"))}
      if fnmatch.fnmatchcase(d, pattern)
    )

  def objects(self) -> list[str]:
    """Every object in the test bucket (for asserts)."""
    return self._keys(BUCKET, "")


class _Upload(io.BytesIO):
  """A file being written: uploaded as one object on close (GCS has no appends)."""

  def __init__(self, fs: FakeGCSFileSystem, path: str, start: bytes):
    super().__init__()
    self.write(start)
    self._fs, self._path = fs, path

  def close(self) -> None:
    if not self.closed:
      self._fs._write(self._path, self.getvalue())
    super().close()


def serve(monkeypatch: Any, tmp_path: Any) -> Iterator[FakeGCSFileSystem]:
  """A fixture body: `start`'s bucket, with the test in the empty folder tmp_path/cwd,
  which must stay empty (code that used open / os.path on a URI would write a local gs:
  there); the emulator's 404 logs silenced (they are normal)."""
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  gen = start()
  yield next(gen)
  next(gen, None)
  assert os.listdir(cwd) == [], f"local files written for gs:// paths: {os.listdir(cwd)}"


def start() -> Iterator[FakeGCSFileSystem]:
  """Starts the emulator with an empty bucket BUCKET, points tensorstore and fsspec at it,
  yields the filesystem; stops it after. (Generator: a pytest fixture's body.)"""
  from gcp_storage_emulator.server import create_server

  _patch_emulator()
  server = create_server("localhost", 0, in_memory=True, default_bucket=BUCKET)
  server._api.daemon = True  # Never keeps the test process alive.
  server.start()
  port = server._api._httpd.server_address[1]
  saved = {
    k: os.environ.get(k) for k in ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING")
  }
  os.environ["TENSORSTORE_GCS_HTTP_URL"] = f"http://localhost:{port}"
  os.environ["GOOGLE_AUTH_TOKEN_FOR_TESTING"] = "offline"  # No credentials lookup.
  before = {p: fsspec.registry.get(p) for p in ("gs", "gcs")}
  for p in ("gs", "gcs"):
    fsspec.register_implementation(p, FakeGCSFileSystem, clobber=True)
  from etils.epath import backend

  backend.fsspec_backend._get_filesystem.cache_clear()
  try:
    yield FakeGCSFileSystem()
  finally:
    backend.fsspec_backend._get_filesystem.cache_clear()
    for p, cls in before.items():
      if cls is None:
        fsspec.registry.pop(p, None) if hasattr(fsspec.registry, "pop") else None
      else:
        fsspec.register_implementation(p, cls, clobber=True)
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(10)
