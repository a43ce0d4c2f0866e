"""Face tracking with MediaPipe's face mesh, playing the role of the paper's 3DMM.

`track_image` / `track_video` give a `Track`: per-frame landmarks, a metric head pose
`T_cam_from_head`, an identity template and per-frame expression offsets on MediaPipe's 478-point
mesh, plus one fixed square crop per video and its camera. `retarget` drives one identity with
another's expressions and poses; `crop` also cuts images with the crop.

May import: `model.geometry`, `model.formats` (video decoding)."""
from model.tracking.retarget import retarget
from model.tracking.track import Track, TrackingError, track, track_image, track_video

__all__ = ["Track", "TrackingError", "retarget", "track", "track_image", "track_video"]
