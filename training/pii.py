"""Find and redact personal data: emails, phones, card numbers (Luhn), national ids, IPs, IBANs."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
# Candidates only; ipaddress decides what is an address ("12:30:45" is not).
IPV6 = re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")
# Not part of a longer digit run (a Luhn-invalid card number is not a phone number).
PHONE = re.compile(
    r"(?<![\w-])(?<!\d )(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}[ .-]\d{3,4}(?:[ .-]?\d{3,4})?"
    r"(?![\w-])(?! \d)"
)


def luhn_ok(number: str) -> bool:
    """Whether the digits of `number` (13-19 of them) pass the Luhn check of card numbers."""
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """Whether `candidate` passes the ISO 13616 mod-97 check (spaces ignored)."""
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    digits = "".join(str(int(c, 36)) for c in moved)
    return int(digits) % 97 == 1


def _ipv4_ok(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
        return True
    except ValueError:
        return False


# Order matters: cards and IBANs before phones, which would otherwise claim their digits.
DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
    ("email", EMAIL, lambda s: True),
    ("iban", IBAN, iban_ok),
    ("card", CARD, luhn_ok),
    ("national_id", SSN, lambda s: True),
    ("ipv4", IPV4, _ipv4_ok),
    ("ipv6", IPV6, _ipv6_ok),
    ("phone", PHONE, lambda s: sum(c.isdigit() for c in s) >= 9),
]


def find(text: str) -> Counter[str]:
    """Counts of each kind of personal data in `text`."""
    return redact(text)[1]


def redact(text: str) -> tuple[str, Counter[str]]:
    """`text` with each finding replaced by [KIND], and the counts."""
    counts: Counter[str] = Counter()
    for kind, pattern, valid in DETECTORS:

        def swap(
            match: re.Match[str], kind: str = kind, valid: Callable[[str], bool] = valid
        ) -> str:
            if valid(match.group(0)):
                counts[kind] += 1
                return f"[{kind.upper()}]"
            return match.group(0)

        text = pattern.sub(swap, text)
    return text, counts
