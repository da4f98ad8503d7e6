"""The capture service: the camera, the form's QR code (R1) and the face photo (R3).

Its spec is here and names its setup (``fieldkit.capture.service:setup``) without importing
it: reading the spec loads no OpenCV. ``fieldkit.capture.messages`` is its bus contract.
"""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="capture",
    summary="camera: application-form QR code and face photo",
    setup="fieldkit.capture.service:setup",
    holds_personal_data=True,
)
