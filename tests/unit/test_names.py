"""Team and key names (issue 19.7): one documented charset at the store and the CLI, and CSV
cells a spreadsheet will not execute."""

from __future__ import annotations

import csv
import io

import pytest

from router.finance.keys import check_name
from router.finance.ledger_types import TotalsRow
from router.finance.spend import spend_csv
from router.ops.admin_cli import main

BAD = ["", "a\nb", "a\rb", "a\x1fb", "a b", "=HYPERLINK(1)", "é", "x" * 65, "a,b", "a:b"]


@pytest.mark.parametrize("name", ["a", "team-1", "A.b_c", "x" * 64])
def test_valid_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_invalid_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="A-Z a-z 0-9"):
        check_name(name)


def test_key_label_may_be_empty_but_not_odd() -> None:
    assert check_name("", "key", label=True) == ""
    assert check_name("ops laptop", "key", label=True) == "ops laptop"
    for bad in (" lead", "trail ", "a\tb", "a\x00"):
        with pytest.raises(ValueError):
            check_name(bad, "key", label=True)
    with pytest.raises(ValueError, match="key name"):
        check_name("a\nb", "key", label=True)


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--team", ""],
        ["keys", "create", "--team", "a\nb"],
        ["keys", "create", "--team", "ok", "--name", "x\x1fy"],
        ["keys", "budget", "--team", "=cmd", "--clear"],
        ["keys", "list", "--team", "a b"],
        ["spend", "report", "--team", ""],
    ],
)
def test_cli_refuses_bad_names_without_a_traceback(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid" in err and "Traceback" not in err


@pytest.mark.parametrize("cell", ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "\tx"])
def test_csv_escapes_formula_cells(cell: str) -> None:
    text = spend_csv([TotalsRow((cell,), 1)], "team")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["team"] == "'" + cell


def test_csv_keeps_plain_names_and_negative_numbers() -> None:
    text = spend_csv([TotalsRow(("alpha",), 1, baseline_nano=0, cost_nano=5)], "team")
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["team"] == "alpha"
    assert row["savings_usd"].startswith("-")  # a number, not a formula: left alone
