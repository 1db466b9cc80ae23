"""Caller numbers: one key per person, whatever the format Asterisk gives (``phonenumbers``).

``+3725550107``, ``003725550107`` and (with default region ``EE``) ``5550107`` are one caller: their key is
the E.164 form.  A number that is not a possible phone number in any reading (an extension such as ``101``)
keys as its digits; anonymous or withheld callers have no key and are never matched.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

__all__ = ["NO_CALLER_NUMBER", "number_key"]

#: caller ids that name nobody
NO_CALLER_NUMBER = frozenset({"", "anonymous", "Anonymous", "restricted", "Restricted", "unavailable",
                              "Unavailable", "unknown", "<unknown>", "private", "Private"})


@lru_cache(maxsize=65536)
def number_key(number: str, region: str | None = None) -> str | None:
    """The key of a caller number (E.164 when it can be read as a phone number), None for nobody."""
    number = number.strip()
    if number in NO_CALLER_NUMBER:
        return None
    digits = "".join(ch for ch in number if ch.isdigit())
    if not digits:
        return None
    candidates = [number]
    if region is None and number.startswith("00"):
        candidates.append("+" + digits[2:])  # 00 is the international prefix almost everywhere
    for text in candidates:
        try:
            parsed = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return digits
