"""An avatar directory's metadata file (``avatar.json``): its name, format version and fields.

Shared by the reader (``realtime.face.avatar``) and the writer (``realtime.face.prepare``); the
directory's other files are described in ``realtime.face.avatar``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from realtime.errors import MediaInputError

AVATAR_VERSION = 1
META_FILE = "avatar.json"


@dataclass
class AvatarMeta:
    version: int = AVATAR_VERSION
    source: str = ""
    kind: str = "image"  # "image" (one photo) or "video"
    fps: float = 25.0
    resolution: int = 256
    num_frames: int = 0
    frame_size: tuple[int, int] = (0, 0)  # (H, W)
    num_faces: int = 0
    frames_without_face: list[int] = field(default_factory=list)
    detector: str = "facemesh"
    mask: str = "mask"
    smooth: bool = True
    latents: dict[str, Any] | None = None  # {"vae": ..., "scaling_factor": ..., "shift_factor": ...}

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["frame_size"] = list(self.frame_size)
        return json.dumps(d, indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "AvatarMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise MediaInputError(f"{where} has unknown keys {sorted(unknown)}: re-create it with `syncvid prepare-avatar`")
        d = dict(d)
        if "frame_size" in d:
            d["frame_size"] = tuple(d["frame_size"])
        return cls(**d)
