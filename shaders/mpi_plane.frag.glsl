#version 330
// A plane's fragment, premultiplied for "over" blending (ONE, ONE_MINUS_SRC_ALPHA). Colour and alpha
// are sampled together (bilinear, zero outside the image) and multiplied after sampling, as the
// torch reference does.
uniform sampler2DArray planes;   // layer i = (c_i, alpha_i) inside a zero frame

in vec2 v_uv;
flat in int v_layer;
out vec4 frag;

void main() {
    vec4 s = texture(planes, vec3(v_uv, float(v_layer)));
    frag = vec4(s.rgb * s.a, s.a);
}
