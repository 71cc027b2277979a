"""Mutation testing of the reference reader's flow against the scenarios (issue 11, section 5).

    .venv/bin/python benches/mutation_reader_flow.py --sample 40 [--seed 11] [--out FILE.md]

mutmut's mutation operators (``mutmut.mutation.file_mutation.create_mutations``) make every
mutant of ``sim/reader/flow.py``; a seeded sample of those inside the flow's functions (string
literals left out: the patient-facing wording the notice fixes lives in ``sim/reader/screens.py``)
is tried one by one. One simulated station runs for the whole bench; for each mutant only its
reader process is replaced by one running the mutated flow (a copy of ``sim/`` on PYTHONPATH),
and the scenarios of the mutated function's flow run against it through the ordinary plugin
(``pytest --station``). A mutant is *killed* when one of them fails, *survives* when all pass,
and is *not judged* when they were all skipped. Registrations the scenarios made are undone
between mutants (the simulated service's admin call), so every mutant meets the same deck.

A bench, not a test: it takes about a minute per mutant. It prints the score and the survivors
(function, line, diff) and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "sim" / "reader" / "flow.py"
SC = "test_"

# The scenarios of each part of the flow (node ids under scenarios/). Functions not named here
# get GENERIC: a face-auth visit, a PIN refusal and an ending.
GENERIC = ("test_face_auth_card.py::test_face_success[nominal]",
           "test_face_auth_card.py::test_pin_hidden_or_refused",
           "test_take_card_reminder.py::test_reminder_after_every_ending[end_on_method_select]")
FACE = ("test_face_auth_card.py::test_face_success[nominal]",
        "test_visual_fallback.py::test_staff_call_after_failed_face_auth",
        "test_several_faces.py::test_no_holder_in_a_crowded_frame_is_never_authenticated",
        "test_assisted_placement.py::test_carer_face_never_matched")
PIN = ("test_pin_counter.py::test_right_pin_in_between_resets_the_count",
       "test_face_auth_card.py::test_pin_attempt_refused[method_select]",
       "test_face_auth_card.py::test_pin_hidden_or_refused",
       "test_take_card_reminder.py::test_reminder_after_every_ending[pin_lock]")
VISUAL = ("test_visual_fallback.py::test_visual_check_with_a_standard_card",
          "test_visual_fallback.py::test_impostor_rejected_by_staff",
          "test_registration.py::test_visual_registration_refused_before_update[face-auth]")
REGISTRATION = ("test_registration.py::test_visual_registration_refused_before_update[standard]",
                "test_registration.py::test_skip_registration",
                "test_registration.py::test_register_by_face")
CONSENT = ("test_consent.py::test_under_40_pressing_consent",
           "test_consent.py::test_age_rule_at_the_birthday[40_tomorrow]",
           "test_consent.py::test_age_rule_at_the_birthday[40_today]",
           "test_consent.py::test_carer_operates_the_consent_screens")
ENDINGS = ("test_take_card_reminder.py::test_reminder_after_every_ending[end_on_method_select]",
           "test_take_card_reminder.py::test_reminder_after_every_ending[end_on_face_auth]",
           "test_take_card_reminder.py::test_reminder_after_every_ending[error]",
           "test_visual_fallback.py::test_impostor_rejected_by_staff")
SUBSETS: dict[str, tuple[str, ...]] = {
    "_face_tick": FACE, "_start_face": FACE, "_choose_face": FACE, "_face_failed": FACE + PIN[:1],
    "_pin_unavailable": PIN, "_choose_pin": PIN, "_enter_pin_entry": PIN, "_pin_not_here": PIN,
    "_verify_pin": PIN, "_staff_mode_visual": VISUAL, "_staff_mode_face": VISUAL,
    "_staff_visual_check": VISUAL, "_photo_shown": VISUAL, "_enter_visual_check": VISUAL,
    "_staff_face_retry": VISUAL, "_visual_confirm": VISUAL, "_visual_reject": VISUAL + ENDINGS[:1],
    "_after_auth": REGISTRATION + FACE[:1], "_visual_registration_refusal": VISUAL,
    "_registration_allowed": VISUAL + REGISTRATION[:1], "_register": REGISTRATION,
    "_skip_registration": REGISTRATION, "_consent_blocked_by_carer": CONSENT, "_consent": CONSENT,
    "_consent_checkup": CONSENT, "_age40": CONSENT, "age_years": CONSENT, "_query": CONSENT[:1] + GENERIC[:1],
    "_signed": GENERIC[:1] + REGISTRATION[2:], "_end_by_patient": ENDINGS, "_set_screen": ENDINGS,
    "_fail": ENDINGS, "_patient_timeout": ENDINGS, "_reminder_tick": ENDINGS, "_to_idle": VISUAL,
    "_on_card_inserted": ENDINGS + GENERIC[:1], "_abort_removed": ENDINGS, "_card_taken": ENDINGS,
    "buttons": PIN[1:3] + ("test_standard_card.py::test_pin_path",), "state": VISUAL[:1] + PIN[2:3], "_labels": GENERIC,
}
PER_MUTANT_TIMEOUT_S = 600


@dataclass
class Mutant:
    index: int
    function: str
    line: int
    diff: str
    code: str
    verdict: str = ""
    detail: str = ""
    seconds: float = 0.0
    tests: tuple[str, ...] = field(default_factory=tuple)


def _functions_by_line(source: str) -> list[tuple[int, int, str]]:
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            spans.append((node.lineno, node.end_lineno or node.lineno, node.name))
    return spans


def _function_at(spans, line: int) -> str | None:
    inside = [(end - start, name) for start, end, name in spans if start <= line <= end]
    return min(inside)[1] if inside else None


def make_mutants(sample: int, seed: int) -> tuple[list[Mutant], int, int]:
    """Every mutmut mutant of flow.py inside a function, string literals left out; a seeded sample.
    (mutmut's own ``create_mutations``, unrolled to keep the positions of the mutated nodes.)"""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider
    from mutmut.mutation.file_mutation import MutationVisitor, deep_replace
    from mutmut.mutation.mutators import mutation_operators
    from mutmut.mutation.pragma_handling import get_ignored_lines

    source = FLOW.read_text()
    cfg_dir = Path(tempfile.mkdtemp(prefix="mutcfg-"))
    (cfg_dir / "setup.cfg").write_text("[mutmut]\nsource_paths=flow.py\n")  # mutmut reads its config from cwd
    here = os.getcwd()
    os.chdir(cfg_dir)
    try:
        wrapper = MetadataWrapper(cst.parse_module(source))
        visitor = MutationVisitor(mutation_operators, get_ignored_lines("flow.py", source, wrapper, None), None)
        module = wrapper.visit(visitor)
        positions = wrapper.resolve(PositionProvider)
    finally:
        os.chdir(here)
    spans = _functions_by_line(source)
    strings = (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)
    candidates = []
    for m in visitor.mutations:
        if isinstance(m.original_node, strings) or m.original_node not in positions:
            continue
        line = positions[m.original_node].start.line
        function = _function_at(spans, line)
        if function is not None:
            candidates.append((m, function, line))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(candidates, min(sample, len(candidates))), key=lambda c: c[2])
    out = []
    for i, (m, function, line) in enumerate(chosen, 1):
        code = deep_replace(module, m.original_node, m.mutated_node).code
        diff = difflib.unified_diff(source.splitlines(True), code.splitlines(True), n=0)
        out.append(Mutant(i, function, line, "".join(list(diff)[2:]).strip(), code,
                          tests=SUBSETS.get(function, GENERIC)))
    return out, len(visitor.mutations), len(candidates)


class Station:
    """One simulated station for the whole bench; its reader process is swapped per mutant."""

    def __init__(self, state_dir: Path):
        from sim.station import sim_up

        self.state_dir = state_dir
        self.path = sim_up(state_dir, private_pcscd=True, options={"place_card": False})
        self.doc = tomllib.loads(self.path.read_text())
        records = json.loads((state_dir / "processes.json").read_text())
        self.reader_argv = next(r["argv"] for r in records if r["name"] == "reader")
        self.reader_pid: int | None = next(r["pid"] for r in records if r["name"] == "reader")
        self.reader_proc: subprocess.Popen | None = None
        from sim.eligibility.client import EligibilityClient

        token_file = state_dir / "token"  # the station's token (hardware.md 9.1): admin calls, line ports
        self.token = token_file.read_text().strip() if token_file.exists() else None
        self.eligibility = EligibilityClient(self.doc["eligibility"]["url"], token=self.token)
        self.seeded = {r["serial"] for r in self.eligibility.registrations()}

    def _stop_reader(self) -> None:
        if self.reader_proc is not None:
            if self.reader_proc.poll() is None:  # a mutant reader may have exited by itself
                os.killpg(self.reader_proc.pid, signal.SIGTERM)
                try:
                    self.reader_proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.reader_proc.pid, signal.SIGKILL)
                    self.reader_proc.wait(5)
            self.reader_proc = None
        elif self.reader_pid is not None:  # the station's own reader, started by sim_up
            try:
                os.killpg(self.reader_pid, signal.SIGTERM)
            except ProcessLookupError:
                self.reader_pid = None
                return
            for _ in range(100):
                try:
                    os.kill(self.reader_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            self.reader_pid = None

    def start_reader(self, overlay: Path | None, log_path: Path) -> None:
        """Replace the reader by one whose ``sim`` package comes from ``overlay`` (None: the real one)."""
        self._stop_reader()
        env = dict(os.environ)
        env["PCSCLITE_CSOCK_NAME"] = self.doc["pcsc"]["socket"]
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("FACEHIL_READER_VARIANT", None)
        if self.token:
            env["FACEHIL_STATION_TOKEN"] = self.token
        if overlay is not None:
            env["PYTHONPATH"] = f"{overlay}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
        fh = open(log_path, "wb")
        self.reader_proc = subprocess.Popen(self.reader_argv, stdout=fh, stderr=subprocess.STDOUT,
                                            cwd=overlay or self.state_dir, env=env, start_new_session=True)
        fh.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in log_path.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    ready = dict(t.split("=", 1) for t in line.split()[1:] if "=" in t)
                    control = ready["control"]
                    self.doc["dut"]["url"] = control if control.startswith("socket://") else f"serial:{control}"
                    self.doc["dut"]["supply"] = ready["supply"]
                    self.path.write_text(tomli_w.dumps(self.doc))
                    return
            if self.reader_proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the mutant reader did not start; see {log_path}")

    def undo_registrations(self) -> None:
        for r in self.eligibility.registrations():
            if r["serial"] not in self.seeded:
                self.eligibility.unregister(r["serial"])

    def close(self) -> None:
        from sim.station import sim_down

        try:
            self._stop_reader()
        finally:
            sim_down(self.state_dir)


def run_subset(station: Station, tests: tuple[str, ...], workdir: Path) -> dict[str, str]:
    junit = workdir / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", *(str(ROOT / "scenarios" / t) for t in tests), "-p", "no:cacheprovider",
           "-q", "-x", f"--junitxml={junit}", "--station", str(station.path)]
    env = {k: v for k, v in os.environ.items() if k not in ("PCSCLITE_CSOCK_NAME", "FACEHIL_READER_VARIANT")}
    with open(workdir / "pytest.log", "wb") as log:
        try:
            subprocess.run(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                           timeout=PER_MUTANT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return {"*": "timeout"}
    if not junit.exists():
        return {"*": "no results"}
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        status = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                status = {"failure": "failed"}.get(tag, tag)
                break
        out[f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}"] = status
    return out


def judge(outcomes: dict[str, str]) -> tuple[str, str]:
    bad = {t: s for t, s in outcomes.items() if s in ("failed", "error", "timeout", "no results")}
    if bad:
        return "killed", ", ".join(f"{t} {s}" for t, s in bad.items())
    if outcomes and all(s == "skipped" for s in outcomes.values()):
        return "not judged", "every scenario skipped"
    return "survived", ""


def overlay_for(mutant: Mutant, base: Path) -> Path:
    overlay = base / f"m{mutant.index:03d}"
    shutil.copytree(ROOT / "sim", overlay / "sim", ignore=shutil.ignore_patterns("__pycache__"))
    (overlay / "sim" / "reader" / "flow.py").write_text(mutant.code)
    return overlay


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=int, default=40)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", type=Path, default=None, help="write the result as Markdown here")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--only", default="", help="re-run only these sample numbers (e.g. the survivors): 4,5,8")
    args = p.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="facehil-mutants-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    mutants, total, eligible = make_mutants(args.sample, args.seed)
    if args.only:
        keep = {int(n) for n in args.only.split(",") if n.strip()}
        mutants = [m for m in mutants if m.index in keep]
    print(f"{total} mutmut mutants of sim/reader/flow.py, {eligible} in functions (strings left out); "
          f"sample of {len(mutants)} (seed {args.seed})", flush=True)
    station = Station(work / "station")
    try:
        # the unmutated reader must pass every subset used, or a "kill" proves nothing
        station.start_reader(None, work / "reader-reference.log")
        used = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        (work / "reference").mkdir(exist_ok=True)
        reference = run_subset(station, used, work / "reference")
        broken = {t: s for t, s in reference.items() if s not in ("passed", "skipped")}
        if broken:
            print(f"the reference reader fails {broken}; see {work / 'reference'}", flush=True)
            return 1
        for m in mutants:
            started = time.monotonic()
            station.undo_registrations()
            try:
                station.start_reader(overlay_for(m, work), work / f"reader-m{m.index:03d}.log")
            except RuntimeError as exc:  # the mutated firmware does not even start: every scenario fails
                m.verdict, m.detail = "killed", f"reader does not start ({exc})"
            else:
                wd = work / f"run-m{m.index:03d}"
                wd.mkdir(exist_ok=True)
                m.verdict, m.detail = judge(run_subset(station, m.tests, wd))
            m.seconds = time.monotonic() - started
            print(f"[{m.index:2d}] {m.verdict:10s} {m.function}:{m.line} {m.diff.splitlines()[-1].strip()[:90]}"
                  f" ({m.seconds:.0f} s)", flush=True)
    finally:
        station.close()
    judged = [m for m in mutants if m.verdict in ("killed", "survived")]
    killed = sum(m.verdict == "killed" for m in judged)
    score = killed / len(judged) if judged else 0.0
    report = [f"Mutation score: {killed}/{len(judged)} = {score:.0%} (sample of {len(mutants)} of {eligible} "
              f"function mutants, seed {args.seed}; {len(mutants) - len(judged)} not judged)", "",
              "| # | verdict | function:line | mutation |", "|---|---|---|---|"]
    for m in mutants:
        change = " / ".join(x.strip() for x in m.diff.splitlines() if x[:1] in "+-")[:140].replace("|", "\\|")
        report.append(f"| {m.index} | {m.verdict} | `{m.function}:{m.line}` | `{change}` |")
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not args.only:
        print(f"GOAL mutation sample >= 40: {'MET' if len(mutants) >= 40 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
