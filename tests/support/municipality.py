"""The municipalities' own machines, for tests: each municipality makes its sealing key pair
with `fieldkit packet keygen`'s code in a folder of its own, outside every hub folder, and the
contractor imports only the public half (issue 17 item 1)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from fieldkit.pki import KitPki
from fieldkit.sealing_keys import GeneratedKey, generate, load_private

PASSPHRASE = b"municipality test passphrase 2026"


class MunicipalityMachines:
    """One folder per test process (never under a test's tmp_path, which a hub may scan),
    one key pair per municipality code, made once."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._made: dict[str, GeneratedKey] = {}

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="fieldkit-municipality-"))
            atexit.register(shutil.rmtree, self._root, True)
        return self._root

    def key(self, code: str) -> GeneratedKey:
        if code not in self._made:
            self._made[code] = generate(self.root / code, PASSPHRASE)
        return self._made[code]

    def register(self, pki: KitPki, code: str) -> GeneratedKey:
        """The municipality's key made (once), its public half imported into ``pki`` with the
        fingerprint the municipality printed."""
        made = self.key(code)
        if not (pki.receiver_dir(code) / "public.pem").exists():
            pki.import_receiver(code, made.public.read_bytes(), made.fingerprint)
        return made

    def private(self, code: str) -> x25519.X25519PrivateKey:
        return load_private(self.key(code).private, PASSPHRASE)

    def passphrase_file(self) -> Path:
        path = self.root / "passphrase"
        if not path.exists():
            path.write_bytes(PASSPHRASE + b"\n")
            path.chmod(0o600)
        return path


MUNICIPALITY_MACHINES = MunicipalityMachines()
