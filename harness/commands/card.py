"""`facehil card readers|read`: look at the cards in PC/SC readers, real or virtual.

`card read` reports what a card shows without credentials (profile, JPKI token and
certificates, tries left), then what each credential given opens. The face photo is shown
as its format and size, never as pixels; PINs and check codes are never echoed or logged, and
come from the environment or a hidden prompt, never from the command line (``ps`` shows it).
A credential with one try left is not tried unless ``--allow-last-try``: a test tool must
not lock a real card by accident.

Exit codes: 0 read; 1 no reader / no card / card error; 2 a credential was refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as pysecrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

import typer
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console
from rich.table import Table

from drivers.imageinfo import image_info
from drivers.mynumber import (CREDENTIALS, CardStatusError, MyNumberCard, TerminalCredential, WrongPin,
                              verify_chain, verify_signature)
from drivers.pcsc import PcscError, PcscReader, ReaderNotFound, list_readers, readers_with_card

app = typer.Typer(no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

# What each credential opens, in the order they are tried.
OPENS = {
    "pin": "My Number and basic four (text-assist AP); the JPKI user-auth key",
    "check_a": "My Number (text-assist AP); the card-face record (card-surface AP)",
    "check_b": "basic four (text-assist AP); the card-face record with the face photo (card-surface AP)",
    "terminal": "one user-auth signature on a face-auth card (terminal authorization)",
}
# Which card credentials a CLI secret is presented to.
_CARD_CREDENTIALS = {
    "pin": ("text_pin", "jpki_auth_pin"),
    "check_a": ("text_check_a", "surface_check_a"),
    "check_b": ("text_check_b", "surface_check_b"),
}


@dataclass(frozen=True)
class Secrets:
    pin: str | None = None
    check_a: str | None = None
    check_b: str | None = None

    def __repr__(self) -> str:  # never shows the values
        given = [k for k in ("pin", "check_a", "check_b") if getattr(self, k)]
        return f"Secrets({', '.join(given) or 'none'})"


class CredentialRefused(Exception):
    pass


def _cert_summary(cert) -> dict:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "X"),
        "not_before": cert.not_valid_before_utc.date().isoformat(),
        "not_after": cert.not_valid_after_utc.date().isoformat(),
        "key_bits": getattr(cert.public_key(), "key_size", None),
        "sha256": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
    }


def _status(exc: CardStatusError) -> str:
    if isinstance(exc, WrongPin):
        return f"refused ({exc.sw:04X}): {exc.tries_left} tries left" + (" - now BLOCKED" if exc.tries_left == 0 else "")
    return f"{type(exc).__name__} ({exc.sw:04X})"


class _Guard:
    """Checks tries left before a VERIFY so that the tool never spends the last try by accident."""

    def __init__(self, tries: dict, allow_last_try: bool):
        self.tries, self.allow_last_try = tries, allow_last_try

    def may_try(self, credential: str) -> str | None:
        """None if it may be presented, else why not."""
        left = self.tries.get(credential)
        if left == 0:
            return "blocked or not set on this card: not tried"
        if left == 1 and not self.allow_last_try:
            return "1 try left: not tried (use --allow-last-try)"
        return None


def read_card(card: MyNumberCard, secrets: Secrets = Secrets(), *, allow_last_try: bool = False,
              terminal: TerminalCredential | None = None) -> dict:
    """Everything `card read` reports for one card, as a JSON-ready dict (no secrets in it)."""
    report: dict = {}
    refused: list[str] = []
    profile = card.detect_profile()
    report["profile"] = {"name": profile.name, "reasons": list(profile.reasons)}

    jpki: dict = {}
    try:
        jpki["token_name"] = card.token_name()
    except CardStatusError as exc:
        jpki["token_name_error"] = _status(exc)
    auth = auth_ca = None
    for which in ("auth", "auth_ca", "sign", "sign_ca"):
        try:
            cert = card.certificate(which)
        except CardStatusError as exc:
            jpki[f"{which}_certificate"] = {"absent" if exc.sw == 0x6A82 else "unreadable": _status(exc)}
            continue
        except ValueError as exc:
            jpki[f"{which}_certificate"] = {"unreadable": f"not a DER certificate ({exc})"}
            continue
        jpki[f"{which}_certificate"] = _cert_summary(cert)
        auth = cert if which == "auth" else auth
        auth_ca = cert if which == "auth_ca" else auth_ca
    if auth is not None and auth_ca is not None:
        chain = verify_chain(auth, auth_ca)
        jpki["auth_chain"] = {"ok": chain.ok, "problems": list(chain.problems)}
    report["jpki"] = jpki

    tries: dict = {}
    for name in CREDENTIALS:
        try:
            tries[name] = card.tries_left(name)
        except CardStatusError as exc:
            tries[name] = _status(exc)
    report["tries_left"] = tries
    report["opens"] = OPENS
    guard = _Guard(tries, allow_last_try)

    if secrets.pin:
        report["with_pin"] = _with_pin(card, secrets.pin, guard, auth, refused)
    if secrets.check_a:
        report["with_check_a"] = _with_check_code(card, secrets.check_a, "a", guard, refused)
    if secrets.check_b:
        report["with_check_b"] = _with_check_code(card, secrets.check_b, "b", guard, refused)
    if terminal is not None:
        report["with_terminal"] = _with_terminal(card, terminal, auth, refused)
    report["refused"] = refused
    return report


def _sign_check(card: MyNumberCard, auth, **how) -> dict:
    challenge = b"facehil card read " + pysecrets.token_bytes(16)
    try:
        signature = card.sign_auth(challenge, **how)
    except WrongPin:
        raise
    except CardStatusError as exc:
        return {"user_auth_signature": _status(exc)}
    except ValueError as exc:
        return {"user_auth_signature": str(exc)}
    ok = auth is not None and verify_signature(auth, signature, challenge)
    return {"user_auth_signature": "verifies against the user-auth certificate" if ok else "DOES NOT VERIFY",
            "signature_bytes": len(signature)}


def _with_pin(card: MyNumberCard, pin: str, guard: _Guard, auth, refused: list[str]) -> dict:
    out: dict = {}
    why = guard.may_try("text_pin")
    if why:
        out["text_assist"] = why
    else:
        try:
            out["my_number"] = card.my_number(pin=pin)
            out["basic_four"] = _basic_four(card.basic_four(pin=pin))
        except WrongPin as exc:
            refused.append("pin")
            out["text_assist"] = _status(exc)
            out["jpki"] = "not tried: the PIN was refused by the text-assist AP"
            return out
        except (CardStatusError, ValueError) as exc:
            out["text_assist"] = _status(exc) if isinstance(exc, CardStatusError) else str(exc)
    why = guard.may_try("jpki_auth_pin")
    if why:
        out["jpki"] = why
        return out
    try:
        out.update(_sign_check(card, auth, pin=pin))
    except WrongPin as exc:
        refused.append("pin")
        out["jpki"] = _status(exc)
    except ValueError as exc:
        out["jpki"] = str(exc)
    return out


def _with_check_code(card: MyNumberCard, code: str, which: str, guard: _Guard, refused: list[str]) -> dict:
    """What check code A (``which="a"``) or B opens: text-assist (My Number, or the basic four)
    and the card surface. A code the card refuses is not tried again on the other application."""
    if which == "a":
        text_field, read_text = "my_number", lambda: card.my_number(check_a=code)
        read_face = lambda: card.card_face(check_a=code)  # noqa: E731
    else:
        text_field, read_text = "basic_four", lambda: _basic_four(card.basic_four(check_b=code))
        read_face = lambda: card.card_face(check_b=code)  # noqa: E731
    out: dict = {}
    for key, counter, field, read in (("text_assist", f"text_check_{which}", text_field, read_text),
                                      ("card_surface", f"surface_check_{which}", "card_face",
                                       lambda: _card_face(read_face()))):
        if why := guard.may_try(counter):
            out[key] = why
            continue
        try:
            out[field] = read()
        except (CardStatusError, ValueError) as exc:
            out[key] = _status(exc) if isinstance(exc, CardStatusError) else str(exc)
            if isinstance(exc, WrongPin):
                refused.append(f"check_{which}")
                return out
    return out


def _with_terminal(card: MyNumberCard, terminal: TerminalCredential, auth, refused: list[str]) -> dict:
    out = _sign_check(card, auth, terminal=terminal)
    if "signature_bytes" not in out:
        refused.append("terminal")
    return out


def _basic_four(b) -> dict:
    return {"name": b.name, "address": b.address, "birth_date": b.birth_date, "sex": b.sex_label}


def _card_face(face) -> dict:
    return {
        "birth_date": face.birth_date, "sex": face.sex, "expiry": face.expiry,
        "photo": face.photo_info.as_dict(),
        "name_image": image_info(face.name_image).describe() if face.name_image else None,
        "address_image": image_info(face.address_image).describe() if face.address_image else None,
        "security_code_image": image_info(face.security_code_image).describe() if face.security_code_image else None,
    }


# --------------------------------------------------------------------------- reader selection


def _use_station(station: Path | None) -> None:
    """Point libpcsclite at the station's pcscd (before the first PC/SC call)."""
    if station is None:
        return
    try:
        doc = tomllib.loads(station.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"cannot read station file {station}: {exc}", param_hint="--station")
    sock = doc.get("pcsc", {}).get("socket")
    if sock:
        os.environ["PCSCLITE_CSOCK_NAME"] = str(sock)


def select_readers(reader: str | None) -> list[str]:
    """The readers to read: a named one, ``all`` with a card, or by default every reader with a card."""
    names = list_readers()
    if not names:
        raise PcscError("pcscd lists no readers")
    if reader is None or reader == "all":
        with_card = readers_with_card()
        if not with_card:
            raise PcscError(f"no card in any reader ({', '.join(names)})")
        return with_card
    if reader in names:
        return [reader]
    matches = [n for n in names if reader.lower() in n.lower()]
    if len(matches) == 1:
        return matches
    raise ReaderNotFound(f"{'no' if not matches else 'more than one'} reader matches {reader!r} "
                         f"(readers: {', '.join(names)})", reader=reader)


def _read_one(name: str, secrets: Secrets, extended: bool, allow_last_try: bool,
              terminal: TerminalCredential | None) -> dict:
    out: dict = {"reader": name}
    try:
        with PcscReader(name).connect() as conn:
            out["atr"] = conn.atr.hex(" ").upper()
            with conn.transaction():
                out.update(read_card(MyNumberCard(conn, extended=extended), secrets,
                                     allow_last_try=allow_last_try, terminal=terminal))
            entries = conn.log.entries()
            out["apdus"] = len(entries)
            out["apdu_ms"] = round(sum(e.elapsed_ms for e in entries), 3)
    except PcscError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def read_secret(kind: str) -> str:
    """A credential from its environment variable, else from a hidden prompt."""
    value = os.environ.get(SECRET_ENV[kind])
    if value:
        return value
    return typer.prompt(_LABELS[kind], hide_input=True)


@app.command("readers")
def readers_cmd(station: Path = typer.Option(None, help="Station file: use its pcscd."),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """List PC/SC readers and whether each holds a card."""
    _use_station(station)
    try:
        names = list_readers()
        present = set(readers_with_card())
    except PcscError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    rows = [{"reader": n, "card": n in present} for n in names]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("reader", "card")
    for r in rows:
        table.add_row(r["reader"], "yes" if r["card"] else "-")
    console.print(table)


# Credentials come from the environment or a hidden prompt, never from argv: the command line
# is visible to every user in ps and stays in the shell history.
SECRET_ENV = {"pin": "FACEHIL_CARD_PIN", "check_a": "FACEHIL_CARD_CHECK_A", "check_b": "FACEHIL_CARD_CHECK_B"}
_LABELS = {"pin": "PIN", "check_a": "check code A", "check_b": "check code B"}


@app.command("read")
def read_cmd(
    reader: str = typer.Option(None, help="Reader name (or a unique part of it), or 'all'. "
                                          "Default: every reader with a card."),
    pin: bool = typer.Option(False, "--pin", help=f"Present the 4-digit PIN: from ${SECRET_ENV['pin']}, "
                                                  "else a hidden prompt. Never echoed."),
    check_a: bool = typer.Option(False, "--check-a", help="Present check code A (12-digit My Number): from "
                                                          f"${SECRET_ENV['check_a']}, else a hidden prompt."),
    check_b: bool = typer.Option(False, "--check-b", help="Present check code B (14 digits): from "
                                                          f"${SECRET_ENV['check_b']}, else a hidden prompt."),
    terminal: Path = typer.Option(None, help="Folder with terminal.pem/terminal.key: authorize the user-auth "
                                             "key of a face-auth card as this terminal."),
    allow_last_try: bool = typer.Option(False, "--allow-last-try", help="Present a credential even with 1 try left."),
    extended: bool = typer.Option(False, "--extended", help="Read EFs with extended-length APDUs."),
    station: Path = typer.Option(None, help="Station file: use its pcscd."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (a list, one object per card)."),
    stray: list[str] = typer.Argument(None, hidden=True, show_default=False),
) -> None:
    """Read the My Number Card(s): profile, certificates, tries left, and what each credential opens.

    Credentials never go on the command line (ps and the shell history show it): --pin, --check-a and --check-b take theirs from FACEHIL_CARD_PIN, FACEHIL_CARD_CHECK_A and FACEHIL_CARD_CHECK_B, or from a hidden prompt.
    """
    if stray:
        # Not echoed: a stray argument is most likely a PIN typed after --pin.
        err_console.print(f"[red]{len(stray)} unexpected argument(s) refused, not shown: a PIN or check code is "
                          f"never given on the command line (ps and the shell history show it); use --pin with "
                          f"${SECRET_ENV['pin']} or the prompt[/red]", soft_wrap=True)
        raise typer.Exit(1)
    _use_station(station)
    wanted = {"pin": pin, "check_a": check_a, "check_b": check_b}
    secrets = Secrets(**{k: read_secret(k) if on else None for k, on in wanted.items()})
    term = None
    if terminal is not None:
        try:
            term = TerminalCredential.load(terminal / "terminal.pem", terminal / "terminal.key")
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"cannot load the terminal credential: {exc}", param_hint="--terminal")
    try:
        names = select_readers(reader)
    except PcscError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    if len(names) > 1 and (secrets.pin or secrets.check_a or secrets.check_b):
        # one card's PIN presented to another card would spend that card's tries
        err_console.print(f"[red]{len(names)} cards present ({', '.join(names)}): a PIN or check code is for one "
                          "card; choose it with --reader[/red]")
        raise typer.Exit(1)
    reports = [_read_one(n, secrets, extended, allow_last_try, term) for n in names]
    if as_json:
        print(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        for r in reports:
            _render(r)
    if any("error" in r for r in reports):
        raise typer.Exit(1)
    if any(r.get("refused") for r in reports):
        raise typer.Exit(2)


# --------------------------------------------------------------------------- rendering


def _render(r: dict) -> None:
    console.rule(f"[bold]{r['reader']}[/bold]")
    if "error" in r:
        console.print(f"[red]{r['error']}[/red]")
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    table.add_row("ATR", r.get("atr", ""))
    prof = r.get("profile", {})
    table.add_row("profile", f"{prof.get('name')}  ({'; '.join(prof.get('reasons', []))})")
    jpki = r.get("jpki", {})
    if "token_name" in jpki:
        table.add_row("JPKI token", jpki["token_name"])
    for which, label in (("auth", "user-auth cert"), ("auth_ca", "user-auth CA"), ("sign", "signing cert"),
                         ("sign_ca", "signing CA")):
        c = jpki.get(f"{which}_certificate")
        if c is None:
            continue
        if "subject" in c:
            table.add_row(label, f"{c['subject']}  serial {c['serial']}  {c['not_before']}..{c['not_after']}")
        else:
            table.add_row(label, "; ".join(f"{k}: {v}" for k, v in c.items()))
    if "auth_chain" in jpki:
        ch = jpki["auth_chain"]
        table.add_row("chain", "[green]verifies[/green]" if ch["ok"] else f"[red]{'; '.join(ch['problems'])}[/red]")
    for name, left in r.get("tries_left", {}).items():
        table.add_row(f"tries {name}", str("no count" if left is None else left))
    for key, label in (("with_pin", "--pin"), ("with_check_a", "--check-a"), ("with_check_b", "--check-b"),
                       ("with_terminal", "--terminal")):
        if key in r:
            for k, v in r[key].items():
                table.add_row(f"{label} {k}", _flat(v))
        else:
            table.add_row(f"{label} opens", r.get("opens", {}).get(key.removeprefix("with_"), ""))
    if "apdus" in r:
        table.add_row("APDUs", f"{r['apdus']} in {r['apdu_ms']:.1f} ms")
    console.print(table)


def _flat(v) -> str:
    if isinstance(v, dict):
        if "description" in v:
            return v["description"]
        return ", ".join(f"{k}: {_flat(x)}" for k, x in v.items() if x is not None)
    return str(v)
