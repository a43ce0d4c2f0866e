#version 330
// One instance = one rectangle of MPI pixels on one plane (a tile's non-empty bounding box, or the
// whole background). Its corners, in MPI pixel coordinates, are mapped by the plane's homography
// H_i (target pixel <- MPI pixel); putting the homogeneous w of H_i p into gl_Position.w makes GL's
// perspective-correct interpolation of the MPI coordinates exact, so every fragment samples where
// the torch reference's inverse warp does.

uniform mat3 homographies[MAX_PLANES];
uniform vec2 mpi_size;    // (W, H) of the MPI images
uniform vec2 view_size;   // (w, h) of the viewport the target K refers to
uniform vec2 tex_scale;   // 1 / size of the sampled texture, which has a zero frame around the image
uniform vec2 tex_offset;  // texels of that frame before MPI pixel 0 (x, y)

in ivec4 in_rect;         // MPI pixels [x0, x1) x [y0, y1)
in int in_plane;

out vec2 v_uv;
flat out int v_layer;

void main() {
    vec2 corner = vec2(gl_VertexID & 1, gl_VertexID >> 1);
    vec2 lo = vec2(in_rect.xy);
    vec2 hi = vec2(in_rect.zw);
    // a rectangle covers its pixels' areas [k - 0.5, k + 0.5]; at the image border reach one more
    // half pixel, where bilinear taps still see the image next to the zero border
    lo = mix(lo - 0.5, vec2(-1.0), lessThanEqual(lo, vec2(0.0)));
    hi = mix(hi - 0.5, mpi_size, greaterThanEqual(hi, mpi_size));
    vec2 src = mix(lo, hi, corner);
    vec3 p = homographies[in_plane] * vec3(src, 1.0);
    // OpenCV pixel u (centre at integer) -> window x = u + 0.5; row 0 at the top of the viewport
    gl_Position = vec4(2.0 * (p.x + 0.5 * p.z) / view_size.x - p.z,
                       p.z - 2.0 * (p.y + 0.5 * p.z) / view_size.y,
                       0.0, p.z);
    v_uv = (src + 0.5 + tex_offset) * tex_scale;
    v_layer = in_plane;
}
