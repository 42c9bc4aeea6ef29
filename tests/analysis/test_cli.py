"""``analyze-sensitivity`` says plainly that it does not exist yet, and fails."""

from __future__ import annotations

import pytest

from analysis.cli import main


def test_analyze_sensitivity_is_declared_and_refuses_to_pretend(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "not implemented yet" in capsys.readouterr().err
