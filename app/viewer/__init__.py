"""The desktop viewer: the GLFW window (`window`), the ImGui panel (`panel`), the view settings and
their camera math (`view_state`), and `viewer.Viewer`, which plays a clip or a live session in the
window (and is what the headset path drives too).

May import: `model`, `app.gl`, `app.live`."""
