"""Contract-end sanitization of a file-backed LUKS2 volume, verified and certified. R24 R31"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fieldkit.cli import main
from fieldkit.wipe.record import (
    GENESIS,
    ErasureRecord,
    EvidenceStore,
    load_device_key,
    parse_records,
    public_hex,
)
from fieldkit.wipe.sanitize import (
    MIN_SUBSECTIONS,
    NO_RECORDS,
    Person,
    SanitizeError,
    sample_offsets,
    sanitize,
    sign_certificate,
    verify_certificate,
)
from tests.wipe_fixtures import APPLICATION_ID
from tests.wipe_volume import (
    SIZE,
    volume,
    volume_key,
    wipe_config,
)


def people() -> dict[str, Any]:
    """Who sanitized and verified; and the device's chain (none: these volumes only)."""
    return {
        "sanitized_by": Person(name="消去 太郎", role="sanitized", organization="Contractor"),
        "verified_by": Person(name="検証 花子", role="verified", organization="Municipality"),
        "evidence_chain": NO_RECORDS,
    }


def test_sanitization_makes_the_volume_unrecoverable_and_the_certificate_verifies(
    tmp_path: Path,
) -> None:
    image, key_file, ciphertext = volume(tmp_path)
    key = load_device_key(tmp_path / "device.pem")
    certificate = sanitize(image, device="tab-01", key=key, location="長野市役所", **people())

    assert certificate.result == "pass"
    v = certificate.verification
    assert v.subsections >= 1000 and v.locations_per_subsection == 2 and v.first_and_last
    assert v.samples_read == 2 * v.subsections + 2 and v.samples_failed == 0
    assert v.keyslots_left == 0
    assert certificate.method.category == "Purge" and len(certificate.method.steps) == 2
    # After: no keyslot opens, and neither the plaintext nor its ciphertext is in the file.
    assert volume_key(image, key_file) is None
    raw = image.read_bytes()
    assert ciphertext[:64] not in raw and APPLICATION_ID.encode() not in raw
    assert raw.count(0) == SIZE
    text = certificate.model_dump_json()
    assert verify_certificate(text, public_hex(key)) == []


def test_one_flipped_byte_or_another_signer_fails_verification(tmp_path: Path) -> None:
    image, _, _ = volume(tmp_path)
    key = load_device_key(tmp_path / "device.pem")
    text = sanitize(image, device="tab-01", key=key, location="site", **people()).model_dump_json()
    position = text.index('"samples_failed":0') + len('"samples_failed":')
    flipped = text[:position] + "1" + text[position + 1 :]
    assert verify_certificate(flipped) == ["the signature does not match the content"]
    data = json.loads(text)
    data["location"] = data["location"][:-1] + "x"
    assert verify_certificate(json.dumps(data)) == ["the signature does not match the content"]
    assert verify_certificate(text, "00" * 32) == ["signed by a key other than the trusted one"]
    assert verify_certificate("{}")[0].startswith("not a sanitization certificate")


def test_without_the_overwrite_the_sampling_fails_the_certificate(tmp_path: Path) -> None:
    """The verification can fail: skip the overwrite and the samples still hold ciphertext."""
    image, key_file, ciphertext = volume(tmp_path)
    key = load_device_key(tmp_path / "device.pem")
    certificate = sanitize(
        image, device="t", key=key, location="s", overwrite_pass=False, **people()
    )
    assert certificate.result == "fail" and certificate.verification.samples_failed > 0
    assert volume_key(image, key_file) is None  # the crypto erase alone did happen
    assert ciphertext[:64] in image.read_bytes()


def test_without_the_crypto_erase_or_overwrite_the_key_still_opens_and_it_fails(
    tmp_path: Path,
) -> None:
    image, key_file, _ = volume(tmp_path)
    key = load_device_key(tmp_path / "device.pem")
    certificate = sanitize(
        image, device="t", key=key, location="s", erase_keys=False, overwrite_pass=False,
        **people(),
    )  # fmt: skip
    assert certificate.result == "fail" and certificate.verification.keyslots_left == 1
    assert volume_key(image, key_file) is not None


def test_sampling_covers_first_last_and_two_per_subsection() -> None:
    offsets = sample_offsets(SIZE, 1000, "seed")
    assert offsets[:2] == [0, SIZE - 512] and len(offsets) == 2002
    for index in range(1000):
        start, stop = index * SIZE // 1000, (index + 1) * SIZE // 1000
        pair = offsets[2 + 2 * index : 4 + 2 * index]
        assert all(start <= o <= stop - 512 for o in pair), index
    assert sample_offsets(SIZE, 1000, "seed") == offsets  # reproducible from the seed
    assert sample_offsets(SIZE, 1000, "other") != offsets


def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    key = load_device_key(tmp_path / "device.pem")
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(1 << 20))
    with pytest.raises(SanitizeError, match="no LUKS volume"):
        sanitize(plain, device="t", key=key, location="s", **people())
    with pytest.raises(SanitizeError, match="at least 1000 subsections"):
        sanitize(plain, device="t", key=key, location="s", subsections=10, **people())
    with pytest.raises(SanitizeError, match="does not exist"):
        sanitize(tmp_path / "nope", device="t", key=key, location="s", **people())
    assert MIN_SUBSECTIONS == 1000


def test_the_cli_writes_a_signed_json_and_a_japanese_pdf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _, _ = volume(tmp_path)
    config = wipe_config(tmp_path)
    base = ["--config", str(config), "wipe", "device", str(image)]
    assert main([*base, "--sanitized-by", "消去 太郎"]) == 2  # no --yes, nothing touched
    assert volume_key(image, tmp_path / "passphrase") is not None
    out = tmp_path / "certs"
    args = ["--yes", "--sanitized-by", "消去 太郎", "--location", "長野市", "--out", str(out)]
    assert main(base + args) == 2  # no erasure records: that has to be said
    assert "add --no-records" in capsys.readouterr().err
    assert volume_key(image, tmp_path / "passphrase") is not None
    assert main([*base, *args, "--no-records"]) == 0
    assert "PASS" in capsys.readouterr().out
    (json_file,) = out.glob("*.json")
    (pdf_file,) = out.glob("*.pdf")
    verify = ["--config", str(config), "wipe", "verify-certificate", str(json_file)]
    assert main(verify) == 0
    assert main(["--config", str(config), "certificate", "verify", str(json_file)]) == 0
    text = subprocess.run(
        ["pdftotext", str(pdf_file), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "データ消去証明書" in text and "Cryptographic Erase" in text and "長野市" in text
    data = json_file.read_bytes()
    json_file.write_bytes(data.replace(b'"pass"', b'"fail"', 1))
    assert main(verify) == 1


def test_the_certificate_closes_the_devices_erasure_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The certificate names where the device's erasure records ended; `certificate verify
    --records` checks the records reach exactly there, and a record left out breaks it."""
    image, _, _ = volume(tmp_path)
    config = wipe_config(tmp_path)
    key = load_device_key(tmp_path / "keys" / "device.pem")
    store = EvidenceStore(tmp_path / "wipe-state" / "evidence.sqlite")
    sealed = []
    for sid in ("a" * 32, "b" * 32, "c" * 32):
        record = ErasureRecord(
            kind="session", sid=sid, device="test-tablet-01", started=1.0, finished=2.0, ok=True
        )
        sealed.append(store.append(record, key))
    last = sealed[-1]
    base = ["--config", str(config)]
    out = tmp_path / "certs"
    sanitized = ["wipe", "device", str(image), "--yes", "--sanitized-by", "消去 太郎"]
    # Records that have not left for the hub would never reach it: not without --force.
    assert main([*base, *sanitized, "--out", str(out)]) == 2
    assert "3 erasure record(s) not yet taken by sync" in capsys.readouterr().err
    for seq, _ in store.not_handed_over():
        store.mark_handed_over(seq)  # what the wipe's hand-over does once sync takes them
    store.close()
    assert main([*base, *sanitized, "--out", str(out)]) == 0
    (json_file,) = out.glob("*.json")
    chain = json.loads(json_file.read_text())["evidence_chain"]
    assert chain == {"records": 3, "head": last.hash, "intact": True}

    capsys.readouterr()
    assert main([*base, "wipe", "records", "--all"]) == 0
    exported = capsys.readouterr().out
    assert len(parse_records(exported, "export")) == 3
    records_file = tmp_path / "records.jsonl"
    records_file.write_text(exported)
    verify = [*base, "certificate", "verify", str(json_file), "--records", str(records_file)]
    assert main(verify) == 0
    said = capsys.readouterr().out
    assert "signature and erasure-record chain valid" in said
    assert f"signer not pinned: it is {public_hex(key)}" in said
    assert main([*verify, "--public-key", public_hex(key)]) == 0
    assert main([*verify, "--public-key", "00" * 32]) == 1  # a forger's own key is not enough

    lines = exported.splitlines()
    records_file.write_text("\n".join([lines[0], lines[2]]) + "\n")  # the middle one left out
    assert main(verify) == 1
    said = capsys.readouterr().out
    assert "1 of 2 records are not reached" in said
    assert "the erasure records end after 1" in said
    records_file.write_text("\n".join(lines[:2]) + "\n")  # the last one held back
    assert main(verify) == 1
    records_file.write_text("{not json\n")
    assert main(verify) == 2
    assert "line 1: not an erasure record" in capsys.readouterr().err


def test_a_device_without_records_certifies_an_empty_chain(tmp_path: Path) -> None:
    image, _, _ = volume(tmp_path)
    key = load_device_key(tmp_path / "device.pem")
    certificate = sanitize(image, device="t", key=key, location="s", **people())
    assert certificate.evidence_chain.records == 0
    assert certificate.evidence_chain.head == GENESIS
    text = certificate.model_dump_json()
    assert verify_certificate(text, records=[]) == []
    foreign = ErasureRecord(kind="daily", device="t", started=1, finished=2, ok=True)
    store = EvidenceStore(tmp_path / "other.sqlite")
    sealed = store.append(foreign, key)
    store.close()
    # A certificate from before the chain was stated still verifies its signature, and says
    # the chain cannot be checked.
    older = sign_certificate(certificate.model_copy(update={"evidence_chain": None}), key)
    assert "evidence_chain" not in json.loads(older.body())
    assert verify_certificate(older.model_dump_json(exclude_none=True)) == []
    assert verify_certificate(older.model_dump_json(), records=[]) == [
        "the certificate states no erasure-record chain (made before fieldkit did)"
    ]
    assert "the erasure records end after 1" in verify_certificate(text, records=[sealed])[0]
