"""The viewer's ImGui side panel: view (distance, focal length, dolly zoom, orbit), stereo (mode,
baseline, convergence) and playback (play / pause, frame, FPS).

`draw_panel` is immediate-mode: called once per frame between `imgui.new_frame()` and
`imgui.render()`, it shows the current state and returns the state after this frame's clicks,
going through the same setters of `app.viewer.view_state` as `--set` and the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from app.viewer import view_state as vs

PANEL_WIDTH = 330  # ImGui units (window coordinates); the 3D view gets the rest of the window
STEREO_LABELS = {"mono": "mono", "sbs": "side by side", "anaglyph": "anaglyph (red / cyan)"}


@dataclass(frozen=True)
class PanelInfo:
    """What the panel shows but does not change."""

    source: str  # e.g. "built-in astronaut scene" or the clip's path
    num_frames: int
    clip_fps: float
    num_planes: int
    mpi_size: tuple[int, int]  # (H, W)
    draw_fps: float  # measured window frames per second
    eye_size: tuple[int, int]  # (w, h) px of one eye's view
    warnings: tuple[str, ...] = ()  # why the view is outside the MPI's valid range (view_state.view_warnings)
    live: object | None = None  # app.live.session.LiveState of a live session
    params: object | None = None  # model.data.driving.DrivingParams of slider driving (None: no sliders)
    animate: bool = False  # the built-in animation runs under the sliders
    saving: bool = False  # live frames are being saved


# slider name -> (label, min, max); DrivingParams fields (expression 0..1, angles in degrees)
DRIVING_SLIDERS = {
    "mouth_open": ("mouth open", 0.0, 1.0), "blink": ("blink", 0.0, 1.0), "smile": ("smile", -1.0, 1.0),
    "yaw": ("yaw (deg)", -30.0, 30.0), "pitch": ("pitch (deg)", -20.0, 20.0), "roll": ("roll (deg)", -20.0, 20.0),
}


@dataclass(frozen=True)
class PanelResult:
    view: vs.ViewState
    playback: vs.Playback
    reset_view: bool = False
    params: object | None = None  # DrivingParams after this frame's slider moves
    animate: bool = False
    toggle_save: bool = False


def draw_panel(view: vs.ViewState, playback: vs.Playback, info: PanelInfo, height: float) -> PanelResult:
    """Draw the panel docked at the right edge of a window `height` units tall."""
    from imgui_bundle import imgui

    io = imgui.get_io()
    imgui.set_next_window_pos(imgui.ImVec2(io.display_size.x - PANEL_WIDTH, 0.0))
    imgui.set_next_window_size(imgui.ImVec2(PANEL_WIDTH, height))
    flags = imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
    imgui.begin("im-portrait viewer", None, flags)
    reset = False
    imgui.text_wrapped(info.source)
    imgui.text(f"{info.num_frames} frame(s), {info.num_planes} planes, {info.mpi_size[1]}x{info.mpi_size[0]} px")

    imgui.separator_text("View")
    imgui.push_item_width(170)
    changed, value = imgui.slider_float("distance (m)", view.distance, *vs.DISTANCE_RANGE, "%.2f")
    if changed:
        view = vs.set_distance(view, value)
    changed, value = imgui.slider_float("focal (x height)", view.focal, *vs.FOCAL_RANGE, "%.2f")
    if changed:
        view = vs.set_focal(view, value)
    fov = math.degrees(2.0 * math.atan(0.5 / view.focal))
    imgui.text(f"vertical FoV {fov:.1f} deg, f = {view.focal * info.eye_size[1]:.0f} px")
    changed, value = imgui.checkbox("dolly zoom (keep the head's size)", view.dolly_zoom)
    if changed:
        view = replace(view, dolly_zoom=value)
    imgui.text(f"orbit: yaw {math.degrees(view.yaw):+.1f}, pitch {math.degrees(view.pitch):+.1f} deg")
    if imgui.button("reset view"):
        reset = True
    for warning in info.warnings:
        imgui.text_colored(imgui.ImVec4(1.0, 0.7, 0.2, 1.0), "outside the valid range:")
        imgui.text_wrapped(warning)

    imgui.separator_text("Stereo")
    for mode in vs.STEREO_MODES:
        if imgui.radio_button(STEREO_LABELS[mode], view.stereo == mode):
            view = vs.set_stereo(view, mode)
    changed, value = imgui.slider_float("baseline (cm)", view.baseline * 100.0, vs.BASELINE_RANGE[0] * 100.0, vs.BASELINE_RANGE[1] * 100.0, "%.1f")
    if changed:
        view = vs.set_baseline(view, value / 100.0)
    changed, value = imgui.checkbox("head at screen depth", view.converge)
    if changed:
        view = replace(view, converge=value)

    imgui.separator_text("Playback")
    if imgui.button("pause" if playback.playing else "play"):
        playback = replace(playback, playing=not playback.playing)
    imgui.same_line()
    imgui.text(f"clip {info.clip_fps:.1f} fps")
    if info.num_frames > 1 and info.live is None:  # a live stream plays forward only
        changed, value = imgui.slider_int("frame", playback.frame, 0, info.num_frames - 1)
        if changed:
            playback = vs.seek(replace(playback, playing=False), value, info.num_frames, info.clip_fps)
    imgui.text(f"drawing {info.draw_fps:.0f} fps, {info.eye_size[0]}x{info.eye_size[1]} px per eye")
    params, animate, toggle_save = info.params, info.animate, False
    if info.live is not None:
        imgui.separator_text("Live generation")
        imgui.progress_bar(info.live.fill / max(info.live.capacity, 1), imgui.ImVec2(-1.0, 0.0), f"buffer {info.live.fill}/{info.live.capacity}")
        for line in info.live.lines[1:]:
            error = line.startswith("error")
            if error:
                imgui.push_style_color(imgui.Col_.text, imgui.ImVec4(1.0, 0.4, 0.3, 1.0))
            imgui.text_wrapped(line)
            if error:
                imgui.pop_style_color()
        imgui.text(f"shown {info.live.frames_shown}, generated {info.live.frames_generated}")
        if imgui.button("stop saving" if info.saving else "save generated frames"):
            toggle_save = True
    if params is not None:
        imgui.separator_text("Driving (portrait's own mesh)")
        changed, animate = imgui.checkbox("built-in animation", animate)
        for name, (label, lo, hi) in DRIVING_SLIDERS.items():
            changed, value = imgui.slider_float(label, getattr(params, name), lo, hi, "%.2f")
            if changed:
                params = replace(params, **{name: value})
    imgui.pop_item_width()

    imgui.separator()
    imgui.text_disabled("drag: orbit   wheel: distance   H: hide panel\nspace: play / pause   Esc: quit")
    imgui.end()
    return PanelResult(view=view, playback=playback, reset_view=reset, params=params, animate=animate, toggle_save=toggle_save)
