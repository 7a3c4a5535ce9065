import ipaddress
import re
import uuid
from datetime import date, datetime
from urllib.parse import urlsplit

import numpy as np
import pytest

from llm_core.structured.grammar import grammar_from_tree
from llm_core.structured.json_formats import FORMATS, format_tree

from .helpers import random_text


def check_time(text: str) -> None:
    text = text.replace(":60", ":59")  # a leap second is RFC 3339 but not datetime
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # datetime keeps microseconds
    datetime.fromisoformat("2000-01-01T" + text.upper())


def check_hostname(text: str) -> None:
    for label in text.split("."):
        assert 1 <= len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
        assert re.fullmatch(r"[A-Za-z0-9-]+", label)


CHECKS = {
    "date": date.fromisoformat,
    "time": check_time,
    "date-time": lambda t: (date.fromisoformat(t[:10]), check_time(t[11:])),
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "uuid": lambda t: uuid.UUID(t),
    "email": lambda t: check_hostname(t.rpartition("@")[2]),
    "hostname": check_hostname,
    "uri": lambda t: urlsplit(t).scheme or 1 / 0,
}


def test_every_format_has_a_check():
    assert set(CHECKS) == set(FORMATS)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_random_strings_of_a_format_pass_pythons_parser(name):
    dfa = grammar_from_tree(format_tree(name), "k", name).dfa
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(150):
        text = random_text(dfa, rng, budget=int(rng.integers(1, 40))).decode()
        CHECKS[name](text)
        seen.add(text)
    assert len(seen) > 30  # the walk explores


def test_dates_know_month_lengths_and_leap_years():
    grammar = grammar_from_tree(format_tree("date"), "k", "date")
    for year in [1900, 1996, 2000, 2023, 2024, 2100, 2400]:
        for month in range(1, 13):
            for day in range(28, 32):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                try:
                    date.fromisoformat(text)
                    valid = True
                except ValueError:
                    valid = False
                assert grammar.matches(text) == valid, text
