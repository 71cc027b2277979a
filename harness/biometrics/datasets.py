"""Comparison lists (pairs) for accuracy evaluation: LFW View 2, folder-of-identities, ORL.

A ``Pair`` names two image files; the first is the reference (the card photo's role), the
second the probe (the live frame's role, where capture conditions are applied). Loaders
return paths only: images are read later, one at a time, by the evaluation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from harness.facedata import IMAGE_SUFFIXES, FaceDataError, list_identities


class PairsError(FaceDataError):
    """A pairs file is malformed or names images that are not there."""


@dataclass(frozen=True)
class Pair:
    reference: Path
    probe: Path
    genuine: bool
    subject_a: str
    subject_b: str
    fold: int = 0


def lfw_image_path(root: Path, name: str, index: int) -> Path:
    return root / name / f"{name}_{index:04d}.jpg"


def load_lfw_pairs(pairs_file: Path, image_root: Path | None = None, check: bool = True) -> list[Pair]:
    """LFW View 2 ``pairs.txt``: header ``folds<TAB>n``, then per fold n matched lines
    ``name i j`` and n mismatched lines ``name1 i name2 j``.

    Raises PairsError naming the line for a malformed file, and one PairsError listing every
    missing image (when ``check``).
    """
    pairs_file = Path(pairs_file)
    root = Path(image_root) if image_root else pairs_file.parent
    try:
        lines = [ln.split() for ln in pairs_file.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PairsError(f"cannot read pairs file {pairs_file}: {exc}") from exc
    if not lines:
        raise PairsError(f"pairs file is empty: {pairs_file}")
    header = lines[0]
    if len(header) == 2 and all(h.isdigit() for h in header):
        folds, per_fold = int(header[0]), int(header[1])
        body = lines[1:]
    elif len(header) == 1 and header[0].isdigit():  # View 1 style: just a count
        folds, per_fold = 1, int(header[0])
        body = lines[1:]
    else:
        raise PairsError(f"{pairs_file}:1: expected a header 'folds<TAB>pairs_per_fold', got {' '.join(header)!r}")
    if len(body) != folds * per_fold * 2:
        raise PairsError(f"{pairs_file}: header promises {folds} folds x {per_fold} matched + {per_fold} "
                         f"mismatched = {folds * per_fold * 2} lines, found {len(body)}")
    pairs: list[Pair] = []
    for n, fields in enumerate(body):
        lineno = n + 2
        fold = n // (2 * per_fold)
        try:
            if len(fields) == 3:
                name, i, j = fields[0], int(fields[1]), int(fields[2])
                pairs.append(Pair(lfw_image_path(root, name, i), lfw_image_path(root, name, j), True, name, name, fold))
            elif len(fields) == 4:
                a, i, b, j = fields[0], int(fields[1]), fields[2], int(fields[3])
                pairs.append(Pair(lfw_image_path(root, a, i), lfw_image_path(root, b, j), False, a, b, fold))
            else:
                raise ValueError("expected 3 or 4 fields")
        except ValueError as exc:
            raise PairsError(f"{pairs_file}:{lineno}: {exc}: {' '.join(fields)!r}") from exc
    if check:
        check_pairs(pairs, source=str(pairs_file))
    return pairs


def check_pairs(pairs: Iterable[Pair], source: str = "pairs") -> None:
    """One error listing every image the pairs name that does not exist."""
    missing = sorted({str(p) for pair in pairs for p in (pair.reference, pair.probe) if not p.is_file()})
    if missing:
        shown = "\n  ".join(missing[:50])
        more = f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else ""
        raise PairsError(f"{source} names {len(missing)} missing image(s):\n  {shown}{more}")


def folder_pairs(root: Path, seed: int = 0, genuine_per_identity: int = 10,
                 n_impostor: int | None = None) -> list[Pair]:
    """Deterministic pairs from a folder of identity sub-folders (ORL, LFW layout, own data).

    Genuine: up to ``genuine_per_identity`` distinct image pairs per identity with 2+ images,
    drawn with ``seed``. Impostor: as many as genuine (or ``n_impostor``), each from two
    different identities, also drawn with ``seed``. The same inputs give the same pairs.
    """
    identities = list_identities(Path(root))
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for ident in identities:
        if len(ident.images) < 2:
            continue
        combos = list(itertools.combinations(range(len(ident.images)), 2))
        take = min(genuine_per_identity, len(combos))
        for k in sorted(rng.choice(len(combos), size=take, replace=False).tolist()):
            i, j = combos[k]
            pairs.append(Pair(ident.images[i], ident.images[j], True, ident.name, ident.name))
    if len(identities) < 2:
        raise PairsError(f"need at least two identities for impostor pairs under {root}")
    n_imp = n_impostor if n_impostor is not None else max(len(pairs), 1)
    seen: set[tuple[Path, Path]] = set()
    attempts = 0
    while len(seen) < n_imp and attempts < n_imp * 20:
        attempts += 1
        a, b = rng.choice(len(identities), size=2, replace=False)
        ia, ib = identities[int(a)], identities[int(b)]
        key = (ia.images[int(rng.integers(len(ia.images)))], ib.images[int(rng.integers(len(ib.images)))])
        if key in seen:
            continue
        seen.add(key)
        pairs.append(Pair(key[0], key[1], False, ia.name, ib.name))
    return pairs


def is_orl(root: Path) -> bool:
    """ORL / AT&T layout: s1..s40 folders of 1.pgm..10.pgm."""
    root = Path(root)
    return (root / "s1").is_dir() and any(p.suffix.lower() == ".pgm" for p in (root / "s1").iterdir())


def orl_pairs(root: Path, seed: int = 0) -> list[Pair]:
    """ORL: every identity has 10 images; 10 genuine pairs per identity and as many impostors."""
    root = Path(root)
    if not is_orl(root):
        raise PairsError(f"not an ORL folder (expected s1/1.pgm ...): {root}")
    return folder_pairs(root, seed=seed, genuine_per_identity=10)


def pairs_for(dataset: Path, pairs_file: Path | None = None, seed: int = 0) -> tuple[list[Pair], str]:
    """Pairs for a dataset folder and a description of where they came from.

    An explicit pairs file wins; else ``DIR/pairs.txt``; else ORL; else folder-of-identities.
    """
    dataset = Path(dataset)
    if pairs_file is not None:
        return load_lfw_pairs(Path(pairs_file), dataset), f"pairs file {pairs_file}"
    if (dataset / "pairs.txt").is_file():
        return load_lfw_pairs(dataset / "pairs.txt", dataset), f"pairs file {dataset / 'pairs.txt'}"
    if is_orl(dataset):
        return orl_pairs(dataset, seed), f"ORL pairs, seed {seed}"
    return folder_pairs(dataset, seed=seed), f"folder-of-identities pairs, seed {seed}"


def subject_indices(pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Integer subject ids for bootstrap: (genuine [n_g], impostor [n_i, 2], names)."""
    names: dict[str, int] = {}

    def idx(n: str) -> int:
        return names.setdefault(n, len(names))

    gen = np.array([idx(p.subject_a) for p in pairs if p.genuine], dtype=np.int64)
    imp = np.array([[idx(p.subject_a), idx(p.subject_b)] for p in pairs if not p.genuine],
                   dtype=np.int64).reshape(-1, 2)
    return gen, imp, list(names)


__all__ = ["Pair", "PairsError", "load_lfw_pairs", "check_pairs", "folder_pairs", "orl_pairs", "is_orl",
           "pairs_for", "subject_indices", "IMAGE_SUFFIXES"]
