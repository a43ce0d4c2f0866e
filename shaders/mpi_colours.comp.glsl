#version 430
// Per-plane colours of the two-image model, once per MPI frame (DESIGN.md):
//   c_i = T_i * frontal + (1 - T_i) * residual,  T_i = prod_{j>i} (1 - alpha_j),
// walking each pixel's planes front (D-1) to back (0) and carrying T. Writes (c_i, alpha_i) into
// layer i of the RGBA plane array the per-view pass samples, inside its 1-texel zero frame.
layout(local_size_x = 8, local_size_y = 8) in;

uniform sampler2DArray alpha_planes;  // R8, layer i = alpha_i
uniform sampler2D frontal;            // RGB8
uniform sampler2D residual;           // RGB8
uniform int num_planes;
uniform ivec2 mpi_size;               // (W, H)
layout(rgba8, binding = 0) writeonly uniform image2DArray planes;

void main() {
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    if (p.x >= mpi_size.x || p.y >= mpi_size.y) return;
    vec3 f = texelFetch(frontal, p, 0).rgb;
    vec3 r = texelFetch(residual, p, 0).rgb;
    float T = 1.0;
    for (int i = num_planes - 1; i >= 0; --i) {
        float a = texelFetch(alpha_planes, ivec3(p, i), 0).r;
        imageStore(planes, ivec3(p + 1, i), vec4(T * f + (1.0 - T) * r, a));
        T *= 1.0 - a;
    }
}
