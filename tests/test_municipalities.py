"""Municipality codes for the statistics (R8, R21): shipped table, check digits verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldkit.municipalities import MunicipalityError, MunicipalityTable, check_digit, validate_code


@pytest.mark.parametrize(
    "code", ["131016", "131024", "131130", "202011", "202029", "011002"]
)  # Tokyo's wards, Nagano, Sapporo: published codes
def test_check_digit_matches_published_codes(code: str) -> None:
    assert check_digit(code[:5]) == int(code[5])


def test_nagano_table_ships_all_77_municipalities() -> None:
    table = MunicipalityTable.load(["20"])
    assert len(table) == 77
    assert table.get("202011").name == "長野市"


@pytest.mark.parametrize(
    ("code", "reason"),
    [("20201", "6 digits"), ("202012", "check digit"), ("abcdef", "6 digits")],
)
def test_bad_codes_are_refused_with_a_reason(code: str, reason: str) -> None:
    with pytest.raises(MunicipalityError, match=reason):
        validate_code(code)


def test_extra_prefecture_from_a_directory_and_bad_rows_named(tmp_path: Path) -> None:
    (tmp_path / "13-tokyo.csv").write_text(
        "code,prefecture,name,kana\n131016,東京都,千代田区,ちよだく\n", encoding="utf-8"
    )
    table = MunicipalityTable.load(["13"], extra_dir=tmp_path)
    assert [m.name for m in table] == ["千代田区"]
    (tmp_path / "13-tokyo.csv").write_text(
        "code,prefecture,name,kana\n131017,東京都,千代田区,ちよだく\n", encoding="utf-8"
    )
    with pytest.raises(MunicipalityError, match=r"13-tokyo\.csv line 2: the check digit"):
        MunicipalityTable.load(["13"], extra_dir=tmp_path)
