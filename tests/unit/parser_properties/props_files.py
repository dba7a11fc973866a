"""Properties of the parsers that read a file another program wrote: pytest's JUnit XML
(the test-runner's evidence) and ``coverage json`` (the coverage gate's total)."""

from __future__ import annotations

import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from hypothesis import strategies as st

from orchestrator.gates import coverage_gate
from orchestrator.runners import suite
from orchestrator.runners.suite import JUnitCounts

from .core import patched, prop

_SCRATCH: list[Path] = []


def scratch(name: str) -> Path:
    """A path in this process's scratch folder (made once, removed at exit)."""
    if not _SCRATCH:
        folder = Path(tempfile.mkdtemp(prefix="orch-parser-props-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH.append(folder)
    return _SCRATCH[0] / name


class Doc(NamedTuple):
    """A file to write (None: no file at all) and what a correct reader must make of it."""

    data: bytes | None
    expected: Any  # the exact answer when known, else None
    must_refuse: bool  # the reader must return no value


def _write(name: str, doc: Doc) -> Path:
    path = scratch(name)
    path.unlink(missing_ok=True)
    if doc.data is not None:
        path.write_bytes(doc.data)
    return path


# --------------------------------------------------------------------------- JUnit XML

_COLLECTION = "collection failure"
case = st.tuples(
    st.lists(
        st.sampled_from(["failure", "error", "skipped", "system-out", "properties"]), max_size=3
    ),
    st.sampled_from(["", _COLLECTION, "boom"]),
    st.text(max_size=10),
)
suites = st.lists(st.lists(case, max_size=5), max_size=3)
# XML declarations, including encodings expat cannot read and codecs that are not text.
encodings = st.none() | st.sampled_from(
    [
        "utf-8",
        "UTF-8",
        "ascii",
        "latin-1",
        "utf-16",
        "bogus",
        "base64",
        "big5",
        "idna",
        "punycode",
        "cp037",
        "undefined",
        "rot13",
        "zlib",
    ]
)
_SAFE_ENCODINGS = (None, "utf-8", "UTF-8")


def _bucket(children: list[str]) -> str:
    """pytest's buckets: one testcase element lands in one, failure before error before skip."""
    for tag in ("failure", "error", "skipped"):
        if tag in children:
            return tag
    return "passed"


def _junit(
    cases_by_suite: list[list[tuple[list[str], str, str]]], wrap: bool, encoding: str | None
) -> tuple[bytes, JUnitCounts]:
    counts = {"passed": 0, "failure": 0, "error": 0, "skipped": 0, "collection": 0}
    suites_xml = []
    for cases in cases_by_suite:
        elements = []
        for children, message, text in cases:
            inner = "".join(
                f"<{c}>{escape(text)}</{c}>"
                if c == "system-out"
                else f"<{c} message={quoteattr(message)}/>"
                for c in children
            )
            element = f'<testcase classname="t" name="n">{inner}</testcase>'
            elements.append(f"<group>{element}</group>" if wrap else element)
            bucket = _bucket(children)
            counts[bucket] += 1
            if bucket == "error" and message == _COLLECTION:
                counts["collection"] += 1
        suites_xml.append(f'<testsuite name="s">{"".join(elements)}</testsuite>')
    decl = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else ""
    data = f"{decl}<testsuites>{''.join(suites_xml)}</testsuites>".encode()
    total = sum(v for k, v in counts.items() if k != "collection")
    expected = JUnitCounts(
        counts["passed"],
        counts["failure"],
        counts["error"],
        counts["skipped"],
        total,
        counts["collection"],
    )
    return data, expected


def _junit_doc(suites_: Any, wrap: bool, encoding: str | None, cut: float | None) -> Doc:
    data, expected = _junit(suites_, wrap, encoding)
    if cut is not None:
        # Any strict prefix leaves the root element open: not a document.
        return Doc(data[: int(len(data) * cut)], None, True)
    return Doc(data, expected if encoding in _SAFE_ENCODINGS else None, False)


junit_docs = st.one_of(
    st.builds(
        _junit_doc, suites, st.booleans(), encodings, st.none() | st.floats(0, 1, exclude_max=True)
    ),
    st.binary(max_size=300).map(lambda b: Doc(b, None, False)),
    st.just(Doc(None, None, True)),
    st.just(Doc(b"", None, True)),
)

_real_read_junit = suite.read_junit


def _unreadable_is_empty() -> Any:
    """Broken: an XML file it cannot parse counts as a run with nothing in it."""

    def read(path: Path) -> tuple[JUnitCounts | None, str]:
        counts, why = _real_read_junit(path)
        if counts is None and path.exists():
            return JUnitCounts(0, 0, 0, 0, 0, 0), ""
        return counts, why

    return patched(suite, "read_junit", read)


@prop("runners/suite.py read_junit", junit_docs, broken=_unreadable_is_empty)
def junit_counts_only_what_the_xml_says(doc: Doc) -> None:
    """Any bytes: counts that add up (and match the document when it is known), or no
    counts with a reason; a file that is missing, empty or cut short is never evidence."""
    counts, why = suite.read_junit(_write("junit.xml", doc))
    if counts is None:
        assert why
        return
    assert not doc.must_refuse, (doc, counts)
    assert why == ""
    parts = (counts.passed, counts.failures, counts.errors, counts.skipped)
    assert all(n >= 0 for n in parts), counts
    assert sum(parts) == counts.total
    assert 0 <= counts.collection_errors <= counts.errors
    assert counts.tests_ran >= 0
    if doc.expected is not None:
        assert counts == doc.expected, (counts, doc.expected)


# --------------------------------------------------------------------------- coverage


def _total_doc(value: object) -> Doc:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 100
    )
    data = json.dumps({"totals": {"percent_covered": value, "covered_lines": 3}})
    return Doc(data.encode(), float(value) if ok else None, not ok)  # type: ignore[arg-type]


percent = st.one_of(
    st.floats(0, 100),
    st.floats(),
    st.integers(-(10**30), 10**30),
    st.sampled_from([True, False, None, "87.5", [], {}, 100, 100.0, 0, -0.0, 1e-300]),
)
total_docs = st.one_of(
    percent.map(_total_doc),
    st.sampled_from(
        [
            b"",
            b"[]",
            b"{}",
            b'{"totals": []}',
            b'{"totals": {}}',
            b"null",
            b"\xff\xfe{",
            b'{"totals": {"percent_covered": 50}',
            b"[" * 5000,
            b'{"a":' * 3000,
        ]
    ).map(lambda b: Doc(b, None, True)),
    st.binary(max_size=100).map(lambda b: Doc(b, None, False)),
    st.just(Doc(None, None, True)),
)

_real_read_total = coverage_gate.read_total


def _any_number_goes() -> Any:
    """Broken: takes whatever float() makes of the total (True, "87.5", -3 ...)."""

    def read(path: Path) -> tuple[float | None, str]:
        try:
            value = json.loads(path.read_text())["totals"]["percent_covered"]
            return float(value), ""
        except Exception as exc:
            return None, str(exc) or "unreadable"

    return patched(coverage_gate, "read_total", read)


@prop("gates/coverage_gate.py read_total", total_docs, broken=_any_number_goes)
def coverage_total_is_a_percent_or_nothing(doc: Doc) -> None:
    """Any bytes: a finite percent in [0, 100] that the file really gives, or None with a
    reason; never an exception."""
    value, why = coverage_gate.read_total(_write("coverage.json", doc))
    if value is None:
        assert why
        return
    assert not doc.must_refuse, (doc, value)
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert 0 <= value <= 100, value
    if doc.expected is not None:
        assert value == doc.expected
