#version 330
// One instance = one rectangle of MPI pixels on one plane (a run of tiles shrunk to their
// non-empty pixels, or the whole background). Its corners, in MPI pixel coordinates, are mapped by
// the plane's homography H_i (target pixel <- MPI pixel) with the homogeneous w of H_i p in
// gl_Position.w, so the quad lands exactly where the plane's pixels go.
//
// Plane quads are drawn a sliver larger than their pixels on every side, and each fragment
// keeps itself only if its exact MPI position (computed in the fragment shader from the pixel
// centre) lies in the tiles the rectangle owns: neighbouring rectangles then never both draw a
// pixel, nor both miss it, whatever their corners (no cracks at T-junctions).

uniform mat3 homographies[MAX_PLANES];
uniform mat3 inverse_homographies[MAX_PLANES];  // MPI pixel <- target pixel
uniform vec2 mpi_size;    // (W, H) of the MPI images
uniform vec2 view_size;   // (w, h) of the viewport the target K refers to
uniform vec2 tex_scale;   // 1 / size of the sampled texture, which has a zero frame around the image
uniform vec2 tex_offset;  // texels of that frame before MPI pixel 0 (x, y)
uniform float tile;       // tile side in MPI pixels (ownership of plane rectangles)
const float OVERLAP = 1.0 / 32.0;  // MPI pixels; well above the rasteriser's 1/256 px vertex snapping

in ivec4 in_rect;         // MPI pixels [x0, x1) x [y0, y1)
in int in_plane;

out vec2 v_uv;
flat out int v_plane;
flat out vec4 v_owned;    // MPI positions [x0, x1) x [y0, y1) this rectangle draws
flat out mat3 v_inverse;  // the plane's inverse homography (a flat varying: no per-fragment array lookup)

void main() {
    vec2 corner = vec2(gl_VertexID & 1, gl_VertexID >> 1);
    // pixel k covers [k - 0.5, k + 0.5]; a sliver more on each side, so that rounding of the corners
    // cannot open a gap (the fragment shader decides ownership); at the image border, half a pixel
    // more: there bilinear taps still reach the image next to the zero frame
    vec2 lo = vec2(in_rect.xy);
    vec2 hi = vec2(in_rect.zw);
    lo = mix(lo - 0.5 - OVERLAP, vec2(-1.0), equal(lo, vec2(0.0)));
    hi = mix(hi - 0.5 + OVERLAP, mpi_size, equal(hi, mpi_size));
    vec2 src = mix(lo, hi, corner);
    vec3 p = homographies[in_plane] * vec3(src, 1.0);
    // OpenCV pixel u (centre at integer) -> window x = u + 0.5; row 0 at the top of the viewport
    gl_Position = vec4(2.0 * (p.x + 0.5 * p.z) / view_size.x - p.z,
                       p.z - 2.0 * (p.y + 0.5 * p.z) / view_size.y,
                       0.0, p.z);
    v_uv = (src + 0.5 + tex_offset) * tex_scale;
    v_plane = in_plane;
    v_inverse = inverse_homographies[in_plane];
    vec2 own_lo = floor(vec2(in_rect.xy) / tile) * tile;
    vec2 own_hi = min(ceil(vec2(in_rect.zw) / tile) * tile, mpi_size);
    // the tiles' pixel areas; unbounded at the image border (beyond it samples fade to zero)
    v_owned = vec4(mix(own_lo - 0.5, vec2(-1e9), equal(own_lo, vec2(0.0))),
                   mix(own_hi - 0.5, vec2(1e9), equal(own_hi, mpi_size)));
}
