"""The eligibility service's tables (SQLAlchemy; SQLite by default, any SQLAlchemy URL works)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Integer, LargeBinary, String, UniqueConstraint, create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Registration(Base):
    """A card's health-insurance-use registration (利用登録), keyed by its user-auth certificate."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("cert_issuer", "cert_serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cert_issuer: Mapped[str] = mapped_column(String(512))
    cert_serial: Mapped[str] = mapped_column(String(64))  # hex, upper case
    holder: Mapped[str] = mapped_column(String(256))  # the certificate subject's CN
    method: Mapped[str] = mapped_column(String(16))  # face | pin | visual | seed
    reader_id: Mapped[str] = mapped_column(String(64), default="")
    registered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Transaction(Base):
    """One eligibility query or registration attempt, with what the patient chose."""

    __tablename__ = "transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # eligibility | registration
    reader_id: Mapped[str] = mapped_column(String(64), default="")
    cert_serial: Mapped[str] = mapped_column(String(64), default="")
    method: Mapped[str] = mapped_column(String(16), default="")
    consent_surgery: Mapped[str] = mapped_column(String(16), default="")
    consent_care: Mapped[str] = mapped_column(String(16), default="")
    consent_checkup: Mapped[str] = mapped_column(String(16), default="")
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[str] = mapped_column(String(32), default="")


class Challenge(Base):
    __tablename__ = "challenges"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(64))
    issued_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


def make_engine(url: str) -> Engine:
    kwargs = {"connect_args": {"check_same_thread": False}} if url.startswith("sqlite") else {}
    engine = create_engine(url, **kwargs)
    Base.metadata.create_all(engine)
    return engine


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
