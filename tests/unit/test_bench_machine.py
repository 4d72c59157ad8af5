"""bench.machine prints its figures, each a number, without a broker."""

from __future__ import annotations

import re

import pytest

from bench.machine import main


def test_it_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--rounds", "50"])

    out = capsys.readouterr().out.splitlines()
    assert re.match(r"\d+ CPUs, load average \d", out[0])
    figures = dict(line.rsplit("  ", 1) for line in out[1:])
    assert len(figures) == 9
    for name, value in figures.items():
        assert re.match(r"(\d+(\.\d)? us|-)", value.strip()), (name, value)
    assert any("after 5 ms idle" in name for name in figures)
    assert any("HandlerPool" in name for name in figures)
