"""Test helper: a structure-aware APDU fuzzer for the software card and a model that checks
its security invariants from the outside.

The fuzzer (``ApduFuzzer``) mostly sends commands a card is meant to see, with the card's own
AIDs, FIDs and secrets, so fuzzed traffic lands inside applications, on protected files and on
secret EFs: SELECT, VERIFY (right, wrong, malformed, status), READ BINARY, GET CHALLENGE,
TERMINAL AUTHORIZE (80 82), SIGN, GET RESPONSE; short and extended forms; wrong lengths,
mutations and plain random bytes.

The model (``CardModel``) follows the session (application, EF, what was verified) from the
commands and their status words only, and checks after every response:

* every response ends in a status word of the card's table, never 6F00 (an internal error);
* a protected file's bytes never leave the card unless one of its credentials was verified in
  this application session (READ BINARY, and a search of every response for slices of each
  protected file);
* a signature comes back only after the key's credential or a terminal authorization;
* a retry counter never goes up except by the right secret on an unblocked counter or by a
  REISSUE; a wrong secret takes exactly one try; a blocked counter stays blocked (the right
  secret gets the blocked status word) until REISSUE, across reset, power-off and restart.

The APDU encoder here is written from ISO/IEC 7816-3 12.1.3 independently of
``sim.card.apdu``; the model decodes the commands it generated itself.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from drivers import terminal_auth
from sim.card.filesystem import TERMINAL, Application, BinaryEF, KeyEF, SecretEF

VALID_SW1 = {0x61, 0x62, 0x63, 0x67, 0x69, 0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x90}
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
NEEDLE_LEN = 16


class InvariantBroken(AssertionError):
    pass


def encode(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None,
           extended: bool = False) -> bytes:
    """A command APDU (case 1..4, short or extended). ``le`` is Ne; 256 / 65536 encode as 00 / 0000."""
    head = bytes((cla, ins, p1, p2))
    if extended or len(data) > 255 or (le is not None and le > 256):
        body = b""
        if data:
            body += b"\x00" + len(data).to_bytes(2, "big") + data
        if le is not None:
            body += (b"" if data else b"\x00") + (le % 65536).to_bytes(2, "big")
        return head + body
    body = (bytes((len(data),)) + data) if data else b""
    if le is not None:
        body += bytes((le % 256,))
    return head + body


@dataclass(frozen=True)
class Sent:
    """What the fuzzer meant by an APDU (the model's view; None fields: unknown / random)."""

    kind: str  # select_aid select_ef verify read challenge authorize sign get_response raw
    apdu: bytes
    target: bytes | int | None = None  # AID or FID
    secret: bytes | None = None  # VERIFY data


def _wrong_secret(rng: random.Random, ef: SecretEF) -> str:
    pattern = ef.pattern
    m = re.fullmatch(r"\\d\{(\d+)\}", pattern)
    while True:
        if m:
            value = "".join(rng.choice("0123456789") for _ in range(int(m.group(1))))
        else:  # [A-Z0-9]{6,16}
            value = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(rng.randint(6, 16)))
        if value != ef.value:
            return value


class ApduFuzzer:
    """Structure-aware APDUs for one card layout, from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random, apps: list[Application], terminal=None, auth_cert_der: bytes = b"",
                 p_right: float = 0.35):
        self.rng = rng
        self.p_right = p_right  # how often VERIFY carries the right secret: low values block counters
        self.apps = apps
        self.aids = [a.aid for a in apps]
        self.fids = sorted({fid for a in apps for fid in a.files})
        self.terminal = terminal  # drivers.mynumber.TerminalCredential or None
        self.auth_cert_der = auth_cert_der
        self.secrets = [ef for a in apps for ef in a.files.values() if isinstance(ef, SecretEF) and ef.value]
        ops = {self.select_aid: 10, self.select_ef: 14, self.verify: 22, self.read: 20, self.challenge: 5,
               self.authorize: 4, self.sign: 3, self.get_response: 3, self.mutated: 12, self.random_bytes: 5}
        self._ops, self._weights = list(ops), list(ops.values())

    def next(self, model: "CardModel") -> Sent:
        # Mostly go deeper (an application, then an EF) so commands land where the rules are.
        r = self.rng.random()
        if model.app is None and r < 0.5:
            return self.select_aid(model)
        if model.ef_fid is None and r < 0.5:
            return self.select_ef(model)
        ef = model.current_ef()
        if isinstance(ef, SecretEF) and r < 0.4:
            return self.verify(model)
        if isinstance(ef, BinaryEF) and r < 0.3:
            return self.read(model)
        if isinstance(ef, KeyEF) and r < 0.3:
            return self.sign(model)
        return self.rng.choices(self._ops, self._weights)[0](model)

    # -- one kind of command each -------------------------------------------------------------
    def _p2_select(self) -> int:
        return self.rng.choice((0x0C, 0x0C, 0x0C, 0x00, self.rng.randrange(256)))

    def select_aid(self, model: "CardModel") -> Sent:
        r = self.rng
        aid = r.choice(self.aids) if r.random() < 0.85 else r.randbytes(r.randint(1, 16))
        p1 = 0x04 if r.random() < 0.9 else r.choice((0x00, 0x02, 0x08, r.randrange(256)))
        return Sent("select_aid", encode(0x00, 0xA4, p1, self._p2_select(), aid, extended=r.random() < 0.05), aid)

    def select_ef(self, model: "CardModel") -> Sent:
        r = self.rng
        x = r.random()
        opened = [f for f, e in model.app.files.items() if (getattr(e, "read", None) or getattr(e, "use", None) or
                                                           frozenset()) & model.verified] if model.app else []
        if opened and x < 0.4:  # go where a credential just opened something
            fid = r.choice(opened)
        elif model.app is not None and x < 0.8:
            fid = r.choice(list(model.app.files))
        else:
            fid = r.choice(self.fids) if x < 0.95 else r.randrange(0x10000)
        data = fid.to_bytes(2, "big")
        if r.random() < 0.05:
            data = r.randbytes(r.choice((1, 3, 4)))
        p1 = 0x02 if r.random() < 0.92 else r.randrange(256)
        return Sent("select_ef", encode(0x00, 0xA4, p1, self._p2_select(), data, extended=r.random() < 0.05), fid)

    def verify(self, model: "CardModel") -> Sent:
        r = self.rng
        ef = model.current_ef()
        x = r.random()
        if isinstance(ef, SecretEF) and ef.value and x < self.p_right:
            secret = ef.value.encode()
        elif isinstance(ef, SecretEF) and x < 0.8:
            secret = _wrong_secret(r, ef).encode()
        elif x < 0.85:
            secret = b""
        elif self.secrets and x < 0.93:  # another credential's secret
            secret = r.choice(self.secrets).value.encode()
        else:
            secret = r.randbytes(r.randint(1, 20))
        p1, p2 = (0x00, 0x80) if r.random() < 0.93 else (r.randrange(256), r.randrange(256))
        le = None if r.random() < 0.9 else r.randint(1, 256)
        return Sent("verify", encode(0x00, 0x20, p1, p2, secret, le, extended=r.random() < 0.05), secret=secret)

    def read(self, model: "CardModel") -> Sent:
        r = self.rng
        ef = model.current_ef()
        size = len(ef.data) if isinstance(ef, BinaryEF) else 64
        x = r.random()
        offset = 0 if x < 0.4 else r.randrange(size + 16) if x < 0.9 else r.randrange(0x10000)
        extended = r.random() < 0.3
        le = r.choice((256, r.randint(1, 256), 65536, r.randint(1, 65535))) if extended else r.choice((256, r.randint(1, 256)))
        data = r.randbytes(r.randint(1, 4)) if r.random() < 0.04 else b""
        if r.random() < 0.03:
            le = None
        return Sent("read", encode(0x00, 0xB0, offset >> 8, offset & 0xFF, data, le, extended))

    def challenge(self, model: "CardModel") -> Sent:
        r = self.rng
        le = 8 if r.random() < 0.6 else r.randint(1, 256)
        p1p2 = 0 if r.random() < 0.9 else r.randrange(0x10000)
        return Sent("challenge", encode(0x00, 0x84, p1p2 >> 8, p1p2 & 0xFF, b"", le))

    def authorize(self, model: "CardModel") -> Sent:
        r = self.rng
        method = r.choice((1, 2, 1, 2, 0, 3, r.randrange(256)))
        x = r.random()
        if self.terminal is not None and model.challenge is not None and x < 0.3 and method in (1, 2):
            return Sent("authorize", terminal_auth.build_authorize_apdu(
                model.challenge, method, self.terminal.certificate, self.terminal.key, self.auth_cert_der))
        if self.terminal is not None and x < 0.6:  # the right certificate, a forged or replayed signature
            from cryptography.hazmat.primitives.serialization import Encoding

            cert = self.terminal.certificate.public_bytes(Encoding.DER)
            stale = r.randbytes(8)
            sig = (terminal_auth.sign_authorization(stale, method, self.terminal.key, self.auth_cert_der)
                   if r.random() < 0.3 else r.randbytes(r.randint(8, 72)))
            data = terminal_auth.encode_payload(cert, sig)
        else:
            data = r.randbytes(r.randint(0, 300))
        p1 = 0x00 if r.random() < 0.95 else r.randrange(256)
        return Sent("authorize", encode(0x80, 0x82, p1, method, data, extended=len(data) > 255 or r.random() < 0.1))

    def sign(self, model: "CardModel") -> Sent:
        r = self.rng
        x = r.random()
        data = (SHA256_PREFIX + r.randbytes(32)) if x < 0.7 else r.randbytes(r.randint(1, 300))
        le = r.choice((256, None, 256, r.randint(1, 256)))
        p1, p2 = (0x00, 0x80) if r.random() < 0.9 else (r.randrange(256), r.randrange(256))
        return Sent("sign", encode(0x80, 0x2A, p1, p2, data, le, extended=r.random() < 0.1))

    def get_response(self, model: "CardModel") -> Sent:
        r = self.rng
        le = r.choice((256, r.randint(1, 256), 65536))
        return Sent("get_response", encode(0x00, 0xC0, 0, 0, b"", le, extended=le > 256 or r.random() < 0.1))

    def mutated(self, model: "CardModel") -> Sent:
        """A well-formed command with one thing wrong: a byte, the length, the class, a truncation."""
        r = self.rng
        base = bytearray(r.choice((self.select_aid, self.select_ef, self.verify, self.read, self.challenge))(model).apdu)
        how = r.randrange(6)
        if how == 0 and base:
            base[r.randrange(len(base))] = r.randrange(256)
        elif how == 1:
            del base[r.randrange(len(base) + 1):]
        elif how == 2:
            base += r.randbytes(r.randint(1, 4))
        elif how == 3 and len(base) > 4:
            base[4] = r.randrange(256)  # Lc / Le / extended marker
        elif how == 4:
            base[0] = r.choice((0x0C, 0x10, 0x84, 0xFF, 0xA0, r.randrange(256)))
        else:
            base[1] = r.randrange(256)
        return Sent("raw", bytes(base))

    def random_bytes(self, model: "CardModel") -> Sent:
        r = self.rng
        return Sent("raw", r.randbytes(r.choice((0, 1, 2, 3, 4, 5, r.randint(6, 40), r.randint(41, 300)))))


@dataclass
class CardModel:
    """The card as its specification says it behaves, followed from outside (see module doc)."""

    apps: list[Application]
    initial: dict[str, int]
    maximum: dict[str, int]
    blocked_sw: int
    counters: dict[str, int] = field(default_factory=dict)
    app: Application | None = None
    ef_fid: int | None = None
    verified: set[str] = field(default_factory=set)
    terminal_grant: bool = False
    challenge: bytes | None = None
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counters = dict(self.initial)
        self._needles = self._protected_needles()

    # -- events outside APDUs ------------------------------------------------------------------
    def lose_session(self) -> None:
        """Reset, power-off, removal, a restart of the card process."""
        self.app, self.ef_fid = None, None
        self.verified = set()
        self.terminal_grant = False
        self.challenge = None

    def reissue(self) -> None:
        self.counters = dict(self.initial)

    def blocked(self) -> set[str]:
        return {c for c, v in self.counters.items() if v == 0}

    # -- what the session allows ---------------------------------------------------------------
    def current_ef(self):
        if self.app is None or self.ef_fid is None:
            return None
        return self.app.files.get(self.ef_fid)

    def _protected_needles(self) -> list[tuple[frozenset[str], bytes, str]]:
        """Slices of each protected file found in no other file: (credentials, bytes, where)."""
        files = [(a, ef) for a in self.apps for ef in a.files.values() if isinstance(ef, BinaryEF)]
        out = []
        for a, ef in files:
            if not ef.read or len(ef.data) < NEEDLE_LEN:
                continue
            others = [o.data for _, o in files if o is not ef]
            step = max(1, (len(ef.data) - NEEDLE_LEN) // 7)
            for start in range(0, len(ef.data) - NEEDLE_LEN + 1, step):
                piece = ef.data[start:start + NEEDLE_LEN]
                if not any(piece in d for d in others):
                    out.append((ef.read, piece, f"{a.name} EF {ef.fid:04X}"))
        return out

    # -- one exchange ----------------------------------------------------------------------------
    def observe(self, sent: Sent, response: bytes, tries_before: dict[str, int] | None = None,
                tries_after: dict[str, int] | None = None) -> None:
        """Check one response against the invariants, then follow its effect on the session."""
        if len(response) < 2:
            raise InvariantBroken(f"response without a status word: {response.hex()}")
        data, sw = response[:-2], int.from_bytes(response[-2:], "big")
        if sw >> 8 not in VALID_SW1 or sw == 0x6F00:
            raise InvariantBroken(f"status word {sw:04X} is not in the card's table")
        self.stats[f"{sent.kind}:{sw:04X}" if sent.kind != "raw" else "raw"] = \
            self.stats.get(f"{sent.kind}:{sw:04X}" if sent.kind != "raw" else "raw", 0) + 1
        self._no_leak(data)
        kind, apdu = sent.kind, sent.apdu
        if kind == "raw":
            self._raw(apdu, sw)
        elif kind == "select_aid":
            self._selected_aid(sent.target, sw)
        elif kind == "select_ef":
            if sw == 0x9000:
                self.ef_fid = sent.target
        elif kind == "verify":
            self._verified(sent.secret or b"", sw, apdu)
        elif kind == "read":
            self._read(data, sw)
        elif kind == "challenge":
            if sw == 0x9000:
                self.challenge = data
        elif kind == "authorize":
            self._authorized(apdu, sw)
        elif kind == "sign":
            self._signed(sw)
        if tries_before is not None and tries_after is not None:
            self._counters_moved_by_verify_only(sent, sw, tries_before, tries_after)

    def _no_leak(self, data: bytes) -> None:
        if len(data) < NEEDLE_LEN:
            return
        for creds, piece, where in self._needles:
            if piece in data and not (creds & self.verified):
                raise InvariantBroken(f"{where} data left the card without {sorted(creds)} verified "
                                      f"(verified: {sorted(self.verified)})")

    def _raw(self, apdu: bytes, sw: int) -> None:
        """A mutated or random command the model cannot predict: follow what it did, judging by the SW."""
        if sw in (0x9000, 0x6282) or sw >> 8 in (0x61, 0x63):
            if len(apdu) >= 4 and apdu[0] in (0x00, 0x80):
                self._raw_effect(apdu, sw)
        # A raw command may have consumed the challenge or the pending grant in ways the model
        # does not follow; forget both (the card is stricter than the model, never laxer).
        self.challenge = None

    def _raw_effect(self, apdu: bytes, sw: int) -> None:
        from sim.card.apdu import CardError, parse_command  # the parser itself is tested case by case

        try:
            cmd = parse_command(apdu)
        except CardError:
            raise InvariantBroken(f"a malformed command {apdu.hex()} got {sw:04X}") from None
        key = (cmd.cla, cmd.ins)
        if key == (0x00, 0xA4) and sw == 0x9000:
            if cmd.p1 == 0x04:
                self._selected_aid(cmd.data, sw)
            else:
                self.ef_fid = int.from_bytes(cmd.data, "big")
        elif key == (0x00, 0x20):
            self._verified(cmd.data, sw, apdu)
        elif key == (0x00, 0xB0):
            self._read(b"", sw)
        elif key == (0x80, 0x2A):
            self._signed(sw)
        elif key == (0x80, 0x82) and sw == 0x9000:
            self.terminal_grant = True

    def _selected_aid(self, aid: bytes, sw: int) -> None:
        if sw != 0x9000:
            return
        app = next((a for a in self.apps if a.aid == aid), None)
        if app is None:
            raise InvariantBroken(f"SELECT of an unknown AID {aid.hex()} answered 9000")
        if app is not self.app:
            self.verified = set()
            self.terminal_grant = False
        self.app, self.ef_fid = app, None

    def _verified(self, secret: bytes, sw: int, apdu: bytes) -> None:
        ef = self.current_ef()
        if not isinstance(ef, SecretEF):
            if sw == 0x9000 or sw >> 8 == 0x63:
                raise InvariantBroken(f"VERIFY answered {sw:04X} without a secret EF selected")
            return
        name, before = ef.counter, self.counters[ef.counter]
        if not secret:  # a status query
            if sw >> 8 == 0x63 and sw != 0x63C0 | (min(before, 15) if ef.value else 0):
                raise InvariantBroken(f"status query of {name} answered {sw:04X}, the model has {before} tries")
            return
        if sw == 0x9000:
            if before == 0:
                raise InvariantBroken(f"blocked {name} accepted a VERIFY")
            if ef.value is None or secret != ef.value.encode():
                raise InvariantBroken(f"{name} accepted a wrong secret")
            self.counters[name] = ef.max_tries
            self.verified.add(ef.grants)
        elif sw >> 8 == 0x63:
            left = sw & 0x0F
            if before == 0 or left != before - 1:
                raise InvariantBroken(f"wrong secret on {name}: {before} -> {left} tries")
            if ef.value is not None and secret == ef.value.encode():
                raise InvariantBroken(f"{name} refused its right secret with {before} tries left")
            self.counters[name] = left
            self.verified.discard(ef.grants)
        elif sw == self.blocked_sw and ef.value is not None:
            if before != 0:
                raise InvariantBroken(f"{name} answered blocked with {before} tries left")
        elif before == 0 and ef.value is not None and sw not in (0x6A80, 0x6A86, 0x6700):
            raise InvariantBroken(f"blocked {name} answered {sw:04X} to a VERIFY")

    def _read(self, data: bytes, sw: int) -> None:
        if sw not in (0x9000, 0x6282):
            return
        ef = self.current_ef()
        if not isinstance(ef, BinaryEF):
            raise InvariantBroken(f"READ BINARY answered {sw:04X} on {ef!r}")
        if ef.read and not (ef.read & self.verified):
            raise InvariantBroken(f"EF {ef.fid:04X} read without {sorted(ef.read)} (verified: {sorted(self.verified)})")
        self.stats["protected_reads" if ef.read else "free_reads"] = \
            self.stats.get("protected_reads" if ef.read else "free_reads", 0) + 1

    def _authorized(self, apdu: bytes, sw: int) -> None:
        self.challenge = None  # any attempt consumes it
        if sw == 0x9000:
            self.terminal_grant = True
            self.stats["terminal_grants"] = self.stats.get("terminal_grants", 0) + 1

    def _signed(self, sw: int) -> None:
        if sw == 0x9000 or sw >> 8 == 0x61:
            ef = self.current_ef()
            if not isinstance(ef, KeyEF):
                raise InvariantBroken(f"SIGN answered {sw:04X} without a key EF")
            if ef.use & self.verified:
                self.stats["signatures"] = self.stats.get("signatures", 0) + 1
                return
            if TERMINAL in ef.use and self.terminal_grant:
                self.terminal_grant = False  # one authorization, one signature
                self.stats["signatures"] = self.stats.get("signatures", 0) + 1
                return
            raise InvariantBroken(f"key EF {ef.fid:04X} signed without {sorted(ef.use)}")

    def _counters_moved_by_verify_only(self, sent: Sent, sw: int, before: dict[str, int],
                                       after: dict[str, int]) -> None:
        """The card's own counters (in process): only a VERIFY moves one, by the model's rule."""
        for name in before:
            if after[name] == before[name]:
                continue
            if after[name] > before[name]:
                if before[name] == 0:
                    raise InvariantBroken(f"blocked counter {name} went up to {after[name]} without REISSUE")
                if sw != 0x9000 or after[name] != self.maximum[name]:
                    raise InvariantBroken(f"counter {name} went up {before[name]} -> {after[name]} on {sw:04X}")
            elif after[name] != before[name] - 1:
                raise InvariantBroken(f"counter {name} fell {before[name]} -> {after[name]} in one command")
            if after[name] != self.counters[name]:
                raise InvariantBroken(f"counter {name}: card {after[name]}, model {self.counters[name]}")
