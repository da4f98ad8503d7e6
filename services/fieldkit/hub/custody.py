"""The hub holds ciphertext and public keys only: the check its services run at start.

``hub-broker`` and ``hub-ingest`` refuse to start while a private sealing key (an X25519
private key, encrypted or not, or any encrypted private key, in PEM or DER) lies under the
hub's directories: its PKI folder, its database and web data folders, the broker's folder and
its config folder. Such a key would let whoever holds the hub's disk or backup open every
packet; the municipality keeps it on its own machine (``fieldkit packet keygen``). The hub's
own TLS keys (the broker's, the ingest's) and the kit CA's are not sealing keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url

from fieldkit.config import ConfigError, DeviceConfig
from fieldkit.sealing_keys import find_private_sealing_keys

log = logging.getLogger(__name__)


def hub_directories(config: DeviceConfig) -> list[Path]:
    """Every folder the hub keeps files in (those that exist are scanned)."""
    hub = config.hub
    folders = [hub.config_dir, hub.pki, hub.broker_dir, config.hubweb.secret_key_file.parent]
    folders.append(config.av_mirror.directory)
    url = make_url(hub.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folders.append(Path(str(url.database)).parent)
    return list(dict.fromkeys(folders))


def refuse_private_sealing_keys(config: DeviceConfig, service: str) -> None:
    """Raise ConfigError, naming the files, if a private sealing key is under the hub's folders."""
    found = find_private_sealing_keys(hub_directories(config))
    if found:
        names = ", ".join(str(p) for p in found[:10])
        raise ConfigError(
            f"{service} refuses to start: a private sealing key is on the hub ({names}). "
            "The hub may hold only the municipalities' public keys: move the private key to "
            "the municipality's own machine (or destroy it and have the municipality make a "
            "new pair with `fieldkit packet keygen`), then start again; the hub backups' "
            "private key (backup-private.pem) belongs offline with the provisioning admin"
        )
    log.info("%s: no private sealing key under the hub's folders", service)
