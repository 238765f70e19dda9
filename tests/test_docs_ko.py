"""The Korean README (docs/ko/README.md) cannot silently drift from README.md.

The Korean text is a translation kept by hand, with its own order of sections,
so the two cannot be compared line by line. What must never differ is what
they claim: every measurement the Korean README states (a number with a unit:
ms, s/초, x/배, %, bytes/바이트, KiB, MiB, ...), every version-like number
(1.6.20, 580.159.04, 2.15) and every number in a Korean table must be one
that README.md states too. When a benchmark or a release list changes in
README.md and the Korean copy still carries the old figure, this fails and
names the figure and its line.

Not checked: that the Korean README says *everything* README.md says (it is
shorter by design), and prose that carries no number.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
KOREAN = REPO / "docs/ko/README.md"

# Korean unit words and their README.md spelling.
UNITS = {"초": "s", "배": "x", "바이트": "bytes", "B": "bytes", "cpu-s": "s", "CPU-seconds": "s", "CPU초": "s"}
# A number: 2,636,062 or 0.48 or 1.6.20, not part of a word or a longer number.
NUMBER = r"(?<![\w.,-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)*)"
MEASUREMENT = re.compile(NUMBER + r"\s?(ms|CPU초|초|배|바이트|bytes|B|MiB|KiB|GiB|MB|KB|CPU-seconds|cpu-s|s|x|%)(?![A-Za-z])")
BARE = re.compile(NUMBER)
# Example values in commands, not claims (an image tag in a code sample).
EXAMPLES = {"12.6.3"}


def canonical(number: str) -> str:
    """1.40 and 1.4 are the same figure; 2,636,062 and 2636062 too."""
    number = number.replace(",", "")
    if number.count(".") == 1:
        return repr(float(number)).removesuffix(".0")
    return number


def measurements(text: str) -> set[tuple[str, str]]:
    return {(canonical(m.group(1)), UNITS.get(m.group(2), m.group(2))) for m in MEASUREMENT.finditer(text)}


def numbers(text: str) -> set[str]:
    return {canonical(m.group(1)) for m in BARE.finditer(text)}


def korean_claims() -> list[tuple[int, str, object]]:
    """(line number, the line, a claim) for every figure the Korean README states."""
    claims = []
    for number, line in enumerate(KOREAN.read_text(encoding="utf-8").splitlines(), 1):
        for figure in measurements(line):
            claims.append((number, line, figure))
        for figure in numbers(line):
            version_like = "." in figure and figure not in EXAMPLES
            if version_like or line.lstrip().startswith("|"):
                claims.append((number, line, figure))
    return claims


def test_every_korean_figure_is_one_readme_states():
    english = README.read_text(encoding="utf-8")
    english_measurements = measurements(english)
    english_numbers = numbers(english)
    drift = []
    for number, line, figure in korean_claims():
        known = figure in english_measurements if isinstance(figure, tuple) else figure in english_numbers
        if not known:
            shown = " ".join(figure) if isinstance(figure, tuple) else figure
            drift.append(f"docs/ko/README.md:{number}: {shown} is not in README.md: {line.strip()[:120]}")
    assert not drift, "the Korean README states figures README.md does not (update both):\n" + "\n".join(drift)


@pytest.mark.parametrize("english,korean,same", [
    ("0.48x at 16 nodes", "0.48배", True),
    ("2,636,062 bytes", "2,636,062바이트", True),
    ("1.40 MiB", "1.4 MiB", True),
    ("3.92 s", "3.91초", False),
    ("0.9 to 1.5 s", "0.9~1.5초", True),
    ("7.13 against 8.10 CPU-seconds", "7.13 대 8.10초", True),
])
def test_units_and_spellings_are_compared_as_figures(english, korean, same):
    """The check itself: a changed figure is caught, a translated unit is not drift."""
    assert (measurements(korean) <= measurements(english)) is same
