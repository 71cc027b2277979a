"""Numbers printed on and stored in a My Number Card.

* The My Number (個人番号) check digit, as the Cabinet Office ordinance defines it
  (個人番号の指定に関する省令 第5条): for the 11 leading digits, P(n) is the n-th digit
  counted from the right, Q(n) = n+1 for n <= 6 and n-5 for n >= 7; r = sum(P*Q) mod 11;
  check digit = 0 if r <= 1 else 11 - r.
* Japanese era dates (和暦) for the birth date in check code B: era year (gannen = 1),
  month and day, two digits each.
* Check code B (照合番号B): birth date YYMMDD in the Japanese era + card expiry year YYYY +
  4-digit security code = 14 digits.
"""

from __future__ import annotations

import datetime as dt
import random

# (first day, name, romanised): each era runs until the day before the next one starts.
ERAS = (
    (dt.date(2019, 5, 1), "令和", "Reiwa"),
    (dt.date(1989, 1, 8), "平成", "Heisei"),
    (dt.date(1926, 12, 25), "昭和", "Showa"),
    (dt.date(1912, 7, 30), "大正", "Taisho"),
    (dt.date(1868, 10, 23), "明治", "Meiji"),
)


def my_number_check_digit(first11: str) -> int:
    if len(first11) != 11 or not first11.isdigit():
        raise ValueError(f"the check digit needs 11 digits, got {first11!r}")
    total = 0
    for n in range(1, 12):
        p = int(first11[11 - n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    r = total % 11
    return 0 if r <= 1 else 11 - r


def is_valid_my_number(number: str) -> bool:
    return (len(number) == 12 and number.isdigit()
            and my_number_check_digit(number[:11]) == int(number[11]))


def random_my_number(rng: random.Random) -> str:
    first = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(10))
    return first + str(my_number_check_digit(first))


def japanese_era(date: dt.date) -> tuple[str, int]:
    """(era name, era year) for a date from the Meiji era on."""
    for start, name, _ in ERAS:
        if date >= start:
            return name, date.year - start.year + 1
    raise ValueError(f"{date} is before the Meiji era")


def era_yymmdd(date: dt.date) -> str:
    _, year = japanese_era(date)
    return f"{year:02d}{date.month:02d}{date.day:02d}"


def check_code_b(birth: dt.date, expiry: dt.date, security_code: str) -> str:
    if len(security_code) != 4 or not security_code.isdigit():
        raise ValueError(f"the security code has 4 digits, got {security_code!r}")
    return era_yymmdd(birth) + f"{expiry.year:04d}" + security_code
