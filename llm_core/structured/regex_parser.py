"""A regex parser for the subset that response_format patterns and JSON Schema `pattern` need.

Supported: literals, escapes (\\n \\t \\xHH \\uHHHH \\u{H..} and escaped punctuation), classes with
ranges and negation, \\d \\w \\s (ASCII digits and word characters, ECMAScript whitespace) and their
negations, `.` (any character but a newline), groups (capturing, (?:...), named), alternation,
? * + {m} {m,} {m,n} {,n} (lazy forms mean the same language), and ^ $ at the ends of the pattern.
Everything else (backreferences, lookaround, word boundaries, inline flags, \\p{..}, possessive or
atomic forms) raises a RegexError that names the construct and its position.

`parse_regex` reads the pattern as a whole-string match; `parse_regex_search` gives it JSON Schema's
meaning, a match anywhere, by padding each top-level alternative that lacks an anchor with `[\\s\\S]*`.
"""

from __future__ import annotations

from .errors import RegexError
from .regex_ast import (
    MAX_CODE_POINT, Node, alt, char_set, concat, negate_ranges, normalize_ranges, repeat,
)

DIGIT = ((0x30, 0x39),)
WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
SPACE = normalize_ranges([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                          (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000),
                          (0xFEFF, 0xFEFF)])
ANY_BUT_NEWLINE = ((0, 0x09), (0x0B, MAX_CODE_POINT))
ANY = ((0, MAX_CODE_POINT),)
MAX_REPEAT = 100_000

_CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}
_CHAR_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00}
_UNSUPPORTED_ESCAPES = {
    "b": "word boundary '\\b'", "B": "word boundary '\\B'", "A": "anchor '\\A'", "Z": "anchor '\\Z'",
    "z": "anchor '\\z'", "G": "anchor '\\G'", "p": "Unicode property '\\p'", "P": "Unicode property '\\P'",
    "k": "backreference '\\k'", "c": "control escape '\\c'",
}
_GROUP_ERRORS = (("(?=", "lookahead '(?='"), ("(?!", "negative lookahead '(?!'"),
                 ("(?<=", "lookbehind '(?<='"), ("(?<!", "negative lookbehind '(?<!'"),
                 ("(?P=", "backreference '(?P='"), ("(?>", "atomic group '(?>'"), ("(?#", "comment '(?#'"))


def parse_regex(pattern: str) -> Node:
    """The language of strings that `pattern` matches as a whole (anchors change nothing)."""
    return alt(*(node for _, node, _ in _Parser(pattern).parse()))


def parse_regex_search(pattern: str) -> Node:
    """The language of strings that contain a match of `pattern` (JSON Schema `pattern` semantics)."""
    anything = repeat(char_set(ANY), 0, None)
    branches = []
    for anchored_start, node, anchored_end in _Parser(pattern).parse():
        branches.append(concat(_pad(anchored_start, anything), node, _pad(anchored_end, anything)))
    return alt(*branches)


def _pad(anchored: bool, padding: Node) -> Node:
    return concat() if anchored else padding


class _Parser:
    def __init__(self, pattern: str):
        self.pattern = pattern
        self.pos = 0

    def error(self, message: str, position: int | None = None) -> RegexError:
        return RegexError(message, self.pattern, self.pos if position is None else position)

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.pattern[i] if i < len(self.pattern) else ""

    def parse(self) -> list[tuple[bool, Node, bool]]:
        branches = [self.top_branch()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.top_branch())
        if self.pos < len(self.pattern):
            raise self.error("unbalanced ')'")
        return branches

    def top_branch(self) -> tuple[bool, Node, bool]:
        anchored_start = self.peek() == "^"
        self.pos += anchored_start
        node = self.sequence(top=True)
        anchored_end = self.peek() == "$"
        if anchored_end:
            self.pos += 1
            if self.peek() not in ("", "|"):
                raise self.error("anchor '$' is only supported at the end of the pattern", self.pos - 1)
        return anchored_start, node, anchored_end

    def alternation(self) -> Node:
        branches = [self.sequence(top=False)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(top=False))
        return alt(*branches)

    def sequence(self, top: bool) -> Node:
        items = []
        while (c := self.peek()) not in ("", "|", ")"):
            if c == "^":
                raise self.error("anchor '^' is only supported at the start of the pattern")
            if c == "$":
                if top and self.peek(1) in ("", "|"):
                    break
                raise self.error("anchor '$' is only supported at the end of the pattern")
            items.append(self.quantified(self.atom()))
        return concat(*items)

    def atom(self) -> Node:
        c, start = self.peek(), self.pos
        if c in "*+?" or (c == "{" and self.quantifier_bounds() is not None):
            raise self.error("nothing to repeat")
        self.pos += 1
        if c == "(":
            return self.group(start)
        if c == "[":
            return char_set(self.char_class())
        if c == ".":
            return char_set(ANY_BUT_NEWLINE)
        if c == "\\":
            return char_set(self.escape(in_class=False))
        return char_set(((ord(c), ord(c)),))

    def group(self, start: int) -> Node:
        rest = self.pattern[start:]
        for prefix, name in _GROUP_ERRORS:
            if rest.startswith(prefix):
                raise self.error(f"unsupported regex construct: {name}", start)
        if rest.startswith("(?:"):
            self.pos += 2
        elif rest.startswith("(?P<") or rest.startswith("(?<"):
            close = self.pattern.find(">", start)
            if close < 0:
                raise self.error("unterminated group name", start)
            self.pos = close + 1
        elif rest.startswith("(?"):
            raise self.error("unsupported regex construct: inline flags '(?...)'", start)
        node = self.alternation()
        if self.peek() != ")":
            raise self.error("missing ')'", start)
        self.pos += 1
        return node

    def quantified(self, node: Node) -> Node:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.pos += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{" and (bounds := self.quantifier_bounds()) is not None:
            lo, hi, self.pos = bounds
        else:
            return node
        if self.peek() == "?":
            self.pos += 1  # lazy: same language
        elif self.peek() == "+":
            raise self.error("unsupported regex construct: possessive quantifier")
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self.quantifier_bounds()):
            raise self.error("multiple repeat")
        return repeat(node, lo, hi)

    def quantifier_bounds(self) -> tuple[int, int | None, int] | None:
        """(min, max, position after) when a valid {m}, {m,}, {m,n} or {,n} starts here, else None."""
        end = self.pattern.find("}", self.pos)
        if end < 0:
            return None
        body = self.pattern[self.pos + 1:end]
        lo_text, comma, hi_text = body.partition(",")
        if not (lo_text.isdigit() or (comma and hi_text.isdigit() and not lo_text)):
            return None
        if hi_text and not hi_text.isdigit():
            return None
        lo = int(lo_text or 0)
        hi = lo if not comma else (int(hi_text) if hi_text else None)
        if max(lo, hi or 0) > MAX_REPEAT:
            raise self.error(f"repeat count above {MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise self.error("min repeat greater than max repeat")
        return lo, hi, end + 1

    def char_class(self) -> tuple:
        start = self.pos - 1
        negated = self.peek() == "^"
        self.pos += negated
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if c == "":
                raise self.error("unterminated character class", start)
            if c == "]" and not first:
                self.pos += 1
                break
            if c == "[" and self.peek(1) in (":", "=", "."):
                raise self.error("unsupported regex construct: POSIX character class")
            first = False
            lo_set = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                hi_set = self.class_atom()
                if len(lo_set) != 1 or lo_set[0][0] != lo_set[0][1] or len(hi_set) != 1 \
                        or hi_set[0][0] != hi_set[0][1]:
                    raise self.error("bad character range")
                if hi_set[0][0] < lo_set[0][0]:
                    raise self.error("bad character range (end before start)")
                ranges.append((lo_set[0][0], hi_set[0][0]))
            else:
                ranges.extend(lo_set)
        result = normalize_ranges(ranges)
        return negate_ranges(result) if negated else result

    def class_atom(self) -> tuple:
        c = self.peek()
        self.pos += 1
        if c == "\\":
            return self.escape(in_class=True)
        return ((ord(c), ord(c)),)

    def escape(self, in_class: bool) -> tuple:
        """The character ranges of the escape after a backslash (self.pos is past the backslash)."""
        start = self.pos - 1
        c = self.peek()
        self.pos += 1
        if c == "":
            raise self.error("trailing backslash", start)
        if c.lower() in _CLASS_ESCAPES:
            ranges = _CLASS_ESCAPES[c.lower()]
            return negate_ranges(ranges) if c.isupper() else ranges
        if c == "b" and in_class:
            return ((0x08, 0x08),)
        if c in _CHAR_ESCAPES and not (c == "0" and self.peek().isdigit()):
            return ((_CHAR_ESCAPES[c],) * 2,)
        if c.isdigit():
            raise self.error("unsupported regex construct: backreference", start)
        if c in _UNSUPPORTED_ESCAPES:
            raise self.error(f"unsupported regex construct: {_UNSUPPORTED_ESCAPES[c]}", start)
        if c in ("x", "u"):
            return ((self.hex_escape(c, start),) * 2,)
        if c.isalnum():
            raise self.error(f"unknown escape '\\{c}'", start)
        return ((ord(c), ord(c)),)

    def hex_escape(self, kind: str, start: int) -> int:
        if kind == "u" and self.peek() == "{":
            end = self.pattern.find("}", self.pos)
            if end < 0:
                raise self.error("unterminated escape '\\u{'", start)
            digits, after = self.pattern[self.pos + 1:end], end + 1
        else:
            width = 2 if kind == "x" else 4
            digits, after = self.pattern[self.pos:self.pos + width], self.pos + width
            if len(digits) != width:
                digits = ""
        is_hex = bool(digits) and all(d in "0123456789abcdefABCDEF" for d in digits)
        value = int(digits, 16) if is_hex else -1
        if not 0 <= value <= MAX_CODE_POINT:
            raise self.error(f"bad escape '\\{kind}'", start)
        self.pos = after
        return value
