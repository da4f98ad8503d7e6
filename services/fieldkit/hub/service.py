"""The hub's services: ``hub-broker`` (mosquitto with mutual TLS) and ``hub-ingest``."""

from __future__ import annotations

import logging
import threading
import time

from fieldkit.hub.broker import HubBroker
from fieldkit.hub.crl import crl_status
from fieldkit.hub.custody import refuse_private_sealing_keys
from fieldkit.hub.ingest import Ingest
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)
# While the CRL is in alarm (renewing keeps failing), the broker logs it this often.
CRL_ALARM_LOG_SECONDS = 3600


def setup_broker(ctx: ServiceContext) -> None:
    refuse_private_sealing_keys(ctx.config, "hub-broker")
    hub = ctx.config.hub
    broker = HubBroker.from_settings(hub)
    # A hub that was off while its CRL lapsed would refuse every device: renew it first.
    broker.pki.renew_crl_if_due()
    broker.start()
    crl = broker.pki.crl

    def crl_stamp() -> float:
        try:
            return crl.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    loaded = crl_stamp()
    next_check = time.monotonic() + hub.crl_check_seconds
    next_alarm = 0.0

    def check_crl() -> None:
        nonlocal next_alarm
        try:
            broker.pki.renew_crl_if_due()  # the stamp changes: the broker restarts below
        except Exception:
            log.exception("renewing the CRL failed")
        status = crl_status(broker.pki)
        if status.alarm and time.monotonic() >= next_alarm:
            log.error("%s", status.message)
            next_alarm = time.monotonic() + CRL_ALARM_LOG_SECONDS

    def watch() -> None:
        nonlocal loaded, next_check
        while not ctx.stopping.wait(min(1.0, hub.crl_check_seconds)):
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + hub.crl_check_seconds
                check_crl()
            process = broker.process
            # mosquitto reads the CRL only at start: a revocation restarts it (devices reconnect
            # and re-send; nothing is lost), so a revoked certificate is out within seconds.
            if crl_stamp() != loaded:
                loaded = crl_stamp()
                log.warning("the CRL changed; restarting the hub broker to load it")
                broker.stop()
            elif process is not None and process.poll() is None:
                continue
            else:
                # mosquitto dying must not leave the hub deaf: start it again on the same config.
                log.error("hub broker is not running; starting it again")
            try:
                broker.start()
            except Exception:
                log.exception("hub broker restart failed")

    threading.Thread(target=watch, name="hub-broker-watch", daemon=True).start()
    ctx.on_stop(broker.stop)


def setup_ingest(ctx: ServiceContext) -> None:
    refuse_private_sealing_keys(ctx.config, "hub-ingest")
    ingest = Ingest(ctx.config.hub)
    ingest.start()
    ctx.on_stop(ingest.stop)
