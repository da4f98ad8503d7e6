"""The capture service: the camera, the form's QR code (R1) and the face photo (R3).

The service itself is ``fieldkit.capture.service:SERVICE``; this package imports nothing
at load time, so ``fieldkit.config`` can import ``fieldkit.capture.settings`` without a cycle.
"""
