"""Attack species of the subject presenter and the reference reader's face-hardware faults.

Frames are rendered by the presenter's scene code, written as image files and read back
through the real camera driver; the real dlib matcher and PAD decide (sim/reader/hw.py
``CameraFacePort``). The pairs are from the lfw-dev set: a holder whose live photo scores
between the threshold and the strict threshold, and a look-alike scoring between the loose
threshold and the threshold.
"""

from __future__ import annotations

import cv2
import pytest

from drivers.camera import OpenCVCamera
from harness.facedata import list_identities, resolve_faces
from sim.attacks import SPECIES
from sim.camera_scene import Display, Light, SceneError, SceneRenderer
from sim.reader.flow import Faults
from sim.reader.hw import THRESHOLD_FAULT_SHIFT, CameraFacePort, FaceFaults

HOLDER = "Hugo_Chavez"  # live photo scores ~0.52: accepted, refused by a threshold 0.12 stricter
LOOKALIKE = "Franko_Simatovic"  # against Hugo_Chavez's card photo ~0.40: refused, accepted 0.12 looser


@pytest.fixture(scope="module")
def scene():
    faces = resolve_faces(None)
    names = {i.name for i in list_identities(faces)} if not faces.low_fidelity else set()
    if not {HOLDER, LOOKALIKE} <= names:
        pytest.skip(f"needs the lfw-dev face set with {HOLDER} and {LOOKALIKE} (FACEHIL_FACES)")
    return SceneRenderer(list_identities(faces))


@pytest.fixture(scope="module")
def matcher():
    from harness.biometrics import FaceMatcher, load_backend

    return FaceMatcher(load_backend("dlib", min_face_px=100))  # as the reference reader builds it


def _attempt(tmp_path, scene, matcher, display: Display, faults: Faults):
    path = tmp_path / f"{display.mode}-{display.subject}-{display.species}.png"
    cv2.imwrite(str(path), scene.render(display, Light()))
    enrollment = matcher.enroll(str(scene.identities[HOLDER].images[0]))  # the card photo
    with OpenCVCamera(str(path), loop=True) as cam:
        port = CameraFacePort(cam, matcher, faults=lambda: FaceFaults.of(faults))
        return port.attempt(enrollment, detect_attack=True)


def test_unknown_species_is_refused(scene):
    with pytest.raises(SceneError, match="species"):
        scene.validate(Display(mode="attack", subject=HOLDER, species="mask3d"))
    assert SPECIES == ("print", "screen", "cutout")


def test_pad_sees_print_and_screen_and_the_replay_fault_lets_only_the_screen_through(tmp_path, scene, matcher):
    correct, faulty = Faults(), Faults(pass_screen_replay=True)
    live = _attempt(tmp_path, scene, matcher, Display(mode="subject", subject=HOLDER), correct)
    assert live.face_count == 1 and not live.attack and live.accepted
    for species in ("print", "screen"):
        shown = Display(mode="attack", subject=HOLDER, species=species)
        obs = _attempt(tmp_path, scene, matcher, shown, correct)
        assert obs.attack and obs.accepted, (species, obs)  # the photo matches; PAD refuses it
        through = _attempt(tmp_path, scene, matcher, shown, faulty)
        assert through.attack is (species == "print"), (species, through)
    # a cut-out print has no straight edge: the frame-based PAD does not see it (reported, not hidden)
    cut = _attempt(tmp_path, scene, matcher, Display(mode="attack", subject=HOLDER, species="cutout"), correct)
    assert cut.face_count == 1 and not cut.attack and cut.accepted


def test_threshold_faults_move_the_decision(tmp_path, scene, matcher):
    thr = matcher.threshold
    holder = Display(mode="subject", subject=HOLDER)
    lookalike = Display(mode="subject", subject=LOOKALIKE)
    g = _attempt(tmp_path, scene, matcher, holder, Faults())
    i = _attempt(tmp_path, scene, matcher, lookalike, Faults())
    assert thr <= g.score < thr + THRESHOLD_FAULT_SHIFT and g.accepted
    assert thr - THRESHOLD_FAULT_SHIFT <= i.score < thr and not i.accepted
    assert not _attempt(tmp_path, scene, matcher, holder, Faults(strict_threshold=True)).accepted
    assert _attempt(tmp_path, scene, matcher, lookalike, Faults(loose_threshold=True)).accepted
    assert _attempt(tmp_path, scene, matcher, holder, Faults(loose_threshold=True)).accepted
