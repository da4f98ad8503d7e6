"""The card service: is the My Number Card in the reader readable, and until when are its
electronic certificates valid? Read through pcscd without a PIN (R9, R20; docs/card.md).

Its spec is here and names its setup (``fieldkit.card.service:setup``) without importing it:
reading the spec loads no PC/SC library. ``fieldkit.card.messages`` is its bus contract.
"""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="card",
    summary="card reader: the My Number Card's certificate validity through pcscd, no PIN",
    setup="fieldkit.card.service:setup",
    # It tells the wipe the session's card canaries (certificate serial and subject).
    requests=("wipe",),
    holds_personal_data=True,
)
