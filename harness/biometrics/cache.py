"""On-disk embedding cache: one SQLite file, written only by the evaluating process.

Key: sha256 of (image content hash, backend, model version, condition, seed, policy), so a
changed image, model or condition never hits a stale entry. Failures to acquire are cached
too (with their reason), so a re-run does not retry them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "FACEHIL_CACHE"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facehil"


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(image_hash: str, backend: str, model_version: str, condition: str, seed: int, policy: str) -> str:
    return hashlib.sha256("\x1f".join([image_hash, backend, model_version, condition, str(seed), policy])
                          .encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    embedding: np.ndarray | None
    reason: str
    face_count: int


class EmbeddingCache:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "embeddings.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, reason TEXT NOT NULL, "
                         "face_count INTEGER NOT NULL, vector BLOB)")
        self._pending: list[tuple] = []

    def get_many(self, keys: list[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self._db.execute(f"SELECT key, reason, face_count, vector FROM embeddings WHERE key IN "
                                    f"({','.join('?' * len(chunk))})", chunk)
            for key, reason, faces, blob in rows:
                vec = np.frombuffer(blob, dtype=np.float32).copy() if blob is not None else None
                out[key] = Entry(vec, reason, int(faces))
        return out

    def put(self, key: str, entry: Entry) -> None:
        blob = None if entry.embedding is None else np.asarray(entry.embedding, np.float32).tobytes()
        self._pending.append((key, entry.reason, entry.face_count, blob))
        if len(self._pending) >= 200:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._db.close()
