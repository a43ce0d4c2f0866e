#version 430
// Per-plane colours of the two-image model, once per MPI frame (DESIGN.md):
//   c_i = T_i * frontal + (1 - T_i) * residual,  T_i = prod_{j>i} (1 - alpha_j),
// walking each pixel's planes front (D-1) to back (0) and carrying T.
// Storage buffers rather than images: one invocation handles 4 neighbouring pixels with one 32-bit
// load per plane and one 128-bit store, which llvmpipe runs several times faster than per-texel
// image fetches and stores. The output has the layout of the RGBA8 plane array the per-view pass
// samples: layer i, row y + 1, column x + 4 (a zero frame of 1 row and 4 columns around the image).
// Only tiles the per-view pass can sample are stored (flagged per plane in `tiles`: the drawn tiles
// and their neighbours, which bilinear taps reach one texel into): texels elsewhere keep stale
// values that are never sampled. Stores are the costly part on llvmpipe.
layout(local_size_x = 16, local_size_y = 4) in;

layout(std430, binding = 0) readonly buffer Alpha { uint alpha[]; };      // (D, H, W4) bytes
layout(std430, binding = 1) readonly buffer Colour { uint colour[]; };    // frontal (3, H, W4), residual (3, H, W4) bytes
layout(std430, binding = 2) writeonly buffer Planes { uvec4 planes[]; };  // (D, H + 2, W4 + 8) RGBA8
layout(std430, binding = 3) readonly buffer Tiles { uvec2 tiles[]; };     // (tiles y, tiles x): bit i = store plane i

uniform int num_planes;
uniform ivec2 size4;   // (W4 / 4, H): groups of 4 pixels per row, rows
uniform int tile;      // tile side in pixels, a multiple of 4
uniform int tiles_x;   // tiles per row

void main() {
    ivec2 g = ivec2(gl_GlobalInvocationID.xy);
    if (g.x >= size4.x || g.y >= size4.y) return;
    int plane_words = size4.x * size4.y;              // one uint = 4 pixels of one plane
    int at = g.y * size4.x + g.x;
    vec4 fr = unpackUnorm4x8(colour[at]);
    vec4 fg = unpackUnorm4x8(colour[at + plane_words]);
    vec4 fb = unpackUnorm4x8(colour[at + 2 * plane_words]);
    vec4 rr = unpackUnorm4x8(colour[at + 3 * plane_words]);
    vec4 rg = unpackUnorm4x8(colour[at + 4 * plane_words]);
    vec4 rb = unpackUnorm4x8(colour[at + 5 * plane_words]);
    int row4 = size4.x + 2;                           // output row in uvec4 units (W4 + 8 texels)
    int out_at = (g.y + 1) * row4 + g.x + 1;
    int out_plane = row4 * (size4.y + 2);
    uvec2 stored = tiles[(g.y / tile) * tiles_x + (4 * g.x) / tile];
    vec4 T = vec4(1.0);
    vec4 T_next;
    for (int i = num_planes - 1; i >= 0; --i) {
        uint packed_alpha = alpha[i * plane_words + at];
        vec4 a = unpackUnorm4x8(packed_alpha);
        T_next = T * (1.0 - a);
        if (((i < 32 ? stored.x >> i : stored.y >> (i - 32)) & 1u) == 0u) {
            T = T_next;
            continue;
        }
        vec4 cr = T * fr + (1.0 - T) * rr;
        vec4 cg = T * fg + (1.0 - T) * rg;
        vec4 cb = T * fb + (1.0 - T) * rb;
        uvec4 rgb = uvec4(packUnorm4x8(vec4(cr.x, cg.x, cb.x, 0.0)), packUnorm4x8(vec4(cr.y, cg.y, cb.y, 0.0)),
                          packUnorm4x8(vec4(cr.z, cg.z, cb.z, 0.0)), packUnorm4x8(vec4(cr.w, cg.w, cb.w, 0.0)));
        // alpha bytes go through unchanged
        uvec4 alpha_bytes = (uvec4(packed_alpha) >> uvec4(0u, 8u, 16u, 24u)) & 255u;
        planes[i * out_plane + out_at] = rgb | (alpha_bytes << 24u);
        T = T_next;
    }
}
