"""``fieldkit.models.read_toml_model``: every config file the kit reads through it (the office
network, the site network, the site hand-out, the antivirus policy) is refused with a message
that names the file and the key, never the value that was wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fieldkit.models import describe_validation_error, read_toml_model

SECRET = "4242-secret-value-4242"


class Refused(Exception):
    pass


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z]+$")
    port: int = Field(ge=1, le=65535)


def read(path: Path, table: str | None = None) -> Site:
    return read_toml_model(path, Site, what="site file", error=Refused, table=table)


def test_a_good_file_and_its_table(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('name = "hall"\nport = 8443\n[other]\nname = "gym"\nport = 1\n')
    with pytest.raises(Refused, match="other: Extra inputs are not permitted"):
        read(path)
    assert read(path, table="other") == Site(name="gym", port=1)
    path.write_text('name = "hall"\nport = 8443\n')
    assert read(path) == Site(name="hall", port=8443)


def test_a_missing_file_is_left_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (f'name = "{SECRET}"\nport = 1\n', "name: String should match pattern"),
        (f'name = "hall"\nport = "{SECRET}"\n', "port: Input should be a valid integer"),
        (f'name = "hall"\nport = 1\n{SECRET.replace("-", "_")} = 1\n', "Extra inputs"),
        (f'name = "{SECRET}\nport = 1\n', "is not valid TOML"),
        (b"name = '\xff" + SECRET.encode() + b"'\n", "is unreadable"),
    ],
    ids=["pattern", "type", "extra-key", "bad-toml", "not-utf8"],
)
def test_refused_with_the_file_and_the_key_never_the_value(
    tmp_path: Path, body: str | bytes, says: str
) -> None:
    path = tmp_path / "site.toml"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    with pytest.raises(Refused) as caught:
        read(path)
    message = str(caught.value)
    assert message.startswith(f"site file {path}")
    assert says in message
    if "extra" not in says.lower():
        assert SECRET not in message and "secret" not in message
    # Raised "from None": no chained exception carries the value into a traceback.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_the_check_catches_pydantics_own_message() -> None:
    """The protection's other side: pydantic's own text carries the value, which is why the
    reader words its message from the keys."""
    with pytest.raises(ValidationError) as caught:
        Site.model_validate({"name": SECRET, "port": 1})
    assert SECRET in str(caught.value)
    assert SECRET not in describe_validation_error(caught.value)


def test_a_folder_in_its_place_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "site.toml").mkdir()
    with pytest.raises(Refused, match="is unreadable"):
        read(tmp_path / "site.toml")
