"""`facehil bench accuracy|latency` through the real CLI (Typer runner, in process)."""

from __future__ import annotations

import json
import re

import cv2
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.biometrics.tinypack import blob_image, build_tiny_pack

runner = CliRunner()


@pytest.fixture(scope="module")
def lfw(faces_several):
    root = faces_several.root / "lfw-dev"
    if not (root / "pairs.txt").is_file():
        pytest.skip(f"needs lfw-dev/pairs.txt under FACEHIL_FACES ({faces_several.root})")
    return root


def test_accuracy_json_html_and_warm_cache(lfw, tmp_path):
    out, page, cache = tmp_path / "acc.json", tmp_path / "acc.html", tmp_path / "cache"
    args = ["bench", "accuracy", "--dataset", str(lfw), "--limit", "20", "--workers", "2", "--json", str(out),
            "--html", str(page), "--cache-dir", str(cache), "--bootstrap", "50", "--condition", "nominal",
            "--condition", "glasses"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    for key in ("backend", "pairs", "genuine", "impostor", "fta_rate", "eer", "fnmr_at_fmr", "threshold_at_fmr",
                "ci95"):
        assert key in data
    assert data["backend"] == "dlib" and data["pairs"] == 20
    assert set(data["fnmr_at_fmr"]) == {"0.01", "0.001"}
    assert set(data["conditions"]) == {"nominal", "glasses"}
    assert data["run"]["workers"] == 2 and data["run"]["embedded"] > 0
    assert data["run"]["peak_rss_mb"]["largest_worker"] > 0  # the work ran in worker processes
    html = page.read_text()
    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == 1 + 2  # one DET plot + one histogram per condition: no face images
    assert all("data:image/png;base64," in i and ("DET" in i or "histogram" in i) for i in imgs)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    data2 = json.loads(out.read_text())
    assert data2["run"]["embedded"] == 0 and data2["run"]["cache_hits"] == data["run"]["images"]
    assert data2["eer"] == data["eer"]


def test_pairs_naming_missing_images_is_one_clear_error(tmp_path):
    (tmp_path / "Ann").mkdir()
    (tmp_path / "pairs.txt").write_text("1\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\n")
    res = runner.invoke(app, ["bench", "accuracy", "--dataset", str(tmp_path), "--json", str(tmp_path / "o.json")])
    assert res.exit_code == 2
    out = "".join(res.output.split())  # whitespace-free: robust to terminal wrapping
    assert "3missingimage(s)" in out
    for name in ("Ann_0001.jpg", "Ann_0002.jpg", "Bob_0003.jpg"):
        assert name in out
    assert not (tmp_path / "o.json").exists()


def test_bad_images_count_as_fta_with_reasons(tmp_path):
    # identity folders: a real-looking blank, a garbage file, an RGBA image: no crash, FTA reasons
    for ident in ("a", "b"):
        (tmp_path / ident).mkdir()
        cv2.imwrite(str(tmp_path / ident / "1.png"), blob_image(250, 250, (125, 125)))
        (tmp_path / ident / "2.jpg").write_bytes(b"this is not a jpeg")
        cv2.imwrite(str(tmp_path / ident / "3.png"), cv2.cvtColor(blob_image(250, 250, (125, 125)), cv2.COLOR_BGR2BGRA))
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["bench", "accuracy", "--dataset", str(tmp_path), "--json", str(out),
                              "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["fta_rate"] == 1.0
    assert set(data["images"]["fta_reasons"]) <= {"unreadable", "no_face"}
    assert data["images"]["fta_reasons"].get("unreadable", 0) >= 1


def test_accuracy_with_an_insightface_pack(tmp_path):
    pack = build_tiny_pack(tmp_path / "pack")
    data_dir = tmp_path / "blobs"
    for k, grey in enumerate((255, 220, 190)):
        d = data_dir / f"id{k}"
        d.mkdir(parents=True)
        for i, centre in enumerate(((320, 256), (352, 224))):
            cv2.imwrite(str(d / f"{i}.png"), blob_image(640, 480, centre, colour=(grey, grey, grey)))
    out = tmp_path / "o.json"
    res = runner.invoke(app, ["bench", "accuracy", "--dataset", str(data_dir), "--backend", "insightface",
                              "--model-pack", str(pack), "--json", str(out), "--cache-dir", str(tmp_path / "c"),
                              "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["backend"] == "insightface" and data["fta_rate"] == 0.0
    assert data["genuine"] == 3 and data["impostor"] == 3
    missing = runner.invoke(app, ["bench", "accuracy", "--dataset", str(data_dir), "--backend", "insightface",
                                  "--model-pack", str(tmp_path / "nope"), "--json", str(out)])
    assert missing.exit_code == 2
    assert str(tmp_path / "nope") in "".join(missing.output.split())  # rich may wrap the path


def test_latency_reports_every_stage(tmp_path):
    out = tmp_path / "lat.json"
    res = runner.invoke(app, ["bench", "latency", "--iterations", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["stages"]) == {"decode", "detect", "align", "embed", "compare", "end_to_end"}
    for s in data["stages"].values():
        assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] and s["n"] == 3
    assert data["frame"]["width"] == 640 and data["frame"]["height"] == 480
    assert data["decision"]["face_count"] == 1
    assert data["baseline"] is None or data["baseline"]["end_to_end"]["p50_ms"] > 0


def test_acquisition_reports_fta_against_the_baseline_and_each_pass(tmp_path):
    from harness.facedata import list_identities, prepare_samples

    samples = [cv2.imread(str(i.images[0])) for i in list_identities(prepare_samples())[:2]]
    data = tmp_path / "faces"
    for k, img in enumerate(samples):
        (data / f"id{k}").mkdir(parents=True)
        cv2.imwrite(str(data / f"id{k}" / "1.png"), img)
        cv2.imwrite(str(data / f"id{k}" / "2.png"), cv2.flip(img, 1))
    cv2.imwrite(str(data / "id1" / "3.png"), blob_image(200, 200, (100, 100)))  # no face in it
    out = tmp_path / "acq.json"
    res = runner.invoke(app, ["bench", "acquisition", "--dataset", str(data), "--json", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["images"] == 5 and r["ours_fta_images"] == 1
    passes = r["passes"]
    assert passes["hog_grey_up1"]["runs"] == 5 and passes["hog_grey_up1"]["found"] == 4
    assert passes["hog_eq_up2"]["runs"] == 1 and passes["hog_eq_up2"]["found"] == 0  # only the blank got there
    if r["baseline_fta_images"] is not None:
        assert r["baseline_fta_images"] == 1 and r["ours_fta_pairs"] <= r["baseline_fta_pairs"]
    assert "hog_eq_up2" in res.output
    missing = runner.invoke(app, ["bench", "acquisition", "--dataset", str(tmp_path / "nope")])
    assert missing.exit_code == 2
