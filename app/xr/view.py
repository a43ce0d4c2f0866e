"""The viewer in an OpenXR headset: each eye of app.xr.session.XRSession gets the MPI drawn with
its own pose and FoV, the head placed in front of the user's initial head pose; the desktop Viewer
window is the mirror whose distance slider also moves the placed head (its focal length acts on
the mirror only: in the headset the FoV is the display's).

The XR renderer is a second MPIRenderer in the session's context (the EGL path has a context of
its own; on the GLX path it wraps the mirror window's GL context), given the frame the mirror shows.
"""
from __future__ import annotations

import numpy as np

from app.xr import poses as xr_math
from app.xr.session import EyeView, XRSession


class XRViewer:
    """Drives `session` (started here) from `viewer` (app.viewer.viewer.Viewer, the desktop mirror)."""

    def __init__(self, viewer, session: XRSession):
        from app.gl.renderer import MPIRenderer

        self.viewer = viewer
        self.session = session
        self.ctx = session.start()
        self.renderer = MPIRenderer(self.ctx)
        self._uploaded = None
        self.eyes_drawn = 0

    def T_space_from_head(self) -> np.ndarray:
        """(4, 4): the shown frame's head in the XR reference space. The reference frame's head is
        placed `viewer.view.distance` in front of the initial head pose; later frames move from it
        as the head moves in the MPI camera."""
        v = self.viewer
        T_ref = np.asarray(v.reference_pose, np.float64)
        placed = xr_math.place_head_in_front(self.session.initial_view, T_ref, v.view.distance)
        return placed @ np.linalg.inv(T_ref) @ np.asarray(v.frame.T_cam_from_head, np.float64)

    def _draw(self, eye: EyeView, fbo) -> None:
        frame = self.viewer.frame
        fbo.clear(0.0, 0.0, 0.0, 1.0)
        if frame is None:
            return  # nothing generated yet: black, the mirror says "generating..."
        if self._uploaded is not frame:
            self.renderer.upload(frame)
            self._uploaded = frame
        T_eye_from_head = eye.T_eye_from_space @ self.T_space_from_head()
        self.renderer.draw(eye.K, T_eye_from_head, (0, 0, eye.size[0], eye.size[1]))
        self.eyes_drawn += 1

    def frame(self) -> bool:
        """One mirror frame and one headset frame; False once either wants to quit."""
        if self.viewer.should_close:
            self.session.request_exit()
        self.viewer.step()
        with self.ctx:  # the EGL path's context is not the mirror window's: make it current for the eyes
            return self.session.frame(self._draw)

    def close(self) -> None:
        self.renderer.release()
        if self.session.window is self.viewer.window.handle:
            self.session.window = None  # the mirror's window: the Viewer closes it, not the session
        self.session.close()


def run_xr(viewer, xr_module=None, graphics: str = "auto", max_frames: int | None = None) -> int:
    """Run the headset loop until the session ends (or `max_frames` headset frames). Raises
    app.xr.session.XRUnavailable before opening anything when there is no runtime / headset."""
    session = XRSession(xr_module, graphics=graphics, make_window=lambda: viewer.window.handle)
    try:
        xrv = XRViewer(viewer, session)
    except BaseException:  # e.g. a runtime without a headset: undo what was created, keep the window
        if session.window is viewer.window.handle:
            session.window = None
        session.close()
        raise
    try:
        while xrv.frame():
            if max_frames and session.frames_submitted >= max_frames:
                session.request_exit()
    finally:
        xrv.close()
    return 0
