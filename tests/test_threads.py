"""The default thread count: the cores other processes leave free, at least one."""

from __future__ import annotations

import os

import pytest

from dfr_edge import threads


@pytest.mark.parametrize("load, expected", [(0.0, 4), (1.2, 3), (2.6, 1), (3.7, 1), (40.0, 1)])
def test_default_counts_free_cores(monkeypatch, load, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert threads.default_threads() == expected


def test_without_a_load_average_all_cores_are_used(monkeypatch):
    def unavailable():
        raise OSError("no load average here")

    monkeypatch.setattr(threads, "usable_cores", lambda: 3)
    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert threads.default_threads() == 3


def test_cli_refuses_zero_threads(capsys):
    from dfr_edge.cli.infer import parser

    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["m.onnx", "x.png", "--out", "o", "--threads", "0"])
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err
