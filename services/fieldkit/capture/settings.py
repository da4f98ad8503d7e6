"""The ``[capture]`` section of the device config (pydantic only, to avoid import cycles)."""

from __future__ import annotations

from pydantic import Field, field_validator

from fieldkit.models import Section


class CaptureSection(Section):
    # "demo" (generated in code), "v4l2:/dev/video0" (or "v4l2:0"), "video:/path/file.mp4",
    # or "images:/path/folder".
    source: str = Field(default="demo", description="Camera source.")
    width: int = Field(default=1280, ge=320, le=4096)
    height: int = Field(default=720, ge=240, le=4096)
    fps: float = Field(default=15.0, gt=0, le=60)
    retry_seconds: float = Field(default=2.0, gt=0, le=300)
    # Frames in a row on which every photo check must hold before the photo is taken.
    auto_capture_frames: int = Field(default=5, ge=1, le=100)
    guide_fraction: float = Field(default=0.9, gt=0.3, le=1.0)
    preview_host: str = "127.0.0.1"
    # 0 picks a free port; the kiosk learns the URL from the mode reply.
    preview_port: int = Field(default=0, ge=0, le=65535)
    preview_fps: float = Field(default=10.0, gt=0, le=30)

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        kind = source.split(":", 1)[0]
        if source != "demo" and (kind not in {"v4l2", "video", "images"} or ":" not in source):
            raise ValueError("source must be demo, v4l2:<device>, video:<file> or images:<folder>")
        return source

    @field_validator("preview_host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        # The preview shows the applicant's face: it never leaves the device.
        if host not in {"127.0.0.1", "::1", "localhost"} and not host.startswith("127."):
            raise ValueError("the preview must be served on loopback only")
        return host
