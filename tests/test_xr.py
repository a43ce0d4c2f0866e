"""OpenXR display: the camera math against hand-computed values, and the session / frame loop
against a recording double of the `xr` module.

The double stands in for the one boundary this machine cannot reach: an OpenXR runtime with a
headset (none is installed here; the real loader reports RuntimeUnavailable). Everything on our
side of that boundary is real: pyopenxr's structs, the EGL context moderngl creates, the graphics
binding built from it, the GL textures that play the swapchain images and the draws into them.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

xr = pytest.importorskip("xr")

from app.xr import poses as xr_math, session as xr_display  # noqa: E402


# ---------------------------------------------------------------------------------------------
# math
def test_quaternion_90_about_y():
    s = math.sqrt(0.5)
    R = xr_math.quaternion_to_matrix((0.0, s, 0.0, s))
    assert np.allclose(R, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)


def test_view_matrix_and_cv_eye():
    # eye 1.6 m up, turned 90 deg left (about +y): it looks down -x
    s = math.sqrt(0.5)
    V = xr_math.view_matrix((0.0, s, 0.0, s), (0.0, 1.6, 0.0))
    p_world = np.array([-2.0, 1.6, 0.0, 1.0])  # 2 m in front of the eye
    assert np.allclose(V @ p_world, [0, 0, -2.0, 1])
    T_cv = xr_math.cv_eye_from_space((0.0, s, 0.0, s), (0.0, 1.6, 0.0))
    assert np.allclose(T_cv @ p_world, [0, 0, 2.0, 1])  # OpenCV: in front is +z
    above = np.array([-2.0, 2.6, 0.0, 1.0])
    assert (T_cv @ above)[1] < 0  # up in the world is -y in OpenCV


def test_projection_from_symmetric_and_asymmetric_fov():
    P = xr_math.projection_from_fov(-math.pi / 4, math.pi / 4, math.pi / 4, -math.pi / 4, near=0.1, far=10.0)
    assert np.allclose(P[0, 0], 1.0) and np.allclose(P[1, 1], 1.0)
    assert np.allclose(P[0, 2], 0.0) and np.allclose(P[1, 2], 0.0)
    assert np.allclose(P[2, 2], -(10.1) / 9.9) and np.allclose(P[2, 3], -2 * 10 * 0.1 / 9.9)
    # asymmetric (a real HMD eye): tan l = -1, tan r = 0.5 -> centre shifted
    P = xr_math.projection_from_fov(math.atan(-1.0), math.atan(0.5), math.atan(0.8), math.atan(-0.6))
    assert np.allclose(P[0, 0], 2 / 1.5) and np.allclose(P[0, 2], -0.5 / 1.5)
    assert np.allclose(P[1, 1], 2 / 1.4) and np.allclose(P[1, 2], 0.2 / 1.4)


def test_intrinsics_from_fov_agree_with_projection():
    w, h = 200, 160
    fov = (math.atan(-1.0), math.atan(0.5), math.atan(0.8), math.atan(-0.6))
    K = xr_math.intrinsics_from_fov(*fov, w, h)
    assert np.allclose(K[0, 0], 200 / 1.5) and np.allclose(K[1, 1], 160 / 1.4)
    P = xr_math.projection_from_fov(*fov)
    for X in ([0.3, -0.2, 1.5], [-0.7, 0.4, 2.0]):  # OpenCV points in front of the eye
        u = K @ X
        u = u[:2] / u[2]
        clip = P @ np.array([X[0], -X[1], -X[2], 1.0])  # same point in OpenGL eye axes
        ndc = clip[:2] / clip[3]
        # NDC x in [-1, 1] spans pixel edges -0.5 .. w-0.5; NDC y up, pixels down
        assert np.allclose((ndc[0] + 1) / 2 * w - 0.5, u[0], atol=1e-9)
        assert np.allclose((1 - ndc[1]) / 2 * h - 0.5, u[1], atol=1e-9)


def test_per_eye_offsets():
    left = xr_math.cv_eye_from_space((0, 0, 0, 1), (-0.032, 1.7, 0.0))
    right = xr_math.cv_eye_from_space((0, 0, 0, 1), (0.032, 1.7, 0.0))
    point = np.array([0.0, 1.7, -1.0, 1.0])
    pl, pr = left @ point, right @ point
    assert np.allclose(pl[:3], [0.032, 0.0, 1.0]) and np.allclose(pr[:3], [-0.032, 0.0, 1.0])


def test_head_placed_upright_in_front_of_initial_view():
    T_cam_from_head = np.eye(4)
    T_cam_from_head[:3, 3] = [0.0, 0.0, 0.9]
    # user at 1.6 m, looking 30 deg to the left and with the head rolled 20 deg
    yaw, roll = math.radians(30), math.radians(20)
    qy = (0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2))
    Ry = xr_math.quaternion_to_matrix(qy)
    Rz = xr_math.quaternion_to_matrix((0.0, 0.0, math.sin(roll / 2), math.cos(roll / 2)))
    view = np.eye(4)
    view[:3, :3] = Ry @ Rz
    view[:3, 3] = [0.0, 1.6, 0.0]
    T_space_from_head = xr_math.place_head_in_front(view, T_cam_from_head, distance=1.2)
    joint = T_space_from_head[:3, 3]
    forward = Ry @ np.array([0.0, 0.0, -1.0])
    assert np.allclose(joint, view[:3, 3] + 1.2 * forward, atol=1e-9)
    # upright: the head's y axis (down in OpenCV) points down in the world despite the rolled view
    assert np.allclose(T_space_from_head[:3, 1], [0.0, -1.0, 0.0], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# the recording double of pyopenxr's runtime-facing functions
PERIOD_NS = 11_111_111  # a 90 Hz headset
class RecordingXR:
    """pyopenxr with the runtime replaced: structs, enums and exceptions are the real ones, every
    call that would reach a runtime is recorded and answered like a simulated headset would."""

    def __init__(self, textures_per_eye: list[list[int]], size=(64, 48), render_pattern=(1,)):
        self._real = xr
        self.log: list[str] = []
        self.events: list = []
        self.size = size
        self.textures = textures_per_eye
        self._next_image = [0, 0]
        self._swapchains: list = []
        self.render_pattern = render_pattern
        self.frame_no = 0
        self.end_infos: list[int] = []
        self.requirements_called = False
        self.enabled_extensions: list[str] = []
        self.blend_modes = [xr.EnvironmentBlendMode.OPAQUE]
        self.formats = [0x8058, 0x8C43]  # RGBA8, SRGB8_ALPHA8
        self.paths: list[str] = []
        self._pressed = False
        self.end_blend_modes: list[int] = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    # instance / system
    def enumerate_instance_extension_properties(self, layer_name=None):
        self.log.append("enumerate_extensions")
        return ["XR_KHR_opengl_enable", "XR_MNDX_egl_enable", "XR_EXT_debug_utils"]

    def create_instance(self, info):
        self.log.append("create_instance")
        self.enabled_extensions = [info.enabled_extension_names[i].decode() for i in range(info.enabled_extension_count)]
        return xr.Instance()

    def get_system(self, instance, info):
        self.log.append("get_system")
        return 7

    def enumerate_view_configuration_views(self, instance, system_id, view_type):
        self.log.append("enumerate_view_configuration_views")
        w, h = self.size
        return [xr.ViewConfigurationView(recommended_image_rect_width=w, recommended_image_rect_height=h) for _ in range(2)]

    def enumerate_environment_blend_modes(self, instance, system_id, view_type):
        self.log.append("enumerate_blend_modes")
        return list(self.blend_modes)

    # actions: the recentre button; `press_recentre()` makes the next sync report a press
    def create_action_set(self, instance, info):
        self.log.append("create_action_set")
        return xr.ActionSet()

    def create_action(self, action_set, info):
        self.log.append(f"create_action:{info.action_name.decode() if isinstance(info.action_name, bytes) else info.action_name}")
        return xr.Action()

    def string_to_path(self, instance, text):
        self.paths.append(text)
        return len(self.paths)

    def suggest_interaction_profile_bindings(self, instance, suggested):
        self.log.append("suggest_bindings")

    def attach_session_action_sets(self, session, info):
        self.log.append("attach_action_sets")

    def sync_actions(self, session, info):
        self.log.append("sync_actions")

    def get_action_state_boolean(self, session, info):
        pressed, self._pressed = self._pressed, False
        return xr.ActionStateBoolean(current_state=pressed, changed_since_last_sync=pressed, is_active=True)

    def press_recentre(self):
        self._pressed = True

    def destroy_action_set(self, action_set):
        self.log.append("destroy_action_set")

    def get_instance_proc_addr(self, instance, name):
        self.log.append(f"get_instance_proc_addr:{name}")

        def requirements(instance, system_id, out):
            self.log.append("get_graphics_requirements")
            self.requirements_called = True
            return 0

        self._keep = xr.PFN_xrGetOpenGLGraphicsRequirementsKHR(requirements)
        return self._keep

    # session
    def create_session(self, instance, info):
        self.log.append("create_session")
        assert info.next, "the graphics binding must be chained to XrSessionCreateInfo"
        binding = ctypes.cast(info.next, ctypes.POINTER(xr.GraphicsBindingEGLMNDX)).contents
        self.binding_display = ctypes.cast(binding.display, ctypes.c_void_p).value
        self.binding_context = ctypes.cast(binding.context, ctypes.c_void_p).value
        self._queue_state(xr.SessionState.IDLE)
        self._queue_state(xr.SessionState.READY)
        return xr.Session()

    def _queue_state(self, state):
        event = xr.EventDataSessionStateChanged(state=state)
        buf = xr.EventDataBuffer()
        ctypes.memmove(ctypes.byref(buf), ctypes.byref(event), ctypes.sizeof(event))
        self.events.append(buf)

    def poll_event(self, instance):
        if not self.events:
            raise xr.EventUnavailable()
        return self.events.pop(0)

    def begin_session(self, session, info):
        self.log.append("begin_session")
        self._queue_state(xr.SessionState.SYNCHRONIZED)
        self._queue_state(xr.SessionState.VISIBLE)
        self._queue_state(xr.SessionState.FOCUSED)

    def request_exit_session(self, session):
        self.log.append("request_exit_session")
        self._queue_state(xr.SessionState.STOPPING)

    def end_session(self, session):
        self.log.append("end_session")
        self._queue_state(xr.SessionState.IDLE)
        self._queue_state(xr.SessionState.EXITING)

    def create_reference_space(self, session, info):
        self.log.append(f"create_reference_space:{xr.ReferenceSpaceType(info.reference_space_type).name}")
        return xr.Space()

    def enumerate_swapchain_formats(self, session):
        return list(self.formats)

    def create_swapchain(self, session, info):
        self.log.append("create_swapchain")
        self.swapchain_format = info.format
        chain = xr.Swapchain()
        self._swapchains.append(chain)
        return chain

    def _chain_index(self, chain):
        for i, c in enumerate(self._swapchains):
            if c is chain:
                return i
        raise AssertionError("unknown swapchain")

    def enumerate_swapchain_images(self, chain, kind):
        eye = self._chain_index(chain)
        images = []
        for glo in self.textures[eye]:
            img = kind()
            img.image = glo
            images.append(img)
        return images

    # frames
    def wait_frame(self, session, info=None):
        self.log.append("wait_frame")
        should = self.render_pattern[self.frame_no % len(self.render_pattern)]
        self.frame_no += 1
        return xr.FrameState(predicted_display_time=PERIOD_NS * self.frame_no, predicted_display_period=PERIOD_NS, should_render=should)

    def begin_frame(self, session, info=None):
        self.log.append("begin_frame")

    def locate_views(self, session, info):
        self.log.append("locate_views")
        views = []
        for x in (-0.032, 0.032):
            views.append(xr.View(pose=xr.Posef(xr.Quaternionf(0, 0, 0, 1), xr.Vector3f(x, 0.0, 0.0)),
                                 fov=xr.Fovf(-0.8, 0.7, 0.75, -0.75)))
        state = xr.ViewState(view_state_flags=xr.ViewStateFlags.ORIENTATION_VALID_BIT | xr.ViewStateFlags.POSITION_VALID_BIT)
        return state, views

    def locate_space(self, space, base, time):
        self.log.append("locate_space")
        return xr.SpaceLocation(pose=xr.Posef(xr.Quaternionf(0, 0, 0, 1), xr.Vector3f(0, 0, 0)))

    def acquire_swapchain_image(self, chain, info=None):
        eye = self._chain_index(chain)
        self.log.append(f"acquire:{eye}")
        i = self._next_image[eye]
        self._next_image[eye] = (i + 1) % len(self.textures[eye])
        return i

    def wait_swapchain_image(self, chain, info):
        self.log.append(f"wait_image:{self._chain_index(chain)}")

    def release_swapchain_image(self, chain, info=None):
        self.log.append(f"release:{self._chain_index(chain)}")

    def end_frame(self, session, info):
        self.log.append("end_frame")
        self.end_infos.append(int(info.layer_count))
        self.end_blend_modes.append(int(info.environment_blend_mode))

    def destroy_swapchain(self, chain):
        self.log.append("destroy_swapchain")

    def destroy_space(self, space):
        self.log.append("destroy_space")

    def destroy_session(self, session):
        self.log.append("destroy_session")

    def destroy_instance(self, instance):
        self.log.append("destroy_instance")


def gl_session(render_pattern=(1,), size=(64, 48), graphics="egl", make_window=None) -> tuple[RecordingXR, xr_display.XRSession]:
    """(double, XRSession on the `graphics` path, not started) whose swapchain images are GL
    textures. Also used by tests/test_live_viewer.py (the viewer's XR loop, GLX path)."""
    # the session makes its own GL context; the "swapchain" textures must live in it, so the
    # double hands out texture names created lazily by a first context-sharing step below
    fake = RecordingXR([[], []], size=size, render_pattern=render_pattern)
    session = xr_display.XRSession(fake, graphics=graphics, make_window=make_window)
    original_make = session._make_context

    def make_context_then_textures():
        binding = original_make()
        w, h = fake.size
        fake._gl_textures = [[session.ctx.texture((w, h), 4) for _ in range(3)] for _ in range(2)]
        fake.textures[:] = [[t.glo for t in eye] for eye in fake._gl_textures]
        return binding

    session._make_context = make_context_then_textures
    return fake, session


def _run_session(render_pattern=(1,), frames=4):
    """Drive XRSession on the EGL path with GL textures as swapchain images; returns the double,
    the session and what the draw callback saw."""
    import moderngl

    fake, session = gl_session(render_pattern)
    seen = []

    def draw(view: xr_display.EyeView, fbo: moderngl.Framebuffer):
        seen.append(view)
        fbo.clear(0.25 + 0.5 * view.index, 0.5, 1.0 - 0.5 * view.index, 1.0)

    session.start()
    loops = 0
    while session.frames_submitted < frames and loops < 100:
        assert session.frame(draw)
        loops += 1
    session.request_exit()
    while session.frame(draw) and loops < 200:
        loops += 1
    return fake, session, seen


def test_runtime_unavailable_is_one_clear_line():
    # the real loader with no runtime installed (this machine): must not raise anything else
    try:
        xr_display.probe_runtime()
    except xr_display.XRUnavailable as exc:
        assert "\n" not in str(exc) and "OpenXR" in str(exc)
    else:  # pragma: no cover - a machine with a runtime
        pytest.skip("an OpenXR runtime is installed here")


def test_choose_graphics():
    assert xr_display.choose_graphics(["XR_KHR_opengl_enable"], has_x_display=True) == "glx"
    assert xr_display.choose_graphics(["XR_KHR_opengl_enable", "XR_MNDX_egl_enable"], has_x_display=False) == "egl"
    with pytest.raises(xr_display.XRUnavailable, match="no X display"):
        xr_display.choose_graphics(["XR_KHR_opengl_enable"], has_x_display=False)


def test_session_call_order_and_eye_images(gl_context):
    fake, session, seen = _run_session(frames=4)
    log = fake.log
    # set-up order demanded by the spec
    order = [log.index(n) for n in ("create_instance", "get_system", "enumerate_view_configuration_views",
                                     "get_graphics_requirements", "create_session", "create_swapchain")]
    assert order == sorted(order)
    assert "XR_MNDX_egl_enable" in fake.enabled_extensions and "XR_KHR_opengl_enable" in fake.enabled_extensions
    assert fake.binding_display and fake.binding_context, "EGL display/context handed to the runtime"
    assert fake.swapchain_format == 0x8C43  # sRGB swapchain preferred
    # no frame before the session began, none after it ended
    first_wait, begin = log.index("wait_frame"), log.index("begin_session")
    assert begin < first_wait
    assert max(i for i, c in enumerate(log) if c == "wait_frame") < log.index("end_session")
    # every wait is followed by begin, then end, before the next wait; per eye acquire/wait/release
    frame_calls = [c for c in log if c in ("wait_frame", "begin_frame", "end_frame")]
    assert frame_calls == ["wait_frame", "begin_frame", "end_frame"] * (len(frame_calls) // 3)
    for start in [i for i, c in enumerate(log) if c == "begin_frame"]:
        end = log.index("end_frame", start)
        body = [c for c in log[start:end] if c.split(":")[0] in ("acquire", "wait_image", "release")]
        assert body == ["acquire:0", "wait_image:0", "release:0", "acquire:1", "wait_image:1", "release:1"]
    assert all(n == 1 for n in fake.end_infos)
    # teardown
    session.close()
    tail = [c for c in log if c.startswith("destroy")]
    assert tail == ["destroy_swapchain", "destroy_swapchain", "destroy_action_set", "destroy_space", "destroy_space",
                    "destroy_session", "destroy_instance"]
    assert session.should_quit and not session.running and session.end_reason == "exit"
    # the blend mode was asked for and used; the recentre action attached before the session began
    assert log.index("enumerate_blend_modes") < log.index("create_session")
    assert set(fake.end_blend_modes) == {int(xr.EnvironmentBlendMode.OPAQUE)}
    assert log.index("attach_action_sets") < log.index("begin_session")
    assert "/interaction_profiles/khr/simple_controller" in fake.paths
    # what each eye was given
    left, right = seen[0], seen[1]
    assert (left.index, right.index) == (0, 1)
    assert np.allclose(left.K, xr_math.intrinsics_from_fov(-0.8, 0.7, 0.75, -0.75, 64, 48))
    assert np.allclose(left.T_eye_from_space[:3, 3], [0.032, 0.0, 0.0]) and np.allclose(right.T_eye_from_space[:3, 3], [-0.032, 0.0, 0.0])
    assert session.initial_view is not None
    # the draws really landed in the swapchain images the runtime handed out
    img_left = np.frombuffer(fake._gl_textures[0][0].read(), np.uint8).reshape(48, 64, 4)
    img_right = np.frombuffer(fake._gl_textures[1][0].read(), np.uint8).reshape(48, 64, 4)
    assert abs(int(img_left[0, 0, 0]) - 64) <= 1 and abs(int(img_right[0, 0, 0]) - 191) <= 1


def test_frames_the_runtime_says_not_to_render(gl_context):
    fake, session, seen = _run_session(render_pattern=(0, 1), frames=4)
    # should_render = 0: still wait/begin/end, but no layer and no image acquired
    assert 0 in fake.end_infos and 1 in fake.end_infos
    assert len(seen) == 2 * fake.end_infos.count(1)
    session.close()


GLX_PROBE = """
import glfw, xr
from app.xr import session as xr_display
assert glfw.init()
glfw.window_hint(glfw.VISIBLE, False)
glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
window = glfw.create_window(64, 64, "xr-binding", None, None)
assert window
glfw.make_context_current(window)
b = xr_display.glx_binding(xr)
assert b.x_display and b.glx_context and b.glx_drawable
print("GLX-BINDING-OK", b.visualid)
glfw.terminate()
"""


def test_glx_binding_from_hidden_glfw_window(xvfb_display):
    # Own process: PyOpenGL picks its platform (GLX or EGL) once per process, and the tests above
    # already used EGL; the viewer likewise uses exactly one of the two paths per run.
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GLX_PROBE], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DISPLAY": xvfb_display})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "GLX-BINDING-OK" in out.stdout


# ---------------------------------------------------------------------------------------------
# what a runtime cannot be made to do on demand: the recording double plays it
def _queue_space_change(fake, change_time: int, space=None):
    event = xr.EventDataReferenceSpaceChangePending(reference_space_type=space or xr.ReferenceSpaceType.LOCAL,
                                                    change_time=change_time)
    buf = xr.EventDataBuffer()
    ctypes.memmove(ctypes.byref(buf), ctypes.byref(event), ctypes.sizeof(event))
    fake.events.append(buf)


def _started_session(**kw):
    fake, session = gl_session(**kw)
    session.start()
    draw = lambda view, fbo: fbo.clear(0.5, 0.5, 0.5, 1.0)  # noqa: E731
    while session.frames_submitted < 2:
        assert session.frame(draw)
    return fake, session, draw


def test_session_loss_ends_the_loop_for_a_retry_without_asking_to_exit(gl_context):
    fake, session, draw = _started_session()
    fake._queue_state(xr.SessionState.LOSS_PENDING)
    assert not session.frame(draw)
    assert session.end_reason == "loss" and not session.running
    assert "request_exit_session" not in fake.log and "end_session" not in fake.log
    session.close()
    assert fake.log[-1] == "destroy_instance"


def test_runtime_ending_the_session_is_not_a_quit(gl_context):
    fake, session, draw = _started_session()
    fake._queue_state(xr.SessionState.STOPPING)  # e.g. the user quit from the runtime's own menu
    while session.frame(draw):
        pass
    assert session.end_reason == "exiting" and "end_session" in fake.log
    assert "request_exit_session" not in fake.log
    session.close()


def test_instance_loss_is_a_loss(gl_context):
    fake, session, draw = _started_session()
    buf = xr.EventDataBuffer()
    event = xr.EventDataInstanceLossPending(loss_time=0)
    ctypes.memmove(ctypes.byref(buf), ctypes.byref(event), ctypes.sizeof(event))
    fake.events.append(buf)
    assert not session.frame(draw) and session.end_reason == "loss"
    session.close()


def _turned(fake, yaw_deg: float):
    """Make the double's VIEW space report the user turned by yaw_deg about +y, at 1.6 m."""
    half = math.radians(yaw_deg) / 2

    def locate_space(space, base, time):
        fake.log.append("locate_space")
        return xr.SpaceLocation(pose=xr.Posef(xr.Quaternionf(0, math.sin(half), 0, math.cos(half)), xr.Vector3f(0, 1.6, 0)))

    fake.locate_space = locate_space


def test_local_space_change_places_the_head_again(gl_context):
    fake, session, draw = _started_session()
    assert np.allclose(session.initial_view, np.eye(4))
    _turned(fake, 30.0)
    session.frame(draw)
    assert np.allclose(session.initial_view, np.eye(4)), "placed once: a turned head must not move it"
    # a change of the STAGE space is not ours; one of LOCAL from a later display time is
    _queue_space_change(fake, 10**12, xr.ReferenceSpaceType.STAGE)
    session.frame(draw)
    assert np.allclose(session.initial_view, np.eye(4))
    change_at = PERIOD_NS * (fake.frame_no + 3)  # the double's display times are PERIOD_NS * frame number
    _queue_space_change(fake, change_at)
    session.frame(draw)
    assert np.allclose(session.initial_view, np.eye(4)), "not before the change time"
    for _ in range(3):
        session.frame(draw)
    assert np.allclose(session.initial_view[:3, 3], [0, 1.6, 0])
    assert np.allclose(session.initial_view[:3, :3], xr_math.quaternion_to_matrix((0, math.sin(math.radians(15)), 0, math.cos(math.radians(15)))))
    session.request_exit()
    while session.frame(draw):
        pass
    session.close()


def test_controller_button_recentres(gl_context):
    fake, session, draw = _started_session()
    _turned(fake, -40.0)
    session.frame(draw)
    assert np.allclose(session.initial_view, np.eye(4))
    assert "sync_actions" in fake.log  # synced while FOCUSED
    fake.press_recentre()
    session.frame(draw)  # the press is seen at this frame's sync and acted on before its views
    assert np.allclose(session.initial_view[:3, 3], [0, 1.6, 0])
    session.request_exit()
    while session.frame(draw):
        pass
    session.close()


def test_blend_mode_is_one_the_runtime_offers(gl_context):
    fake, session = gl_session()
    fake.blend_modes = [xr.EnvironmentBlendMode.ADDITIVE, xr.EnvironmentBlendMode.ALPHA_BLEND]  # see-through AR
    session.start()
    assert session.blend_mode == xr.EnvironmentBlendMode.ALPHA_BLEND
    while session.frames_submitted < 2:
        session.frame(lambda v, f: None)
    assert set(fake.end_blend_modes) == {int(xr.EnvironmentBlendMode.ALPHA_BLEND)}
    session.request_exit()
    while session.frame(lambda v, f: None):
        pass
    session.close()


def test_linear_swapchain_gets_linear_values(gl_context):
    """A runtime offering no sRGB swapchain: what we draw are sRGB values, the swapchain wants
    linear light, so the image holds the decoded values (a mid-grey 0.5 becomes 0.214, not 0.5:
    written as it was, it would show washed out); the mirror / screenshot still read sRGB values."""
    from app.gl.blit import srgb_to_linear

    fake, session = gl_session()
    fake.formats = [0x8058]  # RGBA8 only
    session.start()
    assert session.swapchain_format == 0x8058 and session.linear
    while session.frames_submitted < 2:
        session.frame(lambda view, fbo: fbo.clear(0.5, 0.25, 1.0, 1.0))
    index = fake._next_image[0] - 1
    stored = np.frombuffer(fake._gl_textures[0][index].read(), np.uint8).reshape(48, 64, 4)[..., :3].astype(float)
    written = np.round(np.array([0.5, 0.25, 1.0]) * 255) / 255
    assert np.abs(stored[10, 10] - srgb_to_linear(written) * 255).max() <= 1.0
    assert np.abs(session.read_eye(0)[10, 10].astype(float) - written * 255).max() <= 1.0
    session.request_exit()
    while session.frame(lambda v, f: None):
        pass
    session.close()


LOSS_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import moderngl
import xr
import app.cli.viewer as cli
from tests.test_xr import RecordingXR

class Scripted(RecordingXR):
    '''A runtime that ends the first session after 30 frames (lost, or ended by the runtime) and,
    after a loss, has no headset at the first look and one again at the next.'''

    def __init__(self, ending):
        super().__init__([[], []], size=(64, 48))
        self.ending, self.sessions, self.refuse, self.frames, self._textures = ending, 0, 0, 0, []

    def get_system(self, instance, info):
        if self.refuse:
            self.refuse -= 1
            raise xr.FormFactorUnavailableError()
        return super().get_system(instance, info)

    def create_session(self, instance, info):
        self.sessions += 1
        self._swapchains, self._next_image, self.textures = [], [0, 0], [[], []]
        return super().create_session(instance, info)

    def enumerate_swapchain_images(self, chain, kind):
        eye = self._chain_index(chain)
        ctx = moderngl.get_context()  # the session's (the mirror window's) GL context is current
        textures = [ctx.texture(self.size, 4) for _ in range(3)]
        self._textures += textures
        self.textures[eye] = [t.glo for t in textures]
        return super().enumerate_swapchain_images(chain, kind)

    def end_frame(self, session, info):
        super().end_frame(session, info)
        self.frames += 1
        if self.sessions == 1 and self.frames == 30:
            if self.ending == "loss":
                self._queue_state(xr.SessionState.LOSS_PENDING)
                self.refuse = 1
            else:
                self._queue_state(xr.SessionState.STOPPING)

cli.XR_MODULE = Scripted(sys.argv[2])
cli.XR_RETRY_SECONDS = 0.3
code = cli.main(["--lift", "--display", "xr", "--frames", "200", "--size", "900x520", "--no-vsync"])
print("SESSIONS", cli.XR_MODULE.sessions)
sys.exit(code)
"""


@pytest.mark.parametrize("ending", ["loss", "exiting"])
def test_viewer_goes_back_to_the_window_when_the_runtime_ends_or_loses_the_session(xvfb_display, ending):
    """imp-viewer with the double as its runtime (own process: the GLX path). A lost session
    (runtime or headset gone) sends the viewer back to the desktop window, which looks for the
    headset again every XR_RETRY_SECONDS and re-creates the session when it is back; a session
    the runtime ended (its own menu) also goes back to the window, and stays there."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", LOSS_SCRIPT, str(repo), ending], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISPLAY": xvfb_display}, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    summaries = [line for line in lines if "frames the runtime asked for" in line]
    if ending == "loss":
        assert any("the session was lost" in line and "back to the desktop window" in line for line in lines), lines
        assert any("the headset is back" in line for line in lines), lines
        assert len(summaries) == 2 and "SESSIONS 2" in lines
    else:
        assert any("the runtime ended the session; back to the desktop window" in line for line in lines), lines
        assert len(summaries) == 1 and "SESSIONS 1" in lines


RECENTRE_SCRIPT = r"""
import math, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import xr
from imgui_bundle import imgui
from app.viewer.viewer import Viewer
from app.xr.view import XRViewer
from tests.scenes import astronaut_clip
from tests.test_xr import gl_session, _turned

with Viewer(astronaut_clip(), "xr", size=(640, 400), vsync=False, max_fps=None) as viewer:
    fake, session = gl_session(graphics="glx", make_window=lambda: viewer.window.handle)
    xrv = XRViewer(viewer, session)
    while session.frames_submitted < 3:
        xrv.frame()
    before = session.initial_view.copy()
    _turned(fake, 25.0)
    xrv.frame(draw_mirror=True)
    unchanged = np.allclose(session.initial_view, before)
    io = viewer.window.imgui_io()
    io.add_key_event(imgui.Key.r, True)  # R in the mirror window
    xrv.frame(draw_mirror=True)
    io.add_key_event(imgui.Key.r, False)
    xrv.frame(draw_mirror=True)
    xrv.frame(draw_mirror=False)
    moved = np.allclose(session.initial_view[:3, 3], [0, 1.6, 0])
    xrv.request_exit()
    while xrv.frame():
        pass
    xrv.close()
print("RECENTRE", unchanged, moved)
"""


def test_r_in_the_mirror_window_recentres_the_head(xvfb_display):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", RECENTRE_SCRIPT, str(repo)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DISPLAY": xvfb_display}, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RECENTRE True True" in out.stdout, out.stdout[-500:]
