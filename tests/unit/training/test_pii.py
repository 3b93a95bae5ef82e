import pytest

from training.pii import find, iban_ok, luhn_ok, redact


@pytest.mark.parametrize(
    ("text", "kind"),
    [("write to bob.smith@example.org now", "email"), ("card 4111 1111 1111 1111", "card"),
     ("card 5500-0000-0000-0004 ok", "card"), ("call +44 20 7946 0958", "phone"),
     ("call (555) 123-4567 today", "phone"), ("ssn 123-45-6789", "national_id"),
     ("from 10.0.0.12", "ipv4"), ("addr 2001:db8::8a2e:370:7334", "ipv6"), ("lo ::1 here", "ipv6"),
     ("pay GB82 WEST 1234 5698 7654 32", "iban"), ("iban DE89370400440532013000.", "iban")],
)  # fmt: skip
def test_pii_kinds_are_found_and_redacted(text, kind) -> None:
    out, counts = redact(text)
    assert counts == {kind: 1} and f"[{kind.upper()}]" in out


def test_pii_checksums_and_shapes_avoid_false_positives() -> None:
    for text in ["card 4111 1111 1111 1112", "iban GB82 WEST 1234 5698 7654 33", "ip 999.1.1.1",
                 "order 12345 shipped", "at 12:30:45 today", "version 1.2.3.4.5",
                 "ssn 000-12-3456", "ssn 666-12-3456", "the year 2024 and 42 items"]:  # fmt: skip
        assert redact(text) == (text, {}), text
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112") and not luhn_ok("41")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")
    assert not iban_ok("DE89")


def test_counts_per_kind() -> None:
    text = "a@b.io and c@d.io from 10.1.1.1, card 4111111111111111"
    assert find(text) == {"email": 2, "ipv4": 1, "card": 1}
    assert redact(text)[0] == "[EMAIL] and [EMAIL] from [IPV4], card [CARD]"
