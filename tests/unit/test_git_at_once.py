"""``gitops.git.at_once``: two independent calls at the same time, their answers and errors."""

from __future__ import annotations

import threading

import pytest

from orchestrator.gitops.git import at_once


def test_both_run_at_the_same_time() -> None:
    # `first` waits for `second` to have started: one after the other, it would give up
    # waiting and answer False.
    second_ran = threading.Event()

    def first() -> bool:
        return second_ran.wait(10)

    def second() -> str:
        second_ran.set()
        return "b"

    assert at_once(first, second) == (True, "b")


def test_an_error_of_either_is_raised_once_both_have_ended() -> None:
    ended: list[str] = []

    def slow() -> None:
        threading.Event().wait(0.05)
        ended.append("slow")

    def fails() -> None:
        raise ValueError("second")

    with pytest.raises(ValueError, match="second"):
        at_once(slow, fails)
    assert ended == ["slow"]

    def fails_first() -> None:
        raise KeyError("first")

    with pytest.raises(KeyError, match="first"):
        at_once(fails_first, slow)
    assert ended == ["slow", "slow"]  # the thread was waited for before the raise
