"""Pairs loaders: LFW View 2, folder-of-identities with a seed, ORL."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.biometrics.datasets import (PairsError, folder_pairs, is_orl, load_lfw_pairs, orl_pairs, pairs_for,
                                         subject_indices)


def _lfw_tree(root: Path, people: dict[str, int]) -> None:
    for name, n in people.items():
        (root / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")


def test_lfw_view2_pairs_with_folds(tmp_path):
    _lfw_tree(tmp_path, {"Ann": 3, "Bob": 2, "Cy": 1})
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t2\nCy\t1\tAnn\t3\n")
    pairs = load_lfw_pairs(tmp_path / "pairs.txt")
    assert [p.genuine for p in pairs] == [True, False, True, False]
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    assert pairs[0].reference == tmp_path / "Ann" / "Ann_0001.jpg"
    assert pairs[0].probe == tmp_path / "Ann" / "Ann_0002.jpg"
    assert (pairs[3].subject_a, pairs[3].subject_b) == ("Cy", "Ann")


def test_missing_images_are_listed_in_one_error(tmp_path):
    _lfw_tree(tmp_path, {"Ann": 1})
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tZed\t4\n")
    with pytest.raises(PairsError) as err:
        load_lfw_pairs(tmp_path / "pairs.txt")
    msg = str(err.value)
    assert "2 missing image(s)" in msg
    assert "Ann_0002.jpg" in msg and "Zed_0004.jpg" in msg


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("ten folds\n", "header"),
    ("1\t2\nAnn\t1\t2\n", "promises"),
    ("1\t1\nAnn\tone\t2\nAnn\t1\tBob\t1\n", ":2:"),
])
def test_malformed_pairs_files_name_the_problem(tmp_path, text, fragment):
    f = tmp_path / "pairs.txt"
    f.write_text(text)
    with pytest.raises(PairsError, match=fragment):
        load_lfw_pairs(f, check=False)


def _identity_tree(root: Path, n_ids: int, per_id: int, suffix: str = ".png") -> None:
    for k in range(n_ids):
        d = root / f"id{k:02d}"
        d.mkdir(parents=True)
        for i in range(per_id):
            (d / f"{i}{suffix}").write_bytes(b"x")


def test_folder_pairs_are_deterministic_per_seed(tmp_path):
    _identity_tree(tmp_path, 6, 4)
    a, b = folder_pairs(tmp_path, seed=1), folder_pairs(tmp_path, seed=1)
    assert a == b
    assert a != folder_pairs(tmp_path, seed=2)
    gen = [p for p in a if p.genuine]
    imp = [p for p in a if not p.genuine]
    assert len(gen) == 6 * 6  # C(4,2) = 6 per identity, under the cap of 10
    assert len(imp) == len(gen)
    assert all(p.subject_a == p.subject_b and p.reference != p.probe for p in gen)
    assert all(p.subject_a != p.subject_b for p in imp)


def test_orl_layout_is_recognised(tmp_path):
    for s in range(1, 4):
        d = tmp_path / f"s{s}"
        d.mkdir()
        for k in range(1, 11):
            (d / f"{k}.pgm").write_bytes(b"x")
    assert is_orl(tmp_path)
    pairs = orl_pairs(tmp_path, seed=0)
    assert sum(p.genuine for p in pairs) == 30
    assert pairs_for(tmp_path)[1].startswith("ORL")
    with pytest.raises(PairsError):
        orl_pairs(tmp_path / "s1")


def test_subject_indices_for_bootstrap(tmp_path):
    _identity_tree(tmp_path, 3, 2)
    pairs = folder_pairs(tmp_path, seed=0)
    g, i, names = subject_indices(pairs)
    assert g.shape == (3,) and i.shape == (3, 2)
    assert len(names) == 3


def test_real_lfw_dev_pairs_file(faces_several):
    root = faces_several.root / "lfw-dev" if (faces_several.root / "lfw-dev").is_dir() else faces_several.root
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"no lfw-dev/pairs.txt under {faces_several.root}")
    pairs = load_lfw_pairs(root / "pairs.txt")
    assert len(pairs) == 3000
    assert sum(p.genuine for p in pairs) == 1500
    assert {p.fold for p in pairs} == set(range(10))


def test_real_orl(faces_several):
    root = faces_several.root / "orl"
    if not is_orl(root):
        pytest.skip(f"no orl/ under {faces_several.root}")
    pairs = orl_pairs(root, seed=0)
    assert sum(p.genuine for p in pairs) == 400
    assert all(p.reference.suffix == ".pgm" for p in pairs)
