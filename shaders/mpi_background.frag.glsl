#version 330
// The background plane: RGB texture with a zero border, so the sampled rgb is already weighted by
// the image's coverage (the reference's zero padding) and the sampled alpha is that coverage.
uniform sampler2D background;

in vec2 v_uv;
out vec4 frag;

void main() {
    frag = texture(background, v_uv);
}
