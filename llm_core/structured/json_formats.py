"""Regexes for the JSON Schema string formats we support, as trees over the string's characters.

All are whole-string matches on the decoded value. `date` knows month lengths and leap years (so a
generated date parses with datetime.date.fromisoformat); `time` and `date-time` follow RFC 3339 (an
offset is required); `ipv6` is RFC 4291's grammar (no zone id); `hostname` checks labels (1-63
characters, letters, digits, inner hyphens) but not the 253-character total; `email` is the common
dot-atom form `local@hostname`; `uri` is an absolute URI: a scheme, then URI characters and %HH.
"""

from __future__ import annotations

from functools import lru_cache

from .regex_ast import Node
from .regex_parser import parse_regex

_DAY_31 = r"(0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])"
_DAY_30 = r"(0[469]|11)-(0[1-9]|[12][0-9]|30)"
_DAY_FEB = r"02-(0[1-9]|1[0-9]|2[0-8])"
_YEAR = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001..9999
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
DATE = rf"({_YEAR}-({_DAY_31}|{_DAY_30}|{_DAY_FEB})|{_LEAP_YEAR}-02-29)"
TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
DATE_TIME = rf"{DATE}[Tt]{TIME}"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = rf"{_LABEL}(\.{_LABEL})*"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL = rf"{_ATOM}(\.{_ATOM})*@{HOSTNAME}"
_HEX = "[0-9A-Fa-f]"
UUID = rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
URI = r"[A-Za-z][A-Za-z0-9+.-]*:([A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*"


def _ipv6() -> str:
    h16 = f"{_HEX}{{1,4}}"
    ls32 = f"({h16}:{h16}|{IPV4})"

    def head(n: int) -> str:  # [ *n( h16 ":" ) h16 ]
        return f"(({h16}:){{0,{n}}}{h16})?" if n else f"({h16})?"
    forms = [f"({h16}:){{6}}{ls32}", f"::({h16}:){{5}}{ls32}", f"{head(0)}::({h16}:){{4}}{ls32}",
             f"{head(1)}::({h16}:){{3}}{ls32}", f"{head(2)}::({h16}:){{2}}{ls32}",
             f"{head(3)}::{h16}:{ls32}", f"{head(4)}::{ls32}", f"{head(5)}::{h16}", f"{head(6)}::"]
    return "|".join(forms)


FORMATS = {
    "date": DATE, "time": TIME, "date-time": DATE_TIME, "email": EMAIL, "uuid": UUID, "uri": URI,
    "ipv4": IPV4, "ipv6": _ipv6(), "hostname": HOSTNAME,
}


@lru_cache(maxsize=None)
def format_tree(name: str) -> Node:
    """The characters of a `format` value; KeyError for a format we do not support."""
    return parse_regex(FORMATS[name])
