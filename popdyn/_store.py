"""The result store of a sweep: one checksummed JSON record per point, written atomically.

Layout of a store directory::

    STORE/sweep.json            the sweep's configuration (what `popdyn sweep` was given)
    STORE/records/<key>.json    one record per point (and replica)
    STORE/arrays/<key>.npz      the point's trajectory, when the sweep keeps them

``<key>`` is :func:`record_key`: a hash of the point's canonical parameters (model, verb and
every option, the seed included), so a rerun finds the points already done by name, whatever
the order of the grid or the executor that computed them.

Guarantees
----------
* **Atomic.**  Each file is written under a temporary name in the same directory, then
  renamed into place (``os.replace``).  A sweep killed at any instant leaves every record
  either complete or absent (at worst a stray ``.*.tmp`` file, ignored and cleaned up).
* **Checked.**  A record carries the SHA-256 of its own canonical JSON (``checksum``) and of
  its array file (``array.sha256``).  :meth:`ResultStore.read` recomputes both: a record that
  was truncated, edited, or whose array is missing or damaged is reported as corrupt, and the
  sweep recomputes the point instead of using it.
* **Cheap.**  No ``fsync`` per record: the rename already makes a kill (``SIGKILL``,
  Ctrl-C) safe, and the checksum covers the rarer case the fsync would cover (a power cut
  that leaves a renamed file with missing data): such a record fails its checksum and is
  recomputed.  Writing a record then costs about 0.4 ms instead of 4-6 ms with an fsync
  (measured on ext4 by ``benchmarks/bench_sweeps.py``), which keeps the bookkeeping of a
  10^4-point ODE sweep to seconds.

Why one ``.npz`` file per point for the arrays (and not one zarr or netCDF store): a point's
trajectory is then written exactly like its record -- atomically, by one writer, with its
own checksum -- so a killed sweep can never leave a shared array file half-updated (HDF5 and
netCDF files can be corrupted by a kill in mid-write; zarr needs locking for concurrent
writers).  The format is the one ``--out`` already writes (:meth:`popdyn.Trajectory.save`), it
needs no extra dependency, and a point's arrays can be read without touching the others.

Examples
--------
>>> import tempfile
>>> store = ResultStore(tempfile.mkdtemp())
>>> key = record_key({"model": "toy", "verb": "predict", "options": {"x": 1.5, "seed": 3}})
>>> len(key)
32
>>> _ = store.write({"key": key, "status": "ok", "outputs": {"y": 2.25}})
>>> store.read(key)[0]["outputs"]
{'y': 2.25}
>>> store.path(key).write_text('{"key": "truncated')   # a damaged record ...
18
>>> store.read(key)[1]                                  # ... is detected, never used
'not valid JSON'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ._io import atomic_write_bytes

__all__ = ["ResultStore", "record_key", "canonical_json", "RECORD_SCHEMA"]

#: Schema tag written into every record; a record with another tag is not read.
RECORD_SCHEMA = "popdyn-sweep-record/1"
#: Hex digits of the key (128 bits of SHA-256: collisions are out of reach for any sweep).
KEY_LENGTH = 32


def canonical_json(obj) -> bytes:
    """Compact, key-sorted JSON of ``obj`` (UTF-8): the text that hashes and checksums use.

    Non-finite floats are refused (``ValueError``): a record holds finite numbers or nulls.

    >>> canonical_json({"b": [1, 2.5], "a": None})
    b'{"a":null,"b":[1,2.5]}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def record_key(params: dict) -> str:
    """The store key of a point: the SHA-256 (first :data:`KEY_LENGTH` hex digits) of the
    canonical JSON of its parameters.

    >>> record_key({"a": 1, "b": 2.0}) == record_key({"b": 2.0, "a": 1})
    True
    """
    return hashlib.sha256(canonical_json(params)).hexdigest()[:KEY_LENGTH]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file beside ``path``, then rename (no fsync: see the module docstring)."""
    atomic_write_bytes(path, data, fsync=False)


class ResultStore:
    """A sweep's directory of records (module docstring).

    Parameters
    ----------
    root : str or Path
        The store directory; created (with ``records/`` and ``arrays/``) if missing.
    """

    def __init__(self, root):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"`out` {str(self.root)!r} is a file; the sweep store is a directory.")
        self.records = self.root / "records"
        self.arrays = self.root / "arrays"
        self.records.mkdir(parents=True, exist_ok=True)
        self.arrays.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The record file of ``key``."""
        return self.records / f"{key}.json"

    def array_path(self, key: str) -> Path:
        """The array file of ``key``."""
        return self.arrays / f"{key}.npz"

    def write(self, record: dict, array: bytes | None = None) -> dict:
        """Store ``record`` (a JSON-ready dict with a ``key``) and its optional array file.

        The array is written first and the record last, so a record on disk always has its
        array.  Adds ``schema``, ``array`` (file name, size, SHA-256) and ``checksum``;
        returns the record as stored.
        """
        key = record["key"]
        record = {k: v for k, v in record.items() if k not in ("checksum", "array")}
        record["schema"] = RECORD_SCHEMA
        if array is not None:
            path = self.array_path(key)
            _write_atomic(path, array)
            record["array"] = {"file": f"arrays/{path.name}", "bytes": len(array), "sha256": _sha256(array)}
        record["checksum"] = _sha256(canonical_json(record))
        _write_atomic(self.path(key), canonical_json(record))
        return record

    def read(self, key: str, *, check_array: bool = True) -> tuple[dict | None, str | None]:
        """``(record, None)`` for a sound record; ``(None, reason)`` otherwise.

        ``reason`` is ``"missing"`` when there is no record, else why it cannot be used
        (not valid JSON, checksum mismatch, another key or schema, array missing or damaged).
        """
        try:
            raw = self.path(key).read_bytes()
        except FileNotFoundError:
            return None, "missing"
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None, "not valid JSON"
        if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
            return None, f"not a {RECORD_SCHEMA} record"
        body = {k: v for k, v in record.items() if k != "checksum"}
        try:
            ok = record.get("checksum") == _sha256(canonical_json(body))
        except ValueError:  # non-finite numbers: written by something else
            ok = False
        if not ok:
            return None, "checksum mismatch"
        if record.get("key") != key:
            return None, f"holds key {record.get('key')!r}"
        if check_array and record.get("array") is not None:
            reason = self._check_array(record)
            if reason:
                return None, reason
        return record, None

    def _check_array(self, record: dict) -> str | None:
        info = record["array"]
        try:
            data = (self.root / info["file"]).read_bytes()
        except (OSError, KeyError, TypeError):
            return "array file missing"
        if len(data) != info.get("bytes") or _sha256(data) != info.get("sha256"):
            return "array file damaged (checksum mismatch)"
        return None

    def load_array(self, record: dict):
        """The :class:`popdyn.Trajectory` saved with ``record`` (``ValueError`` if it has none
        or the file fails its checksum)."""
        from .trajectory import Trajectory

        if record.get("array") is None:
            raise ValueError(f"record {record.get('key')!r} has no array file (sweep without `trajectories = true`).")
        reason = self._check_array(record)
        if reason:
            raise ValueError(f"record {record['key']!r}: {reason}; rerun the sweep to recompute it.")
        return Trajectory.load(self.root / record["array"]["file"])

    def write_config(self, config: dict) -> None:
        """Write ``sweep.json`` atomically, keys in their given order (the order of a grid's axes)."""
        _write_atomic(self.root / "sweep.json", (json.dumps(config, indent=2, allow_nan=False) + "\n").encode("utf-8"))

    def read_config(self) -> dict:
        """The content of ``sweep.json`` (``ValueError`` if the directory is not a store)."""
        try:
            data = json.loads((self.root / "sweep.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"`out` {str(self.root)!r} is not a sweep store (no readable sweep.json: {exc})."
                             ) from None
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ValueError(f"`out` {str(self.root)!r}: sweep.json holds no configuration.")
        return data

    def clean_temporary(self) -> int:
        """Remove temporary files left by a killed writer; return how many."""
        n = 0
        for folder in (self.records, self.arrays, self.root):
            for p in folder.glob(".*.tmp"):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
        return n
