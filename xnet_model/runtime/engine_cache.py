"""Persistent cache of compiled artefacts (TensorRT engines, ONNX graphs); ROS- and TRT-free.

An entry is `<dir>/<key hash><suffix>` plus `<key hash>.json`, a sidecar with the key's fields
and the artefact's sha256 and size. A lookup

* hits when the sidecar's fields equal the key and the file's checksum matches: the artefact is
  loaded and nothing is compiled;
* misses when no entry exists (any changed key field gives another hash, so another entry);
* discards a corrupt entry (unreadable or truncated file, checksum or field mismatch, a loader
  that raises) with a warning, then rebuilds it.

Builds write to a temporary file in the same directory and `os.replace` it into place, so a
reader never sees half a file; an exclusive `fcntl` lock per key keeps two processes from
building the same entry at once (the second waits, then hits). A hit needs read access only
(no lock file is opened): a cache built by root or mounted read-only still serves its entries.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")
CACHE_ENV = "XNET_ENGINE_CACHE"
FORMAT_VERSION = 2  # bump when the entry layout or what goes into an artefact changes
# The modules whose source defines the traced graph: a change to any of them changes
# `code_digest`, so an upgraded xnet_model never reuses an engine built from older code.
MODEL_CODE = ("xnet.py", "encoder.py", "decoder.py", "modules.py", "config.py", "weights.py",
              "runtime/export.py")


class CacheLockTimeout(TimeoutError):
    """Another process held the build lock for longer than the timeout."""


class CacheNotWritable(PermissionError):
    """A miss in a cache directory this process cannot write (message says what to do)."""


@functools.cache
def code_digest() -> str:
    """sha256 over the source files in MODEL_CODE (their bytes, in that order)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for name in MODEL_CODE:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """$XNET_ENGINE_CACHE, else $XDG_CACHE_HOME/xnet/engines, else ~/.cache/xnet/engines."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xnet" / "engines"


def package_version(*names: str) -> str | None:
    """Installed version of the first of `names` found (distribution metadata, else the
    module's __version__: Jetson's apt-installed tensorrt has no pip metadata)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    for name in names:
        try:
            return str(importlib.import_module(name.replace("-", "_")).__version__)
        except Exception:  # absent or broken install: not part of this machine's identity
            continue
    return None


def gpu_fields(device: torch.device | str | None) -> tuple[str | None, str | None]:
    """(GPU name, compute capability 'major.minor') of a CUDA device; (None, None) on CPU."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, None
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def multiprocessor_count(device: torch.device | str | None) -> int | None:
    """Streaming multiprocessors of a CUDA device (Orin NX and AGX Orin share sm 8.7 but not
    this, and TensorRT tunes kernels for it); None on CPU."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(device).multi_processor_count)


def shape_text(shape) -> str:
    """(1, 3, 240, 320) -> '1x3x240x320'; a (min, opt, max) profile -> 'min-opt-max' joined."""
    if shape and isinstance(shape[0], (list, tuple)):
        return "-".join(shape_text(s) for s in shape)
    return "x".join(str(s) for s in shape)


@dataclass(frozen=True)
class CacheKey:
    """Everything that makes a compiled artefact valid. Any field change is a different entry.

    `kind` names the artefact ('tensorrt', 'onnx'); `extra` holds kind-specific settings
    (int8 calibration-set digest, opset, ...) as sorted (name, value) pairs.
    """

    kind: str
    model_digest: str  # sha256 of the saved config + weights (`xnet_model.model_digest`)
    input_shape: tuple  # (N, 3, H, W), or ((min), (opt), (max)) for a dynamic profile
    precision: str
    gpu_name: str | None = None
    compute_capability: str | None = None
    tensorrt_version: str | None = None
    torch_tensorrt_version: str | None = None
    torch_version: str = field(default_factory=lambda: torch.__version__)
    extra: tuple = ()
    format_version: int = FORMAT_VERSION
    timm_version: str | None = field(default_factory=lambda: package_version("timm"))
    code_digest: str = field(default_factory=code_digest)  # xnet_model's graph-defining code
    multiprocessors: int | None = None  # SM count of the GPU

    def fields(self) -> dict[str, Any]:
        """JSON-normalised fields (tuples as lists), as stored in the sidecar."""
        return json.loads(json.dumps(asdict(self)))

    def hexdigest(self) -> str:
        return hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """File stem: readable prefix + 24 hex digits of the hash."""
        return f"{self.kind}-{self.precision}-{shape_text(self.input_shape)}-" \
            f"{self.hexdigest()[:24]}"

    @classmethod
    def for_tensorrt(cls, model_digest: str, input_shape: tuple, precision: str,
                     device: torch.device | str, extra: dict | None = None) -> CacheKey:
        """A TensorRT engine's key: this machine's GPU (name, compute capability, SM count),
        TensorRT / Torch-TensorRT / torch / timm versions and xnet_model's model code."""
        gpu, cc = gpu_fields(device)
        return cls(
            "tensorrt", model_digest, tuple(input_shape), precision, gpu, cc,
            package_version("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"),
            package_version("torch-tensorrt", "torch_tensorrt"),
            extra=tuple(sorted((extra or {}).items())),
            multiprocessors=multiprocessor_count(device),
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class CacheResult:
    value: Any
    hit: bool
    path: Path
    seconds: float  # load time on a hit, build + load on a miss


class EngineCache:
    """`EngineCache(dir).get_or_build(key, build, load)`; see the module docstring.

    `build(tmp_path)` must write the artefact to `tmp_path` (same suffix as the entry);
    `load(path)` turns an entry into a usable object and raises if it cannot.
    """

    def __init__(self, directory: str | Path | None = None, suffix: str = ".bin",
                 lock_timeout: float = 1800.0):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.suffix, self.lock_timeout = suffix, lock_timeout

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        """(artefact, sidecar) paths of the entry for `key`."""
        return (self.directory / f"{key.name}{self.suffix}",
                self.directory / f"{key.name}.json")

    def _not_writable(self, exc: OSError) -> CacheNotWritable:
        return CacheNotWritable(
            f"engine cache {self.directory} is not writable ({exc.strerror or exc}): cannot "
            "build a missing entry here; build it as the cache's owner (xnet export) or point "
            f"${CACHE_ENV} at a writable directory")

    @contextlib.contextmanager
    def lock(self, key: CacheKey) -> Iterator[None]:
        """Exclusive per-key lock (fcntl.flock, polled until `lock_timeout`)."""
        path = self.directory / f"{key.name}.lock"
        deadline = time.monotonic() + self.lock_timeout
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+")  # noqa: SIM115 - closed below, after the yield
        except PermissionError as exc:
            raise self._not_writable(exc) from exc
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise self._not_writable(exc) from exc
            raise
        with f:
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise CacheLockTimeout(
                            f"{path} still locked after {self.lock_timeout:.0f} s: another "
                            "process is building this entry (or died holding it; delete the "
                            "lock file if no build is running)") from exc
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def check(self, key: CacheKey) -> str | None:
        """Why the entry for `key` is unusable (None: present and intact)."""
        artefact, sidecar = self.paths(key)
        if not sidecar.exists() and not artefact.exists():
            return "absent"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar {sidecar.name}: {exc}"
        if not isinstance(meta, dict) or meta.get("key") != key.fields():
            return "sidecar key fields differ from the requested key"
        try:
            size = artefact.stat().st_size
        except OSError as exc:
            return f"artefact unreadable: {exc}"
        if size != meta.get("size"):
            return f"artefact is {size} bytes, sidecar says {meta.get('size')} (truncated?)"
        if file_sha256(artefact) != meta.get("sha256"):
            return "artefact sha256 does not match the sidecar"
        return None

    def discard(self, key: CacheKey) -> None:
        for path in self.paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def store(self, key: CacheKey, build: Callable[[Path], None], seconds: float = 0.0) -> Path:
        """Run `build` into a temporary file, then move it and its sidecar into place."""
        artefact, sidecar = self.paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = artefact.with_name(f".{key.name}.tmp-{os.getpid()}{self.suffix}")
        t0 = time.perf_counter()
        try:
            build(tmp)
            if not tmp.is_file():
                raise RuntimeError(f"cache builder wrote nothing to {tmp}")
            meta = {"key": key.fields(), "key_hash": key.hexdigest(), "sha256": file_sha256(tmp),
                    "size": tmp.stat().st_size, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "build_seconds": round(seconds + time.perf_counter() - t0, 3)}
            # sidecar last: an artefact without a matching sidecar reads as corrupt, never valid
            sidecar.unlink(missing_ok=True)
            os.replace(tmp, artefact)
            write_atomic(sidecar, json.dumps(meta, indent=2, sort_keys=True).encode())
        finally:
            tmp.unlink(missing_ok=True)
        return artefact

    def get_or_build(self, key: CacheKey, build: Callable[[Path], None],
                     load: Callable[[Path], T]) -> CacheResult:
        artefact, _ = self.paths(key)
        t0 = time.perf_counter()
        if self.check(key) is None:  # a hit reads only: no lock file, no write access needed
            try:
                value = load(artefact)
                log.info("engine cache hit: %s", artefact)
                return CacheResult(value, True, artefact, time.perf_counter() - t0)
            except Exception as exc:  # corrupt after all: rebuilt below, under the lock
                log.debug("engine cache entry %s failed to load: %s", artefact, exc)
        with self.lock(key):
            problem = self.check(key)
            if problem is None:
                try:
                    value = load(artefact)
                    log.info("engine cache hit: %s", artefact)
                    return CacheResult(value, True, artefact, time.perf_counter() - t0)
                except Exception as exc:
                    problem = f"loading failed: {type(exc).__name__}: {exc}"
            if problem == "absent":
                log.info("engine cache miss: building %s", artefact)
            else:
                log.warning("engine cache entry %s is corrupt (%s): discarding and rebuilding",
                            artefact, problem)
                self.discard(key)
            self.store(key, build)
            value = load(artefact)
            return CacheResult(value, False, artefact, time.perf_counter() - t0)

    def entries(self) -> list[dict]:
        """Sidecars of every entry in the directory (for listing / pruning by hand)."""
        out = []
        for sidecar in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append({"path": str(sidecar.with_suffix(self.suffix)),
                            **json.loads(sidecar.read_text())})
        return out


def state_digest(model: torch.nn.Module, config_json: str = "") -> str:
    """sha256 over a config string and every state tensor: the key of an unsaved model (a
    variant built with random weights); saved models use `model_digest(dir)` (file bytes)."""
    h = hashlib.sha256(config_json.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
