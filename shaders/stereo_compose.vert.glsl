#version 330
// A triangle that covers the viewport; uv runs 0..1 over it (GL orientation, row 0 at the bottom).
out vec2 v_uv;

void main() {
    vec2 p = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    v_uv = p;
    gl_Position = vec4(2.0 * p - 1.0, 0.0, 1.0);
}
