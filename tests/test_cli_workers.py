"""`serve --workers`: a positive count, or `auto` for one process per usable core."""

from __future__ import annotations

import argparse
import os

import pytest

from pipelex_server.cli import usable_cores, workers_argument


def test_auto_is_one_worker_per_usable_core():
    assert workers_argument("auto") == usable_cores() == len(os.sched_getaffinity(0))
    assert workers_argument(" AUTO ") == usable_cores()


def test_a_count_is_taken_as_is():
    assert workers_argument("3") == 3


@pytest.mark.parametrize("value", ["0", "-2", "many", ""])
def test_anything_else_is_refused_with_a_clear_message(value):
    with pytest.raises(argparse.ArgumentTypeError, match="positive number or 'auto'"):
        workers_argument(value)


def test_the_cli_refuses_a_bad_value_before_starting(capsys):
    from pipelex_server.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", "zero"])
    assert exited.value.code == 2
    assert "positive number or 'auto'" in capsys.readouterr().err
