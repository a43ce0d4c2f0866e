#version 330
// Anaglyph: out = M_left * left + M_right * right (matrices from app/stereo.py, the one definition).
uniform sampler2D left_eye;
uniform sampler2D right_eye;
uniform mat3 m_left;
uniform mat3 m_right;

in vec2 v_uv;
out vec4 colour;

void main() {
    vec3 l = texture(left_eye, v_uv).rgb;
    vec3 r = texture(right_eye, v_uv).rgb;
    colour = vec4(clamp(m_left * l + m_right * r, 0.0, 1.0), 1.0);
}
