"""OpenXR display: instance, system, GL session, one swapchain per eye and the frame loop.

Written to the OpenXR 1.0 spec's call order, which real runtimes enforce:
  instance -> system -> view configuration views -> xrGetOpenGLGraphicsRequirementsKHR (before the
  session) -> GL context + graphics binding -> session -> reference spaces -> swapchains;
  per frame: xrWaitFrame -> xrBeginFrame -> xrLocateViews -> per eye acquire / wait / draw / release
  -> xrEndFrame (always paired with the begin, with no layers when the runtime says not to render).
Session states: READY -> xrBeginSession; STOPPING -> xrEndSession; EXITING / LOSS_PENDING -> close,
with `end_reason` telling the viewer whether to quit, go back to the desktop window, or retry later.
Also handled: REFERENCE_SPACE_CHANGE_PENDING of LOCAL (the head is placed again in front of the user),
the environment blend mode (enumerated, opaque preferred), a "recentre" controller action, and linear
swapchains (the sRGB values we draw are decoded into them).

Two GL paths on Linux: `XR_KHR_opengl_enable` with GLX (a hidden GLFW window is the context) and
`XR_MNDX_egl_enable` (no X server: moderngl's standalone EGL context handed to the runtime).
The `xr` module (pyopenxr) is passed in so tests can drive this class with a recording double;
the real module is the default.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from app.xr import poses as xr_math

GL_SRGB8_ALPHA8 = 0x8C43
GL_RGBA8 = 0x8058


class XRUnavailable(RuntimeError):
    """No usable OpenXR runtime / headset; the message is one line for the user."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the OpenXR loader's multi-line C-level complaints; we print one line ourselves."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)


def _load_xr(xr_module=None):
    if xr_module is not None:
        return xr_module
    try:
        import xr  # pyopenxr
    except ImportError as exc:  # pragma: no cover - pyopenxr is a dependency
        raise XRUnavailable(f"OpenXR: pyopenxr is not installed ({exc})") from exc
    return xr


def probe_runtime(xr_module=None) -> list[str]:
    """Extension names the active OpenXR runtime offers; raises XRUnavailable (one line) if none."""
    xr = _load_xr(xr_module)
    try:
        with _quiet_stderr():
            names = xr.enumerate_instance_extension_properties()
    except xr.RuntimeUnavailableError as exc:
        raise XRUnavailable(
            "OpenXR: no runtime found (install and activate one, e.g. Monado or SteamVR, or set XR_RUNTIME_JSON)"
        ) from exc
    except xr.XrException as exc:
        raise XRUnavailable(f"OpenXR: the runtime did not answer ({exc.__class__.__name__})") from exc
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def choose_graphics(extensions: list[str], prefer: str = "auto", has_x_display: bool | None = None) -> str:
    """'glx' (XR_KHR_opengl_enable) or 'egl' (XR_MNDX_egl_enable) given what the runtime offers."""
    if has_x_display is None:
        has_x_display = bool(os.environ.get("DISPLAY"))
    glx_ok = "XR_KHR_opengl_enable" in extensions and has_x_display
    egl_ok = "XR_MNDX_egl_enable" in extensions
    if prefer == "glx" and glx_ok or prefer == "egl" and egl_ok:
        return prefer
    if prefer == "auto":
        if glx_ok:
            return "glx"
        if egl_ok:
            return "egl"
    raise XRUnavailable(
        f"OpenXR: the runtime offers no usable OpenGL binding (wanted {prefer}; it offers "
        f"{'XR_KHR_opengl_enable' if 'XR_KHR_opengl_enable' in extensions else 'no XR_KHR_opengl_enable'}"
        f"{'' if has_x_display else ' but there is no X display'}, "
        f"{'XR_MNDX_egl_enable' if egl_ok else 'no XR_MNDX_egl_enable'})"
    )


@dataclass
class EyeView:
    """What one eye needs this frame: OpenCV intrinsics for its swapchain image and its pose."""

    index: int
    K: np.ndarray  # (3, 3) pixels of a size[0] x size[1] image
    T_eye_from_space: np.ndarray  # (4, 4) OpenCV eye camera from the reference space
    size: tuple[int, int]  # (w, h)


def glx_binding(xr):
    """XrGraphicsBindingOpenGLXlibKHR for the GLX context current on this thread (GLFW window)."""
    from OpenGL import GLX

    binding = xr.GraphicsBindingOpenGLXlibKHR()
    binding.x_display = GLX.glXGetCurrentDisplay()
    binding.glx_context = GLX.glXGetCurrentContext()
    binding.glx_drawable = GLX.glXGetCurrentDrawable()
    try:  # the FB config and its visual complete the binding; some runtimes read them
        value = ctypes.c_int()
        GLX.glXQueryContext(binding.x_display, binding.glx_context, GLX.GLX_FBCONFIG_ID, ctypes.byref(value))
        count = ctypes.c_int()
        attrs = (ctypes.c_int * 3)(GLX.GLX_FBCONFIG_ID, value.value, 0)
        configs = GLX.glXChooseFBConfig(binding.x_display, 0, attrs, ctypes.byref(count))
        if count.value:
            binding.glx_fbconfig = configs[0]
            visual = GLX.glXGetVisualFromFBConfig(binding.x_display, configs[0])
            if visual:
                binding.visualid = visual.contents.visualid
    except Exception:  # noqa: BLE001 - optional fields; display/context/drawable are what matter
        pass
    return binding


def egl_binding(xr):
    """XrGraphicsBindingEGLMNDX for the EGL context current on this thread (moderngl standalone).

    moderngl cannot adopt an EGL context made elsewhere, so moderngl makes it and we hand its
    display, config and context to the runtime (pyopenxr's fields need pointer casts)."""
    from OpenGL import EGL

    display = EGL.eglGetCurrentDisplay()
    context = EGL.eglGetCurrentContext()
    if not display or not context:
        raise XRUnavailable("OpenXR: no current EGL context to hand to the runtime")
    config_id = ctypes.c_int()
    EGL.eglQueryContext(display, context, EGL.EGL_CONFIG_ID, ctypes.byref(config_id))
    config = EGL.EGLConfig()
    count = ctypes.c_int()
    attrs = (ctypes.c_int * 3)(EGL.EGL_CONFIG_ID, config_id.value, EGL.EGL_NONE)
    EGL.eglChooseConfig(display, attrs, ctypes.byref(config), 1, ctypes.byref(count))
    binding = xr.GraphicsBindingEGLMNDX()
    libegl = ctypes.CDLL("libEGL.so.1")
    binding.get_proc_address = xr.PFN_xrEglGetProcAddressMNDX(ctypes.cast(libegl.eglGetProcAddress, ctypes.c_void_p).value)
    binding.display = ctypes.cast(display, type(binding.display))
    binding.config = ctypes.cast(config, type(binding.config))
    binding.context = ctypes.cast(context, type(binding.context))
    return binding


# linear swapchain formats, best first, when there is no sRGB one (or sRGB is not wanted)
GL_RGBA16F = 0x881A
LINEAR_FORMATS = (GL_RGBA16F, GL_RGBA8)
# environment blend modes, best first for a head shown against black
BLEND_PREFERENCE = ("OPAQUE", "ALPHA_BLEND", "ADDITIVE")
# controller buttons that re-centre the head (suggested per interaction profile; the runtime keeps
# those its devices have)
RECENTRE_BINDINGS = {
    "/interaction_profiles/khr/simple_controller": ("/user/hand/left/input/select/click", "/user/hand/right/input/select/click"),
    "/interaction_profiles/oculus/touch_controller": ("/user/hand/left/input/x/click", "/user/hand/right/input/a/click"),
    "/interaction_profiles/valve/index_controller": ("/user/hand/left/input/a/click", "/user/hand/right/input/a/click"),
}


@dataclass
class FrameStats:
    """What the runtime asked for and what we gave it. The runtime's frames are slots of its
    display period: `asked` counts the slots between the first and the last predicted display time
    we were handed (a slot we were too late for is one we never saw, but it was asked for)."""

    submitted: int = 0  # xrEndFrame calls
    with_layer: int = 0  # of them, with a projection layer
    period_s: float = 0.0
    first_display_ns: int | None = None
    last_display_ns: int | None = None
    work_s: float = 0.0  # summed: xrWaitFrame returned -> xrEndFrame returned

    def record(self, display_ns: int, period_ns: int, layer: bool, work_s: float) -> None:
        if self.first_display_ns is None:
            self.first_display_ns = display_ns
        self.last_display_ns = display_ns
        self.period_s = period_ns / 1e9 if period_ns > 0 else self.period_s
        self.submitted += 1
        self.with_layer += int(layer)
        self.work_s += work_s

    @property
    def asked(self) -> int:
        if self.first_display_ns is None:
            return 0
        if self.period_s <= 0:
            return self.submitted
        return int(round((self.last_display_ns - self.first_display_ns) / 1e9 / self.period_s)) + 1

    @property
    def layer_ratio(self) -> float:
        """Frames submitted with a layer per frame the runtime asked for."""
        return self.with_layer / self.asked if self.asked else 0.0

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.work_s / self.submitted if self.submitted else 0.0


class XRSession:
    """One OpenXR session drawing a stereo view; `frame(draw)` once per display frame.

    When it ends, `end_reason` says why: "exit" (we asked: request_exit), "exiting" (the runtime
    ended it, e.g. from its dashboard), "loss" (session or instance lost: the runtime or headset
    went away; try again later)."""

    def __init__(self, xr_module=None, *, app_name: str = "imp-viewer", graphics: str = "auto",
                 make_window: Callable[[], object] | None = None, srgb: bool = True):
        self.xr = _load_xr(xr_module)
        self.app_name = app_name
        self.graphics_pref = graphics
        self.srgb_wanted = srgb
        self._make_window = make_window
        self.instance = None
        self.system_id = None
        self.session = None
        self.space = None
        self.view_space = None
        self.swapchains: list = []
        self.images: list[list] = []
        self.framebuffers: list[dict[int, object]] = []
        self.sizes: list[tuple[int, int]] = []
        self.ctx = None
        self.egl = None  # app.xr.gl_switch.EGLContext on the EGL path
        self.window = None
        self.graphics = None
        self.state = None
        self.running = False  # between xrBeginSession and xrEndSession
        self.should_quit = False
        self.exit_requested = False
        self.end_reason: str | None = None
        self.initial_view: np.ndarray | None = None  # T_space_from_view (OpenXR axes) where the head is placed
        self.blend_mode = None
        self.swapchain_format = None
        self.linear = False  # the swapchain is linear: eyes are drawn into `_srgb_targets`, then decoded
        self._srgb_targets: list = []
        self._blit = None
        self._recentre_at: int | None = None  # a LOCAL space change: re-place the head from this display time
        self.recentre_requested = False
        self._actions = None  # (action set, recentre action) when the runtime took them
        self.stats = FrameStats()
        self.last_wake: float | None = None  # perf_counter() when xrWaitFrame last returned
        self._last_image: list[int | None] = []  # per eye: the swapchain image index last released

    @property
    def frames_submitted(self) -> int:
        return self.stats.submitted

    # -- set-up -------------------------------------------------------------------------------
    def start(self):
        """Create everything up to the swapchains; returns the moderngl context to draw with."""
        xr = self.xr
        extensions = probe_runtime(xr)
        self.graphics = choose_graphics(extensions, self.graphics_pref)
        ext = xr.KHR_OPENGL_ENABLE_EXTENSION_NAME if self.graphics == "glx" else xr.MNDX_EGL_ENABLE_EXTENSION_NAME
        wanted = [ext] + ([xr.KHR_OPENGL_ENABLE_EXTENSION_NAME] if self.graphics == "egl" else [])
        wanted = [e for e in dict.fromkeys(wanted) if (e.decode() if isinstance(e, bytes) else e) in extensions]
        self.instance = xr.create_instance(xr.InstanceCreateInfo(
            application_info=xr.ApplicationInfo(self.app_name, 1, "im-portrait", 1),
            enabled_extension_names=wanted,
        ))
        try:
            self.system_id = xr.get_system(self.instance, xr.SystemGetInfo(xr.FormFactor.HEAD_MOUNTED_DISPLAY))
        except xr.FormFactorUnavailableError as exc:
            raise XRUnavailable("OpenXR: runtime found but no headset is connected") from exc
        views = xr.enumerate_view_configuration_views(self.instance, self.system_id, xr.ViewConfigurationType.PRIMARY_STEREO)
        self.sizes = [(int(v.recommended_image_rect_width), int(v.recommended_image_rect_height)) for v in views]
        self.blend_mode = self._choose_blend_mode()
        self._graphics_requirements()  # must precede xrCreateSession
        binding = self._make_context()
        self.session = xr.create_session(self.instance, xr.SessionCreateInfo(
            xr.SessionCreateFlags.NONE, self.system_id, next=ctypes.cast(ctypes.pointer(binding), ctypes.c_void_p)
        ))
        self._binding = binding  # keep alive while the session lives
        identity = xr.Posef(xr.Quaternionf(0, 0, 0, 1), xr.Vector3f(0, 0, 0))
        self.space = xr.create_reference_space(self.session, xr.ReferenceSpaceCreateInfo(xr.ReferenceSpaceType.LOCAL, identity))
        self.view_space = xr.create_reference_space(self.session, xr.ReferenceSpaceCreateInfo(xr.ReferenceSpaceType.VIEW, identity))
        self._make_actions()
        self._make_swapchains()
        return self.ctx

    def _choose_blend_mode(self):
        """The runtime's environment blend modes, best first: opaque (VR), else alpha blend, else
        additive (see-through AR headsets offer only those; OPAQUE there is an error)."""
        xr = self.xr
        offered = [xr.EnvironmentBlendMode(m) for m in
                   xr.enumerate_environment_blend_modes(self.instance, self.system_id, xr.ViewConfigurationType.PRIMARY_STEREO)]
        if not offered:
            raise XRUnavailable("OpenXR: the runtime offers no environment blend mode for a stereo view")
        for name in BLEND_PREFERENCE:
            mode = getattr(xr.EnvironmentBlendMode, name)
            if mode in offered:
                return mode
        return offered[0]

    def _graphics_requirements(self) -> None:
        # XR_MNDX_egl_enable rides on XR_KHR_opengl_enable, so both paths ask the OpenGL requirements
        xr = self.xr
        name = "xrGetOpenGLGraphicsRequirementsKHR"
        fn = ctypes.cast(xr.get_instance_proc_addr(self.instance, name), xr.PFN_xrGetOpenGLGraphicsRequirementsKHR)
        self.requirements = xr.GraphicsRequirementsOpenGLKHR()
        result = xr.Result(fn(self.instance, self.system_id, ctypes.byref(self.requirements)))
        if result.value < 0:
            raise XRUnavailable(f"OpenXR: {name} failed ({result.name})")

    def _make_context(self):
        import moderngl

        if self.graphics == "egl":
            from app.xr import gl_switch

            # a GLX context current on this thread (the mirror window's) would keep the new EGL
            # context from becoming current (libglvnd), and the runtime would find none
            gl_switch.release_glx()
            self.ctx = moderngl.create_standalone_context(backend="egl", require=330)
            self.egl = gl_switch.EGLContext()
            return egl_binding(self.xr)
        import glfw

        if self._make_window is not None:
            self.window = self._make_window()
        else:
            if not glfw.init():
                raise XRUnavailable("OpenXR: GLFW could not initialise for the GL context")
            glfw.window_hint(glfw.VISIBLE, False)
            glfw.window_hint(glfw.DOUBLEBUFFER, False)
            glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
            glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
            glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
            self.window = glfw.create_window(64, 64, self.app_name, None, None)
            if not self.window:
                raise XRUnavailable("OpenXR: could not create the hidden GL window")
        glfw.make_context_current(self.window)
        glfw.swap_interval(0)  # vsync on the desktop would fight the runtime's frame timing
        self.ctx = moderngl.create_context(require=330)
        return glx_binding(self.xr)

    def _make_actions(self) -> None:
        """A boolean "recentre" action on the controllers' main buttons. A runtime without
        controllers (or refusing a profile) leaves the viewer without it, never without a session."""
        xr = self.xr
        try:
            action_set = xr.create_action_set(self.instance, xr.ActionSetCreateInfo(
                action_set_name="viewer", localized_action_set_name="imp-viewer", priority=0))
            action = xr.create_action(action_set, xr.ActionCreateInfo(
                action_name="recentre", action_type=xr.ActionType.BOOLEAN_INPUT, localized_action_name="Re-centre the head"))
        except xr.XrException:
            return
        for profile, paths in RECENTRE_BINDINGS.items():
            try:
                bindings = [xr.ActionSuggestedBinding(action, xr.string_to_path(self.instance, p)) for p in paths]
                xr.suggest_interaction_profile_bindings(self.instance, xr.InteractionProfileSuggestedBinding(
                    interaction_profile=xr.string_to_path(self.instance, profile), suggested_bindings=bindings))
            except xr.XrException:
                continue  # a profile this runtime does not know
        try:
            xr.attach_session_action_sets(self.session, xr.SessionActionSetsAttachInfo(action_sets=[action_set]))
        except xr.XrException:
            xr.destroy_action_set(action_set)
            return
        self._actions = (action_set, action)

    def _make_swapchains(self) -> None:
        xr = self.xr
        formats = list(xr.enumerate_swapchain_formats(self.session))
        # sRGB swapchain with GL_FRAMEBUFFER_SRGB off: our 8-bit sRGB values are stored as they are and
        # the compositor reads them as sRGB, which is what they are. A linear swapchain would read them
        # as linear light (washed out): there the eyes are drawn into an sRGB-valued texture first and
        # decoded into the swapchain image.
        if self.srgb_wanted and GL_SRGB8_ALPHA8 in formats:
            fmt = GL_SRGB8_ALPHA8
        else:
            fmt = next((f for f in LINEAR_FORMATS if f in formats), None)
            if fmt is None:
                fmt = GL_SRGB8_ALPHA8 if GL_SRGB8_ALPHA8 in formats else formats[0]
        self.swapchain_format = fmt
        self.linear = fmt != GL_SRGB8_ALPHA8
        for w, h in self.sizes:
            info = xr.SwapchainCreateInfo(
                usage_flags=xr.SwapchainUsageFlags.COLOR_ATTACHMENT_BIT | xr.SwapchainUsageFlags.SAMPLED_BIT,
                format=fmt, sample_count=1, width=w, height=h, face_count=1, array_size=1, mip_count=1,
            )
            chain = xr.create_swapchain(self.session, info)
            self.swapchains.append(chain)
            self.images.append(list(xr.enumerate_swapchain_images(chain, xr.SwapchainImageOpenGLKHR)))
            self.framebuffers.append({})
        if self.linear:
            from app.gl.blit import TextureBlit

            self._blit = TextureBlit(self.ctx)
            self._srgb_targets = [self.ctx.framebuffer(color_attachments=[self.ctx.texture(size, 4)]) for size in self.sizes]
        self._layer_views = (xr.CompositionLayerProjectionView * len(self.sizes))()
        for i, (w, h) in enumerate(self.sizes):
            lv = self._layer_views[i]
            lv.type = xr.StructureType.COMPOSITION_LAYER_PROJECTION_VIEW
            lv.sub_image.swapchain = self.swapchains[i]
            lv.sub_image.image_rect.offset = xr.Offset2Di(0, 0)
            lv.sub_image.image_rect.extent = xr.Extent2Di(w, h)
            lv.sub_image.image_array_index = 0
        self._layer = xr.CompositionLayerProjection(space=self.space, views=self._layer_views)

    def _framebuffer(self, eye: int, image_index: int):
        fbos = self.framebuffers[eye]
        if image_index not in fbos:
            w, h = self.sizes[eye]
            tex = self.ctx.external_texture(int(self.images[eye][image_index].image), (w, h), 4, 0, "f1")
            fbos[image_index] = self.ctx.framebuffer(color_attachments=[tex])
        return fbos[image_index]

    def eye_texture(self, eye: int):
        """The moderngl texture of `eye`'s last released swapchain image (None before the first)."""
        index = self._last_image[eye] if eye < len(self._last_image) else None
        if index is None:
            return None
        return self._framebuffer(eye, index).color_attachments[0]

    def read_eye(self, eye: int):
        """(h, w, 3) uint8, top row first: the sRGB values last drawn for `eye` (None before the
        first), read in this session's GL context."""
        if self.linear:
            fbo = self._srgb_targets[eye]
        else:
            tex = self.eye_texture(eye)
            if tex is None:
                return None
            fbo = self.ctx.framebuffer(color_attachments=[tex])
        w, h = self.sizes[eye]
        data = fbo.read(components=3, alignment=1)
        if not self.linear:
            fbo.release()
        return np.frombuffer(data, np.uint8).reshape(h, w, 3)[::-1].copy()

    # -- events -------------------------------------------------------------------------------
    def poll_events(self) -> None:
        xr = self.xr
        while True:
            try:
                event = xr.poll_event(self.instance)
            except xr.EventUnavailable:
                return
            kind = xr.StructureType(event.type)
            if kind == xr.StructureType.EVENT_DATA_SESSION_STATE_CHANGED:
                changed = ctypes.cast(ctypes.byref(event), ctypes.POINTER(xr.EventDataSessionStateChanged)).contents
                self._on_state(xr.SessionState(changed.state))
            elif kind == xr.StructureType.EVENT_DATA_INSTANCE_LOSS_PENDING:
                self._lost()
            elif kind == xr.StructureType.EVENT_DATA_REFERENCE_SPACE_CHANGE_PENDING:
                change = ctypes.cast(ctypes.byref(event), ctypes.POINTER(xr.EventDataReferenceSpaceChangePending)).contents
                if xr.ReferenceSpaceType(change.reference_space_type) == xr.ReferenceSpaceType.LOCAL:
                    # the user re-centred (or the runtime moved LOCAL): from change_time on, our head
                    # placed in LOCAL would sit wherever the old origin's offset now points; place it
                    # again in front of the user
                    self._recentre_at = int(change.change_time)

    def _lost(self) -> None:
        self.running = False
        self.should_quit = True
        self.end_reason = "loss"

    def _on_state(self, state) -> None:
        xr = self.xr
        self.state = state
        if state == xr.SessionState.READY:
            xr.begin_session(self.session, xr.SessionBeginInfo(xr.ViewConfigurationType.PRIMARY_STEREO))
            self.running = True
        elif state == xr.SessionState.STOPPING:
            xr.end_session(self.session)
            self.running = False
        elif state == xr.SessionState.EXITING:
            self.running = False
            self.should_quit = True
            self.end_reason = "exit" if self.exit_requested else "exiting"
        elif state == xr.SessionState.LOSS_PENDING:
            self._lost()

    def request_exit(self) -> None:
        """Ask the runtime to end the session; the STOPPING / EXITING events follow."""
        self.exit_requested = True
        if self.running:
            self.xr.request_exit_session(self.session)
        else:
            self.should_quit = True
            self.end_reason = self.end_reason or "exit"

    def recentre(self) -> None:
        """Place the head again in front of where the user looks now (at the next rendered frame)."""
        self.initial_view = None

    # -- the frame loop -----------------------------------------------------------------------
    def frame(self, draw: Callable[[EyeView, object], None]) -> bool:
        """Poll events and, while the session runs, render one frame. False once it should quit."""
        self.poll_events()
        if self.should_quit:
            return False
        if not self.running:
            time.sleep(0.01)  # IDLE: the runtime has not asked for frames yet
            return True
        xr = self.xr
        frame_state = xr.wait_frame(self.session, xr.FrameWaitInfo())
        self.last_wake = woke = time.perf_counter()
        xr.begin_frame(self.session, xr.FrameBeginInfo())
        layers = []
        try:
            if frame_state.should_render:
                self._sync_actions()
                layers = self._render_views(frame_state.predicted_display_time, draw)
        finally:
            end = xr.FrameEndInfo(display_time=frame_state.predicted_display_time, environment_blend_mode=self.blend_mode)
            end.layers = layers
            xr.end_frame(self.session, end)
        self.stats.record(int(frame_state.predicted_display_time), int(frame_state.predicted_display_period),
                          bool(layers), time.perf_counter() - woke)
        return True

    def _sync_actions(self) -> None:
        if self._actions is None or self.state != self.xr.SessionState.FOCUSED:
            return  # actions are only active while the session has the input focus
        xr = self.xr
        action_set, action = self._actions
        try:
            xr.sync_actions(self.session, xr.ActionsSyncInfo(active_action_sets=[xr.ActiveActionSet(action_set, xr.NULL_PATH)]))
            state = xr.get_action_state_boolean(self.session, xr.ActionStateGetInfo(action=action))
        except xr.XrException:
            return
        if state.is_active and state.changed_since_last_sync and state.current_state:
            self.recentre_requested = True

    def _render_views(self, display_time, draw) -> list:
        xr = self.xr
        view_state, views = xr.locate_views(self.session, xr.ViewLocateInfo(
            xr.ViewConfigurationType.PRIMARY_STEREO, display_time, self.space))
        flags = int(view_state.view_state_flags)
        if not flags & int(xr.ViewStateFlags.ORIENTATION_VALID_BIT):
            return []  # tracking lost: submit no layer rather than a wrong picture
        if self._recentre_at is not None and int(display_time) >= self._recentre_at:
            self._recentre_at = None
            self.initial_view = None
        if self.recentre_requested:
            self.recentre_requested = False
            self.initial_view = None
        if self.initial_view is None:
            loc = xr.locate_space(self.view_space, self.space, display_time)
            p = loc.pose
            self.initial_view = xr_math.pose_to_matrix(
                (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w),
                (p.position.x, p.position.y, p.position.z))
        if len(self._last_image) != len(self.sizes):
            self._last_image = [None] * len(self.sizes)
        for eye, view in enumerate(views):
            w, h = self.sizes[eye]
            o, pos, fov = view.pose.orientation, view.pose.position, view.fov
            eye_view = EyeView(
                index=eye,
                K=xr_math.intrinsics_from_fov(fov.angle_left, fov.angle_right, fov.angle_up, fov.angle_down, w, h),
                T_eye_from_space=xr_math.cv_eye_from_space((o.x, o.y, o.z, o.w), (pos.x, pos.y, pos.z)),
                size=(w, h),
            )
            chain = self.swapchains[eye]
            index = xr.acquire_swapchain_image(chain, xr.SwapchainImageAcquireInfo())
            xr.wait_swapchain_image(chain, xr.SwapchainImageWaitInfo(timeout=xr.INFINITE_DURATION))
            try:
                fbo = self._framebuffer(eye, index)
                if self.linear:
                    target = self._srgb_targets[eye]
                    target.use()
                    draw(eye_view, target)
                    fbo.use()
                    from app.gl.blit import DECODE

                    self._blit.draw(target.color_attachments[0], (0, 0, w, h), DECODE)
                else:
                    fbo.use()
                    draw(eye_view, fbo)
            finally:
                xr.release_swapchain_image(chain, xr.SwapchainImageReleaseInfo())
            self._last_image[eye] = index
            self._layer_views[eye].pose = view.pose
            self._layer_views[eye].fov = view.fov
        return [ctypes.byref(self._layer)]

    def close(self) -> None:
        xr = self.xr
        for fbos in self.framebuffers:
            for fbo in fbos.values():
                fbo.release()
        self.framebuffers = []
        for fbo in self._srgb_targets:
            fbo.color_attachments[0].release()
            fbo.release()
        self._srgb_targets = []
        if self._blit is not None:
            self._blit.release()
            self._blit = None
        for chain in self.swapchains:
            xr.destroy_swapchain(chain)
        self.swapchains = []
        if self._actions is not None:
            xr.destroy_action_set(self._actions[0])
            self._actions = None
        for space in (self.view_space, self.space):
            if space is not None:
                xr.destroy_space(space)
        self.view_space = self.space = None
        if self.session is not None:
            xr.destroy_session(self.session)
            self.session = None
        if self.instance is not None:
            xr.destroy_instance(self.instance)
            self.instance = None
        if self.egl is not None:  # our own standalone context (the GLX path's belongs to the window)
            self.ctx.release()
            self.ctx = self.egl = None
        if self.window is not None:
            import glfw

            glfw.destroy_window(self.window)
            self.window = None
