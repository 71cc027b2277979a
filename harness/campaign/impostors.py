"""Hard impostors: for each card, the dataset identities that facehil's own matcher finds
nearest to the holder (ISO/IEC 19795-2 calls them "non-zero-effort" only when the impostor
acts; these are zero-effort, chosen by look-alikeness).

The holder is represented by the card photo (photo 0 of the identity, what the card carries),
each candidate by the photo the subject presenter shows for a live presentation (photo 1
when there is one). Embeddings go through the evaluation's on-disk cache, so a second plan on
the same dataset costs nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from harness.biometrics.cache import EmbeddingCache, Entry, cache_key, file_hash
from harness.biometrics.matcher import extract, load_backend
from harness.facedata import Identity

log = logging.getLogger(__name__)

POLICY = "largest_central"


def live_photo(ident: Identity) -> Path:
    return ident.images[1] if len(ident.images) > 1 else ident.images[0]


class _Embedder:
    def __init__(self, backend_name: str, cache_dir: Path | None):
        self.backend = load_backend(backend_name)
        self.cache = EmbeddingCache(cache_dir)

    def __call__(self, path: Path) -> np.ndarray | None:
        key = cache_key(file_hash(path), self.backend.name, self.backend.model_version, "nominal", 0, POLICY)
        hit = self.cache.get_many([key]).get(key)
        if hit is not None:
            return hit.embedding
        ex = extract(self.backend, path, POLICY)
        self.cache.put(key, Entry(ex.embedding, ex.reason, ex.face_count))
        return ex.embedding

    def close(self) -> None:
        self.cache.close()


def nearest_identities(identities: Sequence[Identity], holders: Mapping[str, str], per_card: int, pool: int,
                       seed: int, backend: str = "dlib", cache_dir: Path | None = None,
                       exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    """card id -> up to ``per_card`` identity names, nearest to its holder first.

    ``holders``: card id -> holder identity name. The candidates are ``pool`` identities drawn
    with ``seed`` from the dataset, less every holder and ``exclude`` (the whole deck's holders,
    so the pool does not depend on which cards a plan picks).
    """
    if per_card <= 0 or not holders:
        return {card: [] for card in holders}
    by_name = {i.name: i for i in identities}
    taken = set(holders.values()) | set(exclude)
    candidates = [i for i in identities if i.name not in taken]
    candidates = random.Random(seed).sample(candidates, min(pool, len(candidates)))
    embed = _Embedder(backend, cache_dir)
    try:
        cand = [(i.name, embed(live_photo(i))) for i in candidates]
        cand = [(n, e) for n, e in cand if e is not None]
        out: dict[str, list[str]] = {}
        for card, holder in holders.items():
            ident = by_name.get(holder)
            enrolled = embed(ident.images[0]) if ident else None
            if enrolled is None or not cand:
                log.warning("no hard impostors for card %s: holder %s not embeddable", card, holder)
                out[card] = []
                continue
            scores = [(embed.backend.compare(enrolled, e), n) for n, e in cand]
            scores.sort(reverse=True)
            out[card] = [n for _, n in scores[:per_card]]
        return out
    finally:
        embed.close()
