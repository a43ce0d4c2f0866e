#version 330
// A plane's fragment, premultiplied for "over" blending (ONE, ONE_MINUS_SRC_ALPHA). The MPI
// position is computed from the pixel centre with the inverse homography (the same arithmetic for
// every rectangle, so ownership at tile edges is decided identically by both neighbours). Colour
// and alpha are sampled together (bilinear, zero outside the image) and multiplied after sampling,
// as the torch reference does.
uniform sampler2DArray planes;  // layer i = (c_i, alpha_i) inside a zero frame
uniform vec4 viewport;          // (x, y, w, h) in window pixels
uniform vec2 tex_scale;
uniform vec2 tex_offset;

flat in int v_plane;
flat in vec4 v_owned;
flat in mat3 v_inverse;         // MPI pixel <- target pixel
out vec4 frag;

void main() {
    vec2 target = vec2(gl_FragCoord.x - viewport.x - 0.5, viewport.y + viewport.w - gl_FragCoord.y - 0.5);
    vec3 q = v_inverse * vec3(target, 1.0);
    if (q.z <= 0.0) discard;  // behind the MPI camera: transparent, as in the reference
    vec2 src = q.xy / q.z;
    if (any(lessThan(src, v_owned.xy)) || any(greaterThanEqual(src, v_owned.zw))) discard;
    vec4 s = texture(planes, vec3((src + 0.5 + tex_offset) * tex_scale, float(v_plane)));
    frag = vec4(s.rgb * s.a, s.a);
}
