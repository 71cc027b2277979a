"""Streaming accuracy evaluation of a backend on a list of pairs.

- Each distinct (image, condition) is embedded once: references always nominal, probes
  under each requested condition (drawn where the detector finds the face on the clean probe).
- Images are read one at a time by whichever process embeds them; only embeddings (a few
  hundred bytes each) stay in memory.
- Embeddings are cached on disk (``cache.EmbeddingCache``), so a re-run only hashes files.
- ``workers`` > 1 uses that many processes (spawned: each loads its own model once).
- A pair where either image fails to acquire is an FTA pair: excluded from the scores,
  counted in ``fta_rate`` and in the generalized (FTA-as-error) rates.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import resource
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from harness.biometrics import conditions as cond
from harness.biometrics import images, metrics
from harness.biometrics.cache import EmbeddingCache, Entry, cache_key, file_hash
from harness.biometrics.datasets import Pair, subject_indices
from harness.biometrics.matcher import extract, load_backend, model_version, scorer

log = logging.getLogger(__name__)

FACE_AWARE = {"mask", "glasses", "backlight", "jpeg2000"}


@dataclass
class EvalConfig:
    backend: str = "dlib"
    model_pack: Path | None = None
    conditions: list[str] = field(default_factory=lambda: ["nominal"])
    seed: int = 0
    workers: int = 1
    cache_dir: Path | None = None
    use_cache: bool = True
    policy: str = "largest_central"
    n_boot: int = 1000


@dataclass(frozen=True)
class Job:
    path: str
    condition: str
    key: str


# -- the embedding step, in-process or in a worker ----------------------------------------
CHUNK = 16  # images per worker task: one batched embedding call, few round trips


def embed_one(backend, path: str, condition: str, seed: int, policy: str, embed: bool = True):
    """Never raises for bad images: failures are Entry(None, reason, faces).

    ``embed=False``: a found face comes back as an Extraction holding its aligned chip."""
    if condition == "nominal":
        ex = extract(backend, path, policy, embed=embed)
        return _entry_or_chip(ex, embed)
    try:
        decoded = images.load(path)
    except images.ImageError as exc:
        return Entry(None, exc.reason, 0)
    box = None
    if condition in FACE_AWARE:
        from harness.biometrics.matcher import choose_face

        face = choose_face(backend.detect(decoded.bgr), decoded.bgr.shape[1], decoded.bgr.shape[0], policy)
        box = face.box if face else None
    probe = cond.apply(decoded.bgr, condition, seed=seed, face_box=box)
    return _entry_or_chip(extract(backend, probe, policy, embed=embed), embed)


def _entry_or_chip(ex, embed: bool):
    if embed or ex.aligned is None:
        return Entry(ex.embedding, ex.reason, ex.face_count)
    return ex


def embed_chunk(backend, jobs: list["Job"], seed: int, policy: str) -> list[tuple[str, Entry]]:
    """Detect and align each image, then embed every face found in one batch."""
    batch = getattr(backend, "embed_batch", None)
    found = [(job, embed_one(backend, job.path, job.condition, seed, policy, embed=batch is None)) for job in jobs]
    chips = [r for _, r in found if not isinstance(r, Entry)]
    vectors = iter(batch([c.aligned for c in chips])) if batch and chips else iter(())
    out = []
    for job, r in found:
        if not isinstance(r, Entry):
            r = Entry(np.asarray(next(vectors), np.float32), "ok", r.face_count)
        out.append((job.key, r))
    return out


_worker_backend = None  # one per worker process, set by the pool initializer


def _init_worker(backend: str, model_pack, threads: int) -> None:
    global _worker_backend
    import cv2

    cv2.setNumThreads(threads)
    opts = {"threads": threads}
    _worker_backend = load_backend(backend, model_pack, **opts)


def _work(jobs: list["Job"], seed: int, policy: str) -> list[tuple[str, Entry]]:
    return embed_chunk(_worker_backend, jobs, seed, policy)


# -- orchestration --------------------------------------------------------------------------
def _jobs(pairs: list[Pair], cfg: EvalConfig, version: str, hashes: dict[str, str]) -> list[Job]:
    wanted: dict[tuple[str, str], None] = {}
    for p in pairs:
        wanted[(str(p.reference), "nominal")] = None
        for c in cfg.conditions:
            wanted[(str(p.probe), c)] = None
    return [Job(path, c, cache_key(hashes[path], cfg.backend, version, c, cfg.seed, cfg.policy))
            for path, c in wanted]


def _hash_files(paths: list[str], progress) -> dict[str, str]:
    out = {}
    for i, p in enumerate(paths):
        try:
            out[p] = file_hash(Path(p))
        except OSError:
            out[p] = "unreadable:" + p  # embedding it will report the FTA reason
        if progress:
            progress("hashing", i + 1, len(paths))
    return out


def embed_all(jobs: list[Job], cfg: EvalConfig, progress=None) -> tuple[dict[str, Entry], dict]:
    cache = EmbeddingCache(cfg.cache_dir) if cfg.use_cache else None
    results: dict[str, Entry] = cache.get_many([j.key for j in jobs]) if cache else {}
    hits = len(results)
    todo = [j for j in jobs if j.key not in results]
    done = hits
    if progress:
        progress("embedding", done, len(jobs))
    try:
        chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
        if chunks and cfg.workers <= 1:
            backend = load_backend(cfg.backend, cfg.model_pack)
            for chunk in chunks:
                for key, entry in embed_chunk(backend, chunk, cfg.seed, cfg.policy):
                    results[key] = entry
                    if cache:
                        cache.put(key, entry)
                done += len(chunk)
                if progress:
                    progress("embedding", done, len(jobs))
        elif chunks:
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(cfg.backend, cfg.model_pack, 1)) as pool:
                queue = iter(chunks)
                in_flight = set()
                while True:
                    while len(in_flight) < cfg.workers * 2:  # bounded: streams, never queues all
                        chunk = next(queue, None)
                        if chunk is None:
                            break
                        in_flight.add(pool.submit(_work, chunk, cfg.seed, cfg.policy))
                    if not in_flight:
                        break
                    finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        for key, entry in fut.result():
                            results[key] = entry
                            if cache:
                                cache.put(key, entry)
                            done += 1
                    if progress:
                        progress("embedding", done, len(jobs))
    finally:
        if cache:
            cache.close()
    return results, {"cache_hits": hits, "embedded": len(todo), "images": len(jobs)}


def score_condition(pairs: list[Pair], cfg: EvalConfig, condition: str, version: str,
                    hashes: dict[str, str], results: dict[str, Entry]) -> tuple[metrics.ScoreSet, dict]:
    compare = scorer(cfg.backend)
    gsub, isub, _ = subject_indices(pairs)
    gen_scores, imp_scores, g_keep, i_keep = [], [], [], []
    fta_reasons: Counter = Counter()
    fta_g = fta_i = 0
    gi = ii = 0
    for p in pairs:
        ref = results[cache_key(hashes[str(p.reference)], cfg.backend, version, "nominal", cfg.seed, cfg.policy)]
        probe = results[cache_key(hashes[str(p.probe)], cfg.backend, version, condition, cfg.seed, cfg.policy)]
        ok = ref.embedding is not None and probe.embedding is not None
        if not ok:
            for e in (ref, probe):
                if e.embedding is None:
                    fta_reasons[e.reason] += 1
        if p.genuine:
            if ok:
                gen_scores.append(compare(ref.embedding, probe.embedding))
                g_keep.append(gi)
            else:
                fta_g += 1
            gi += 1
        else:
            if ok:
                imp_scores.append(compare(ref.embedding, probe.embedding))
                i_keep.append(ii)
            else:
                fta_i += 1
            ii += 1
    n_g, n_i = gi, ii
    scores = metrics.ScoreSet(np.array(gen_scores), np.array(imp_scores),
                              genuine_subjects=gsub[g_keep] if g_keep else np.zeros(0, np.int64),
                              impostor_subjects=isub[i_keep] if i_keep else np.zeros((0, 2), np.int64))
    fta_gen = fta_g / n_g if n_g else 0.0
    fta_imp = fta_i / n_i if n_i else 0.0
    summary = metrics.summarize(scores, fta_genuine=fta_gen, fta_impostor=fta_imp, n_boot=cfg.n_boot, seed=cfg.seed)
    eer_fta = _eer_fta_as_error(scores, fta_g, fta_i)
    return scores, {
        "condition": condition, "pairs": len(pairs), "genuine": n_g, "impostor": n_i,
        "fta_rate": (fta_g + fta_i) / len(pairs) if pairs else 0.0,
        "fta_pairs": fta_g + fta_i, "fta_genuine_pairs": fta_g, "fta_impostor_pairs": fta_i,
        "fta_reasons": dict(fta_reasons), "eer_fta_as_error": eer_fta, **summary,
    }


def _eer_fta_as_error(scores: metrics.ScoreSet, fta_g: int, fta_i: int) -> float:
    """EER when FTA pairs count as errors: genuine FTA never match, impostor FTA never match."""
    gen = np.concatenate([scores.genuine, np.full(fta_g, -np.inf)])
    imp = np.concatenate([scores.impostor, np.full(fta_i, -np.inf)])
    if gen.size == 0 or imp.size == 0:
        return float("nan")
    return metrics.equal_error_rate(metrics.ScoreSet(gen, imp)).eer


def dataset_hash(hashes: dict[str, str], pairs_source: str) -> str:
    h = hashlib.sha256(pairs_source.encode())
    for path in sorted(hashes):
        h.update(hashes[path].encode())
    return h.hexdigest()


def evaluate(pairs: list[Pair], cfg: EvalConfig, progress: Callable[[str, int, int], None] | None = None,
             pairs_source: str = "") -> dict:
    unknown = [c for c in cfg.conditions if c not in cond.NAMES]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}: choose from {', '.join(cond.NAMES)}")
    t0 = time.perf_counter()
    cpu0 = cpu_seconds()
    version = model_version(cfg.backend, cfg.model_pack)
    paths = sorted({str(p) for pair in pairs for p in (pair.reference, pair.probe)})
    hashes = _hash_files(paths, progress)
    jobs = _jobs(pairs, cfg, version, hashes)
    results, stats = embed_all(jobs, cfg, progress)
    scored = {c: score_condition(pairs, cfg, c, version, hashes, results) for c in cfg.conditions}
    per_condition = {c: s[1] for c, s in scored.items()}
    first = per_condition[cfg.conditions[0]]
    image_fta = Counter(e.reason for e in results.values() if e.embedding is None)
    elapsed = time.perf_counter() - t0
    out = {
        "backend": cfg.backend, "model_version": version, "policy": cfg.policy, "seed": cfg.seed,
        "pairs_source": pairs_source, "dataset_hash": dataset_hash(hashes, pairs_source),
        **{k: v for k, v in first.items()},
        "conditions": per_condition,
        "images": {"distinct": len(paths), "embeddings": len(jobs), "fta": sum(image_fta.values()),
                   "fta_reasons": dict(image_fta)},
        "run": {"elapsed_s": elapsed, "cpu_s": cpu_seconds() - cpu0, "workers": cfg.workers, **stats,
                "peak_rss_mb": peak_rss_mb()},
        "_scores": {c: s[0] for c, s in scored.items()},  # ScoreSets; callers drop this before writing
    }
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished workers (s): on a shared
    machine, CPU time / workers is what the run would take with its cores to itself."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def peak_rss_mb() -> dict:
    """Peak resident memory of this process and of the largest finished worker (MB)."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"main": self_kb / 1024.0, "largest_worker": child_kb / 1024.0}
