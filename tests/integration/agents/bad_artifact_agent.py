"""An agent that leaves a hostile artifact: run by the engine as a real child process.

argv: MODE ARTIFACT_NAME ARTIFACT_DIR OUTSIDE_DIR [MEGABYTES]

Every mode holds (or points at) a well-formed PASS claim for the test report somewhere, so
a gate that reads it naively passes: a correct gate must not.

  huge-head      the PASS front matter, then MEGABYTES of filler
  huge-tail      MEGABYTES of filler, then the PASS keys as the very last lines
  nul            the PASS front matter, with NUL bytes in the body
  invalid-utf8   the PASS front matter, with bytes that are not UTF-8 in the body
  binary-pass    random-looking binary bytes with the PASS lines embedded among them
  symlink-out    a symlink to a PASS report written in OUTSIDE_DIR (out of the task folder)
  symlink-in     a symlink to a PASS report in the task folder's runs/ (not an artifact)
  fifo           a FIFO (named pipe) where the file should be; nobody ever writes to it
  directory      a directory where the file should be, holding a PASS report
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PASS = b"---\nresult: PASSED\nstatus: PASS\nfailed: 0\n---\n"
FILLER = b"filler line of an artifact that never ends\n" * 1024  # 44 KiB


def _flood(fh: object, megabytes: int) -> None:
    write = fh.write  # type: ignore[attr-defined]
    target = megabytes * 1024 * 1024
    written = 0
    while written < target:
        write(FILLER)
        written += len(FILLER)


def main() -> int:
    mode, name, artifact_dir, outside = sys.argv[1:5]
    megabytes = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    path = Path(artifact_dir) / name
    if mode == "huge-head":
        with path.open("wb") as fh:
            fh.write(PASS + b"\n# Test report\n\n")
            _flood(fh, megabytes)
    elif mode == "huge-tail":
        with path.open("wb") as fh:
            fh.write(b"# Test report\n\n")
            _flood(fh, megabytes)
            fh.write(b"\nresult: PASSED\nstatus: PASS\nfailed: 0\n")
    elif mode == "nul":
        path.write_bytes(PASS + b"\n# Test report\n\nran \x00\x00\x00 fine\n")
    elif mode == "invalid-utf8":
        path.write_bytes(PASS + b"\n# Test report\n\nran \xff\xfe\xc3\x28 fine\n")
    elif mode == "binary-pass":
        noise = bytes(range(256)) * 4
        path.write_bytes(noise + b"\n" + PASS + noise)
    elif mode in ("symlink-out", "symlink-in"):
        target_dir = Path(outside) if mode == "symlink-out" else Path(artifact_dir) / "runs"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"pass-{name}"
        target.write_bytes(PASS + b"\n# Test report\n\nall green, honest\n")
        path.unlink(missing_ok=True)
        path.symlink_to(target)
    elif mode == "fifo":
        path.unlink(missing_ok=True)
        os.mkfifo(path)
    elif mode == "directory":
        path.unlink(missing_ok=True)
        path.mkdir(exist_ok=True)
        (path / "13-test-report.md").write_bytes(PASS)
    else:
        sys.stderr.write(f"unknown mode {mode!r}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
