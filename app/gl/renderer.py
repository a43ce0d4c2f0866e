"""Real-time GL renderer of MPI frames (moderngl), matching the torch reference `model.geometry.mpi.render`.

Work is split by how often it changes:
  - `upload(frame)`, once per MPI frame: the CPU lists, per plane, the tiles whose alpha (dilated by
    one pixel: bilinear taps reach one pixel across) is non-zero, shrunk to their used pixels; a
    compute pass turns frontal, residual and alpha into per-plane RGBA (c_i, alpha_i) with the
    two-image colour model, storing only tiles a view can sample; the background goes to a texture.
  - `draw(K, T, viewport)`, per view: the background plane at `far`, then one instanced draw of
    the tile rectangles as quads at their planes (the plane homography with its w in gl_Position,
    so interpolation is exact), back to front, premultiplied "over" blending. Each fragment keeps
    itself only if its exact MPI position lies in the rectangle's own tiles, so neighbouring quads
    never leave cracks or blend a pixel twice.
Empty space costs nothing, which is what makes 24 planes at 512^2 affordable on a software
rasteriser (llvmpipe). Colours are used as stored (8-bit sRGB values as plain numbers, no decode),
like the reference. Needs GL 4.3 (compute shaders, storage buffers).
"""
from __future__ import annotations

from dataclasses import dataclass

import moderngl
import numpy as np

from model.geometry import rig  # NumPy twin of model.geometry.camera: no torch in the render loop's process
from model.formats.clip import MPIFrame
from model.resources import shader_source

MAX_PLANES = 64
DEFAULT_TILE = 16  # MPI pixels per tile side: smaller culls more, larger means fewer instances


@dataclass
class UploadStats:
    """Counters a caller (or a test) can read: what one `upload` cost and how much it keeps."""

    uploads: int = 0  # MPI frames uploaded so far
    tiles: int = 0  # rectangles drawn per view for the current frame
    pixels: int = 0  # MPI pixels those rectangles cover (all planes); D * H * W without culling


def plane_homographies(K_src_inv: np.ndarray, K_tgt: np.ndarray, T_tgt_from_src: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """H (D, 3, 3): target pixel <- MPI pixel for each plane, H_i = K_t (R + t n^T / d_i) K_s^-1.

    Same formula as `model.geometry.mpi.plane_homographies`, given K_s^-1. Plain einsum (no BLAS call) so
    per-view set-up takes microseconds and wakes no BLAS threads that would compete with the
    rasteriser. K_src_inv, K_tgt (3, 3); T_tgt_from_src (4, 4); depths (D,)."""
    M = np.repeat(T_tgt_from_src[None, :3, :3], len(depths), axis=0)
    M[:, :, 2] += T_tgt_from_src[None, :3, 3] / depths[:, None]  # t n^T / d with n = (0, 0, 1)
    return np.einsum("ij,djk,kl->dil", K_tgt, M, K_src_inv)


def occupied_tiles(alpha: np.ndarray, tile: int) -> np.ndarray:
    """Rectangles to draw (N, 5) int32: (x0, y0, x1, y1, plane), MPI pixels [x0, x1) x [y0, y1).

    The image of each plane is cut into tile x tile squares; a square is kept when its alpha,
    dilated by one pixel (bilinear taps reach one pixel across), is non-zero somewhere, and shrunk
    to the bounding box of those pixels; runs of kept squares in a row that join edge to edge with
    the same rows are merged (fewer, longer quads: llvmpipe pays per triangle too). Rectangles of
    one plane never overlap and cover every pixel whose dilated alpha is non-zero. Sorted back to
    front (plane 0 first). alpha (D, H, W) uint8."""
    D, H, W = alpha.shape
    ty, tx = -(-H // tile), -(-W // tile)
    a = np.ascontiguousarray(alpha, dtype=np.uint8)
    if (ty * tile, tx * tile) != (H, W):
        a = np.pad(a, ((0, 0), (0, ty * tile - H), (0, tx * tile - W)))
    if tile % 8 == 0:
        # 8 pixels per 64-bit word: OR-ing words tells whether any byte is non-zero, ~10x faster
        # than comparing and reducing bytes
        words = a.view(np.uint64)
        acc = words[..., 0::tile // 8].copy()
        for k in range(1, tile // 8):
            acc |= words[..., k::tile // 8]
        row_seg = acc != 0  # (D, rows, tile columns): any pixel of the row inside the tile
        tall = words.reshape(D, ty, tile, -1)
        acc = tall[:, :, 0].copy()
        for k in range(1, tile):
            acc |= tall[:, :, k]
        col_seg = acc.view(np.uint8) != 0  # (D, tile rows, columns)
    else:
        row_seg = a.reshape(D, ty * tile, tx, tile).any(-1)
        col_seg = a.reshape(D, ty, tile, tx * tile).any(2)
    row_seg[:, :, 1:] |= a[:, :, tile - 1:-1:tile] != 0  # last column of the tile on the left
    row_seg[:, :, :-1] |= a[:, :, tile::tile] != 0  # first column of the tile on the right
    rows = row_seg.copy()
    rows[:, 1:] |= row_seg[:, :-1]
    rows[:, :-1] |= row_seg[:, 1:]
    col_seg[:, 1:] |= a[:, tile - 1:-1:tile] != 0
    col_seg[:, :-1] |= a[:, tile::tile] != 0
    cols = col_seg.copy()
    cols[:, :, 1:] |= col_seg[:, :, :-1]
    cols[:, :, :-1] |= col_seg[:, :, 1:]
    rows[:, H:] = False  # dilation must not reach into the padding
    cols[:, :, W:] = False
    row_any = rows.reshape(D, ty, tile, tx).transpose(0, 1, 3, 2)  # (D, ty, tx, tile): rows of each tile in use
    col_any = cols.reshape(D, ty, tx, tile)  # (D, ty, tx, tile): columns in use
    d, y, x = np.nonzero(row_any.any(-1))  # C order: plane-major, so already back to front
    r, c = row_any[d, y, x], col_any[d, y, x]
    y0 = y * tile + r.argmax(-1)
    y1 = y * tile + tile - r[:, ::-1].argmax(-1)
    x0 = x * tile + c.argmax(-1)
    x1 = x * tile + tile - c[:, ::-1].argmax(-1)
    # a rectangle continues the previous one when it is the next tile of the same plane and tile
    # row, both touch their shared tile edge, and they span the same rows
    joins = np.zeros(len(d), bool)
    joins[1:] = (d[1:] == d[:-1]) & (y[1:] == y[:-1]) & (x[1:] == x[:-1] + 1) & (x1[:-1] == x0[1:]) \
        & (y0[1:] == y0[:-1]) & (y1[1:] == y1[:-1])
    starts = np.flatnonzero(~joins)
    ends = np.append(starts[1:], len(d)) - 1
    return np.stack([x0[starts], y0[starts], x1[ends], y1[ends], d[starts]], 1).astype(np.int32)


class MPIRenderer:
    """Draws one uploaded MPI frame into any number of views (see the module docstring)."""

    def __init__(self, ctx: moderngl.Context, tile: int = DEFAULT_TILE):
        if tile < 4 or tile % 4:
            raise ValueError(f"MPIRenderer tile must be a positive multiple of 4 pixels, got {tile}")
        self.ctx = ctx
        self.tile = int(tile)
        self.stats = UploadStats()
        vert = shader_source("mpi_plane.vert.glsl").replace("#version 330\n", f"#version 330\n#define MAX_PLANES {MAX_PLANES}\n", 1)
        self._plane_prog = ctx.program(vertex_shader=vert, fragment_shader=shader_source("mpi_plane.frag.glsl"))
        self._bg_prog = ctx.program(vertex_shader=vert, fragment_shader=shader_source("mpi_background.frag.glsl"))
        self._colours = ctx.compute_shader(shader_source("mpi_colours.comp.glsl"))
        self._plane_prog["planes"] = 0
        self._bg_prog["background"] = 1
        # the background is one rectangle: the whole image on plane 0 (far)
        self._bg_rect = ctx.buffer(np.zeros(5, np.int32).tobytes())
        self._bg_vao = ctx.vertex_array(self._bg_prog, [(self._bg_rect, "4i i/i", "in_rect", "in_plane")])
        self._frame: MPIFrame | None = None
        self._depths: np.ndarray | None = None
        self._shape: tuple[int, int, int] | None = None  # (D, H, W) the textures are allocated for
        self._textures: dict[str, moderngl.Texture | moderngl.TextureArray | moderngl.Buffer] = {}
        self._rects: moderngl.Buffer | None = None
        self._vao: moderngl.VertexArray | None = None
        self._num_rects = 0
        self._fbos: dict[tuple[int, int], moderngl.Framebuffer] = {}

    # ------------------------------------------------------------------ per MPI frame
    def _allocate(self, D: int, H: int, W: int) -> None:
        for obj in self._textures.values():
            obj.release()
        ctx = self.ctx
        W4 = -(-W // 4) * 4  # the colour pass reads and writes 4 pixels per 32-bit / 128-bit word
        # Sampled textures carry a zero frame and clamp to edge: the same as the reference's zero
        # padding, and cheaper for llvmpipe than a border colour. The plane array's frame is 4
        # columns wide so that the colour pass's 4-pixel stores stay aligned.
        self._plane_layout = (W4 + 8, H + 2, 4, 1)  # texture width, height, frame x, frame y
        planes = ctx.texture_array((W4 + 8, H + 2, D), 4)
        background = ctx.texture((W + 2, H + 2), 4, data=bytes((W + 2) * (H + 2) * 4))
        for tex in (planes, background):
            tex.repeat_x = tex.repeat_y = False
            tex.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self._textures = {
            "planes": planes,
            "background": background,
            "alpha": ctx.buffer(reserve=D * H * W4),
            "colours": ctx.buffer(reserve=6 * H * W4),
            "planes_out": ctx.buffer(bytes(planes.width * planes.height * D * 4)),  # zero frame, written once
            "tile_planes": ctx.buffer(reserve=8 * -(-H // self.tile) * -(-W // self.tile)),
        }
        self._shape = (D, H, W)
        self._W4 = W4

    def _padded(self, images: np.ndarray) -> np.ndarray:
        """(..., H, W) uint8 -> (..., H, W4) contiguous, zero columns on the right if W4 > W."""
        W = images.shape[-1]
        if W == self._W4:
            return np.ascontiguousarray(images, dtype=np.uint8)
        return np.pad(images.astype(np.uint8), [(0, 0)] * (images.ndim - 1) + [(0, self._W4 - W)])

    def _stored_tiles(self, rects: np.ndarray, D: int, H: int, W: int) -> np.ndarray:
        """(tiles y, tiles x) uint64: bit i set where the colour pass must store plane i, i.e. the
        tiles the rectangles of plane i touch and their 8 neighbours."""
        t = self.tile
        ty, tx = -(-H // t), -(-W // t)
        runs = np.zeros((D, ty, tx + 1), np.int32)  # rectangles span runs of tiles in one tile row
        np.add.at(runs, (rects[:, 4], rects[:, 1] // t, rects[:, 0] // t), 1)
        np.add.at(runs, (rects[:, 4], rects[:, 1] // t, (rects[:, 2] - 1) // t + 1), -1)
        used = np.cumsum(runs, axis=2)[:, :, :tx] > 0
        grown = used.copy()
        grown[:, :, 1:] |= used[:, :, :-1]
        grown[:, :, :-1] |= used[:, :, 1:]
        wide = grown.copy()
        grown[:, 1:] |= wide[:, :-1]
        grown[:, :-1] |= wide[:, 1:]
        bits = np.zeros((ty, tx), np.uint64)
        for i in range(D):
            bits |= grown[i].astype(np.uint64) << np.uint64(i)
        return bits

    def upload(self, frame: MPIFrame) -> None:
        """Send one MPI frame to the GPU; any number of `draw` / `render` calls may follow."""
        D, H, W = frame.alpha.shape
        if not 1 <= D <= MAX_PLANES:
            raise ValueError(f"MPIRenderer supports 1..{MAX_PLANES} planes, the frame has {D}")
        for name in ("frontal", "residual", "background"):
            value = getattr(frame, name)
            if value is not None and value.shape != (3, H, W):
                raise ValueError(f"MPI frame {name} has shape {value.shape}, expected (3, {H}, {W}) like its alpha")
        if self._shape != (D, H, W):
            self._allocate(D, H, W)
        res = self._textures
        res["alpha"].write(self._padded(frame.alpha))
        res["colours"].write(self._padded(frame.frontal))
        res["colours"].write(self._padded(frame.residual), offset=3 * H * self._W4)
        if frame.background is not None:
            rgba = np.full((H, W, 4), 255, np.uint8)
            rgba[..., :3] = frame.background.transpose(1, 2, 0)
            res["background"].write(rgba, viewport=(1, 1, W, H))
        rects = occupied_tiles(frame.alpha, self.tile)
        res["tile_planes"].write(self._stored_tiles(rects, D, H, W))
        res["alpha"].bind_to_storage_buffer(0)
        res["colours"].bind_to_storage_buffer(1)
        res["planes_out"].bind_to_storage_buffer(2)
        res["tile_planes"].bind_to_storage_buffer(3)
        self._colours["num_planes"] = D
        self._colours["size4"] = (self._W4 // 4, H)
        self._colours["tile"] = self.tile
        self._colours["tiles_x"] = -(-W // self.tile)
        self._colours.run(-(-self._W4 // 64), -(-H // 4), 1)
        # the buffer is copied into the plane array right after: make the stores visible to that copy
        self.ctx.memory_barrier(moderngl.PIXEL_BUFFER_BARRIER_BIT | moderngl.SHADER_STORAGE_BARRIER_BIT)
        res["planes"].write(res["planes_out"])

        if self._rects is None or self._rects.size < max(rects.nbytes, 20):
            if self._rects is not None:
                self._vao.release()
                self._rects.release()
            self._rects = self.ctx.buffer(reserve=max(rects.nbytes, 20))
            self._vao = self.ctx.vertex_array(self._plane_prog, [(self._rects, "4i i/i", "in_rect", "in_plane")])
        if rects.size:
            self._rects.write(rects.tobytes())
        self._num_rects = len(rects)
        self._bg_rect.write(np.array([0, 0, W, H, 0], np.int32).tobytes())
        self._frame = frame
        self._depths = frame.depths().astype(np.float64)
        self._K_src_inv = np.linalg.inv(np.asarray(frame.K, np.float64))
        self._head_from_cam = rig.invert_pose(np.asarray(frame.T_cam_from_head, np.float64))
        self.stats.uploads += 1
        self.stats.tiles = len(rects)
        self.stats.pixels = int(np.prod(rects[:, 2:4] - rects[:, 0:2], axis=1).sum()) if len(rects) else 0

    # ------------------------------------------------------------------ per view
    def draw(self, K: np.ndarray, T_view_from_head: np.ndarray, viewport: tuple[int, int, int, int], *, background: bool = True) -> None:
        """Draw the uploaded MPI into the bound framebuffer inside `viewport` (x, y, w, h), GL
        convention. K (3, 3) is the OpenCV intrinsics of a w x h image; OpenCV row 0 lands at the top
        of the viewport. The background plane (opaque) replaces what it covers, its outer half pixel
        fading to black like the reference's zero padding; without it (or where it does not reach)
        the planes blend "over" what is there (premultiplied). Leaves blending enabled with func
        (ONE, ONE_MINUS_SRC_ALPHA) and depth test / face culling disabled."""
        frame = self._frame
        if frame is None:
            raise RuntimeError("MPIRenderer.draw called before upload(frame)")
        D, H, W = self._shape
        T_view_from_cam = np.einsum("ij,jk->ik", np.asarray(T_view_from_head, np.float64), self._head_from_cam)
        Hs = plane_homographies(self._K_src_inv, np.asarray(K, np.float64), T_view_from_cam, self._depths)
        mats = np.zeros((MAX_PLANES, 3, 3), np.float32)
        mats[:D] = Hs.transpose(0, 2, 1)  # GLSL mat3 is column-major
        inverses = np.zeros((MAX_PLANES, 3, 3), np.float32)
        inverses[:D] = np.linalg.inv(Hs).transpose(0, 2, 1)
        ctx = self.ctx
        ctx.viewport = tuple(int(v) for v in viewport)
        ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
        ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
        ctx.blend_equation = moderngl.FUNC_ADD
        draws = []
        if background and frame.background is not None:
            # first and opaque: no blending, which spares llvmpipe a framebuffer read per pixel
            draws.append((self._bg_prog, self._bg_vao, 1, self._textures["background"], 1, False, (W + 2, H + 2, 1, 1)))
        if self._num_rects:
            draws.append((self._plane_prog, self._vao, self._num_rects, self._textures["planes"], 0, True, self._plane_layout))
        for prog, vao, count, tex, unit, blend, layout in draws:
            if blend:
                ctx.enable(moderngl.BLEND)
            else:
                ctx.disable(moderngl.BLEND)
            values = {
                "mpi_size": (float(W), float(H)),
                "view_size": (float(viewport[2]), float(viewport[3])),
                "viewport": tuple(float(v) for v in viewport),
                "tex_scale": (1.0 / layout[0], 1.0 / layout[1]),
                "tex_offset": (float(layout[2]), float(layout[3])),
                "tile": float(self.tile),
            }
            prog["homographies"].write(mats.tobytes())
            if "inverse_homographies" in prog:
                prog["inverse_homographies"].write(inverses.tobytes())
            for name, value in values.items():
                if name in prog:  # the background program has no use for some
                    prog[name] = value
            tex.use(unit)
            vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=count)
        ctx.enable(moderngl.BLEND)

    def _fbo(self, size: tuple[int, int]) -> moderngl.Framebuffer:
        fbo = self._fbos.get(size)
        if fbo is None:
            fbo = self.ctx.framebuffer(color_attachments=[self.ctx.texture(size, 4)])
            self._fbos[size] = fbo
        return fbo

    def _render_into(self, fbo: moderngl.Framebuffer, K: np.ndarray, T_view_from_head: np.ndarray, size: tuple[int, int]) -> None:
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0)
        self.draw(K, T_view_from_head, (0, 0, size[0], size[1]))

    @staticmethod
    def _read(fbo: moderngl.Framebuffer, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        data = np.frombuffer(fbo.read(components=3, alignment=1), np.uint8).reshape(h, w, 3)
        return data[::-1].astype(np.float32) / 255.0  # GL rows run bottom-up

    def render(self, K: np.ndarray, T_view_from_head: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Offscreen view: (h, w, 3) float32 in [0, 1], row 0 = top; size = (w, h)."""
        size = (int(size[0]), int(size[1]))
        fbo = self._fbo(size)
        self._render_into(fbo, K, T_view_from_head, size)
        return self._read(fbo, size)

    def render_stereo(self, K: np.ndarray, T_view_from_head: np.ndarray, size: tuple[int, int], baseline: float = rig.DEFAULT_BASELINE) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) views of the stereo rig centred on T_view_from_head (model.geometry.rig.stereo_pair)."""
        left, right = rig.stereo_pair(np.asarray(T_view_from_head, np.float32), baseline)
        return self.render(K, left, size), self.render(K, right, size)

    def release(self) -> None:
        """Free every GL object this renderer made (the context stays)."""
        for fbo in self._fbos.values():
            for attachment in fbo.color_attachments:
                attachment.release()
            fbo.release()
        objects = [self._vao, self._rects, self._bg_vao, self._bg_rect, self._plane_prog, self._bg_prog, self._colours, *self._textures.values()]
        for obj in objects:
            if obj is not None:
                obj.release()
        self._fbos.clear()
        self._textures.clear()
        self._vao = self._rects = self._frame = None
        self._shape = None
