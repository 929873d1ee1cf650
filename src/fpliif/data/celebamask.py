"""CelebAMask-HQ: the merged-mask cache written by ``fpliif data prepare``.

The files and the official split rule are in :mod:`.layouts` (:func:`~.layouts.celebamask_split_of`), which
scans the dataset; this module merges what the scan finds.

Cache
-----
Merging 18 part PNGs per sample every epoch is too slow, so ``fpliif data prepare --data ROOT`` (:func:`prepare`)
merges them once (:func:`fpliif.data.io.merge_parts`: class order, later classes win overlaps, as
``g_mask.py``) into ``CACHE/masks/<id>.png`` (palette PNG, pixel = class index) and writes
``CACHE/manifest.json`` holding: the format version, the dataset root (relative to the cache when the cache lies
inside the root, as the default ``ROOT/fpliif-cache`` does, so a root moved, copied or renamed keeps its cache;
else its absolute path), for every sample the output's file name, byte size and SHA-1 and a signature of its
sources (path relative to the root, size and mtime of every part PNG),
the samples whose parts could not be merged (``bad``), and ``"complete": true``. The manifest is deleted
before any output is (re)written and written again, atomically, only when every output exists, so:

* an interrupted run leaves no manifest (or, from older runs, one without ``complete``): the cache is not
  used, and the next ``prepare`` rebuilds everything;
* ``prepare`` on a complete cache re-hashes every output and re-stats every source, and rebuilds only the
  samples whose output is missing/altered or whose parts changed (size or mtime), also when the cache was
  built for another root (e.g. a copy of this one: the signatures are relative to the root);
* the dataset checks the manifest (version, root as above, ``complete``, an entry for every sample of the split)
  when it is created, and the SHA-1 of each mask file when it reads it (free: the bytes are read anyway),
  raising a :class:`~fpliif.data.DataError` that says to run ``fpliif data prepare`` on any mismatch. It
  never prepares by itself unless asked (``FaceParsingDataset(..., auto_prepare=True)``): with several DDP
  ranks that would race.

Location: ``--cache DIR`` if given, else ``ROOT/fpliif-cache/`` if the root is writable, else the user cache
dir ``$FPLIIF_CACHE_DIR`` or ``$XDG_CACHE_HOME/fpliif`` or ``~/.cache/fpliif``, in a sub-folder
``celebamask-hq-<hash of the resolved root path>``. Readers look in both default places; a cache elsewhere only
where given the same folder again (:func:`prepare_hint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..labels import CELEBAMASK_HQ, index_png
from .io import DataError, error_parts, merge_parts
from .layouts import Sample, scan_layout

log = logging.getLogger("fpliif.data")

CACHE_FORMAT = "fpliif-celebamask-hq-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
MASK_DIR = "masks"


def _root_id(root: str | Path) -> str:
    return str(Path(root).expanduser().resolve())


def _manifest_root(cache_dir: Path, root: str | Path) -> str:
    """The ``root`` a manifest records: relative to ``cache_dir`` (``..``) when the cache lies inside the root,
    so the pair may move together; else the root's absolute path."""
    here, cache = Path(_root_id(root)), cache_dir.expanduser().resolve()
    return Path(os.path.relpath(here, cache)).as_posix() if cache.is_relative_to(here) else str(here)


def _built_for(cache_dir: Path, recorded: object) -> str:
    """The absolute root a manifest's ``root`` names (a relative one is relative to the cache folder)."""
    if not isinstance(recorded, str):
        return repr(recorded)
    return recorded if Path(recorded).is_absolute() else _root_id(cache_dir.expanduser() / recorded)


def prepare_command(root: str | Path, cache: str | Path | None = None) -> str:
    """The ``fpliif data prepare`` command line that (re)builds the cache of ``root`` (in ``cache`` if given)."""
    return f"fpliif data prepare --data {root}" + (f" --cache {cache}" if cache is not None else "")


def prepare_hint(root: str | Path, cache: str | Path | None = None) -> str:
    """What to run when ``root`` has no valid cache (in every command's words: the options that pass a cache)."""
    return (
        f"Run `{prepare_command(root, cache)}` (it reuses the masks whose parts are unchanged). A cache "
        "prepared with --cache DIR is found only where the same DIR is given: --cache DIR to fpliif eval and "
        "fpliif data check, data.cache=DIR to fpliif train, cache=DIR to FaceParsingDataset (which can also "
        "prepare it: auto_prepare=True)"
    )


def user_cache_dir(root: str | Path) -> Path:
    base = os.environ.get("FPLIIF_CACHE_DIR")
    if base:
        base_path = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base_path = (Path(xdg) if xdg else Path.home() / ".cache") / "fpliif"
    digest = hashlib.sha1(_root_id(root).encode("utf-8")).hexdigest()[:12]
    return base_path / f"celebamask-hq-{digest}"


def candidate_cache_dirs(root: str | Path, cache: str | Path | None = None) -> list[Path]:
    """Where a cache for ``root`` may be: ``cache`` if given, else ``ROOT/fpliif-cache`` or the user cache."""
    if cache is not None:
        return [Path(cache).expanduser()]
    return [Path(root).expanduser() / "fpliif-cache", user_cache_dir(root)]


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def choose_cache_dir(root: str | Path, cache: str | Path | None = None) -> Path:
    """The cache folder ``prepare`` writes to (created)."""
    if cache is not None:
        path = Path(cache).expanduser()
        if not _writable_dir(path):
            raise FileNotFoundError(f"cache folder {path} cannot be created or written")
        return path
    for path in candidate_cache_dirs(root):
        if _writable_dir(path):
            return path
    first, second = candidate_cache_dirs(root)
    raise FileNotFoundError(f"neither {first} nor {second} is writable; pass --cache DIR")


@dataclass
class Cache:
    """A validated cache: ``entries[name] = {"mask", "size", "sha1", "sources"}``,
    ``bad[name] = {"sources", "path", "reason"}`` for samples whose parts could not be merged, and the ``root``
    its manifest records (:func:`_manifest_root`)."""

    dir: Path
    entries: dict[str, dict]
    bad: dict[str, dict]
    root: str = ""

    def mask_path(self, name: str) -> Path:
        return self.dir / self.entries[name]["mask"]


def read_manifest(cache_dir: Path, root: str | Path, any_root: bool = False) -> tuple[Cache | None, str]:
    """The cache in ``cache_dir`` if its manifest is complete and belongs to ``root`` (any root with ``any_root``,
    for :func:`prepare`, whose signatures are relative to the root), else (None, why)."""
    path = cache_dir / MANIFEST
    if not path.is_file():
        if (cache_dir / MASK_DIR).is_dir():
            return None, f"{cache_dir}: no manifest (an interrupted prepare?)"
        return None, f"{cache_dir}: no cache"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable manifest ({e})"
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        return None, f"{path}: not an fpliif CelebAMask-HQ cache manifest"
    if manifest.get("version") != CACHE_VERSION:
        return None, f"{path}: cache version {manifest.get('version')}, expected {CACHE_VERSION}"
    if manifest.get("complete") is not True:
        return None, f"{path}: incomplete cache (no complete marker: an interrupted prepare?)"
    built_for = _built_for(cache_dir, manifest.get("root"))
    if built_for != _root_id(root) and not any_root:
        return None, (
            f"{path}: cache was built for {built_for}, not {_root_id(root)} (a cache outside its root, or one "
            "written by an older fpliif, names the root's absolute path: prepare it for this root, or give this "
            "root's cache)"
        )
    samples, bad = manifest.get("samples"), manifest.get("bad", {})
    if not isinstance(samples, dict) or not isinstance(bad, dict):
        return None, f"{path}: malformed manifest"
    return Cache(cache_dir, samples, bad, str(manifest.get("root"))), ""


def find_cache(root: str | Path, cache: str | Path | None = None) -> tuple[Cache | None, list[str]]:
    """The first valid cache among :func:`candidate_cache_dirs`, and the reasons the others were rejected."""
    reasons = []
    for d in candidate_cache_dirs(root, cache):
        found, why = read_manifest(d, root)
        if found is not None:
            return found, reasons
        reasons.append(why)
    return None, reasons


def sources_signature(parts: tuple[tuple[int, Path], ...], root: Path) -> str:
    """SHA-1 over (relative path, size, mtime_ns) of every part PNG: changes when any part changes."""
    h = hashlib.sha1()
    for cls, p in parts:
        st = os.stat(p)
        try:
            rel = Path(p).relative_to(root).as_posix()
        except ValueError:
            rel = str(p)
        h.update(f"{cls}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _build_one(task: tuple[str, tuple[tuple[int, str], ...], str, str]) -> tuple[str, dict | None, dict]:
    """Merge one sample's parts and write the mask atomically (runs in a worker process)."""
    name, parts, out_dir, sig = task
    try:
        mask = merge_parts(tuple((c, Path(p)) for c, p in parts), name)
    except DataError as e:
        path, reason = error_parts(e, name)
        return name, None, {"sources": sig, "path": path, "reason": reason}
    data = index_png(mask, CELEBAMASK_HQ, compress_level=1)  # viewers show the class colours
    rel = f"{MASK_DIR}/{name}.png"
    out = Path(out_dir) / rel
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return name, {"mask": rel, "size": len(data), "sha1": hashlib.sha1(data).hexdigest(), "sources": sig}, {}


def _output_ok(cache_dir: Path, entry: dict) -> bool:
    path = cache_dir / entry.get("mask", "")
    try:
        if path.stat().st_size != entry.get("size"):
            return False
        return hashlib.sha1(path.read_bytes()).hexdigest() == entry.get("sha1")
    except OSError:
        return False


@dataclass
class PrepareResult:
    cache_dir: Path
    built: int = 0
    reused: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    total: int = 0


def prepare(
    root: str | Path,
    cache: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Merge the part PNGs of every CelebAMask-HQ sample into cached index masks (see the module docstring).

    Reuses valid outputs of a previous complete run; rebuilds everything after an interrupted one.
    """
    root = Path(root).expanduser()
    scan = scan_layout(root, "celebamask-hq", "all")
    cache_dir = choose_cache_dir(root, cache)
    old, why = read_manifest(cache_dir, root, any_root=True)
    if old is None and why and "no cache" not in why:
        log.warning("rebuilding the whole cache: %s", why)
    elif old is not None and _built_for(cache_dir, old.root) != _root_id(root):
        log.warning(
            "%s was built for %s: reusing its masks whose parts are unchanged",
            cache_dir,
            _built_for(cache_dir, old.root),
        )
    result = PrepareResult(cache_dir=cache_dir, bad=list(scan.bad), total=len(scan.samples))
    samples: dict[str, Sample] = {s.name: s for s in scan.samples}
    entries: dict[str, dict] = {}
    bad: dict[str, dict] = {}
    todo: list[tuple[str, tuple[tuple[int, str], ...], str, str]] = []
    for name, s in samples.items():
        sig = sources_signature(s.parts, root)
        prev = old.entries.get(name) if old is not None else None
        if prev is not None and prev.get("sources") == sig and _output_ok(cache_dir, prev):
            entries[name] = prev
        elif old is not None and name in old.bad and old.bad[name].get("sources") == sig:
            bad[name] = old.bad[name]
        else:
            todo.append((name, tuple((c, str(p)) for c, p in s.parts), str(cache_dir), sig))
    result.reused = len(entries) + len(bad)
    stale = (
        old is None
        or bool(todo)
        or set(old.entries) != set(entries)
        or set(old.bad) != set(bad)
        or old.root != _manifest_root(cache_dir, root)  # another root's, or an absolute path where ".." will do
    )
    if stale:
        (cache_dir / MANIFEST).unlink(missing_ok=True)  # from here on the cache is not valid until complete
        (cache_dir / MASK_DIR).mkdir(parents=True, exist_ok=True)
    if todo:
        n = min(workers if workers is not None else min(2, os.cpu_count() or 1), len(todo))
        bar = tqdm(total=len(todo), desc="merging CelebAMask-HQ parts", unit="mask", disable=not progress)
        pool = None
        try:
            if n <= 1:
                results = map(_build_one, todo)
            else:
                pool = multiprocessing.get_context().Pool(n)
                results = pool.imap_unordered(_build_one, todo, chunksize=8)
            for name, entry, err in results:
                if entry is None:
                    bad[name] = err
                else:
                    entries[name] = entry
                    result.built += 1
                bar.update(1)
        finally:  # also on Ctrl-C: stop the workers; no manifest is written, so nothing half-done is trusted
            bar.close()
            if pool is not None:
                pool.terminate()
                pool.join()
    result.bad += [(b["path"], b["reason"]) for b in bad.values()]
    if stale:
        keep = {Path(e["mask"]).name for e in entries.values()}
        for p in (cache_dir / MASK_DIR).iterdir():
            if p.name not in keep:
                p.unlink(missing_ok=True)
        manifest = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "root": _manifest_root(cache_dir, root),
            "label_set": CELEBAMASK_HQ.name,
            "classes": list(CELEBAMASK_HQ.classes),
            "samples": entries,
            "bad": bad,
            "complete": True,  # written last: only a finished run produces a manifest at all
        }
        tmp = cache_dir / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(manifest, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, cache_dir / MANIFEST)
    return result
