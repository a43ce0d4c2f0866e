"""One MPI frame as a glTF scene (trimesh): its planes as alpha-blended textured quads in metres.

Plane i becomes the quad where the MPI camera's frustum meets z = d_i (its corners are the image's
outer pixel edges, (-0.5, -0.5) .. (W - 0.5, H - 0.5) with pixel centres at integers, cast to that
depth), textured with the plane's straight-alpha RGBA (c_i, alpha_i) of the two-image colour model.
The materials are alphaMode BLEND, double sided and unlit (KHR_materials_unlit: MPI colours are
already lit, a viewer's lights must not shade them again). The background is an opaque quad 1 %
behind `far` (not at `far` itself, where it would z-fight with plane 0 in rasterising viewers).

Axes: the node "head" holds the head frame of DESIGN.md (metres, OpenCV axes: x right, y down,
z away from the camera). glTF is y up and its cameras look down -z, so that node is turned 180 deg
about x: Blender / three.js show the head upright, facing +z. Each quad is a child node placed at
its centre (vertices relative to it): viewers sort transparent objects by their origins, so
origins at the planes' depths give the back-to-front order that "over" blending needs.

Texels whose colour can never be seen (more than one pixel from any non-zero alpha, beyond the
reach of a bilinear footprint) are set to black so the PNGs stay small.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np

from model.geometry import mpi
from model.formats.clip import MPIFrame

BACKGROUND_BEHIND = 1.01  # the background quad sits at far * this
GLTF_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # y down, z forward -> y up, z backward
HEAD_NODE = "head"


def plane_corners(K: np.ndarray, T_cam_from_head: np.ndarray, depth: float, size_hw: tuple[int, int]) -> np.ndarray:
    """(4, 3) head-frame corners of the image rectangle at `depth` in the MPI camera, in the order
    top-left, top-right, bottom-right, bottom-left of the image. K (3, 3), T_cam_from_head (4, 4)."""
    H, W = size_hw
    pixels = np.array([[-0.5, -0.5, 1.0], [W - 0.5, -0.5, 1.0], [W - 0.5, H - 0.5, 1.0], [-0.5, H - 0.5, 1.0]])
    cam = pixels @ np.linalg.inv(np.asarray(K, np.float64)).T * depth  # rays with z = 1, scaled
    head_from_cam = np.linalg.inv(np.asarray(T_cam_from_head, np.float64))
    return cam @ head_from_cam[:3, :3].T + head_from_cam[:3, 3]


def plane_textures(frame: MPIFrame) -> np.ndarray:
    """(D, H, W, 4) uint8 straight-alpha RGBA of each plane: c_i = T_i frontal + (1 - T_i) residual."""
    import torch

    t = frame.tensors()
    colours = mpi.layer_colours(t["frontal"][0], t["residual"][0], t["alpha"][0])  # (D, 3, H, W)
    rgb = torch.round(colours * 255.0).clamp(0, 255).to(torch.uint8).numpy()
    alpha = np.asarray(frame.alpha, np.uint8)
    reach = alpha > 0  # texels a bilinear tap next to non-zero alpha may read
    grown = reach.copy()
    grown[:, 1:] |= reach[:, :-1]
    grown[:, :-1] |= reach[:, 1:]
    rows = grown.copy()
    grown[:, :, 1:] |= rows[:, :, :-1]
    grown[:, :, :-1] |= rows[:, :, 1:]
    rgb = rgb * grown[:, None]
    return np.concatenate([rgb.transpose(0, 2, 3, 1), alpha[..., None]], axis=-1)


def _add_quad(scene, corners: np.ndarray, rgba: np.ndarray, blend: bool, name: str) -> None:
    """A node `name` under HEAD_NODE at the centre of `corners` (4, 3), holding the quad."""
    centre = corners.mean(0)
    place = np.eye(4)
    place[:3, 3] = centre
    scene.add_geometry(_quad(corners - centre, rgba, blend, name), node_name=name, geom_name=name,
                       parent_node_name=HEAD_NODE, transform=place)


def _quad(corners: np.ndarray, rgba: np.ndarray, blend: bool, name: str):
    import trimesh
    from PIL import Image

    # trimesh uses OpenGL texture coordinates (v up) and flips them to glTF's on export
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    image = Image.fromarray(np.ascontiguousarray(rgba if blend else rgba[..., :3]))  # RGBA / RGB from the shape
    material = trimesh.visual.material.PBRMaterial(
        name=name, baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0,
        alphaMode="BLEND" if blend else "OPAQUE", doubleSided=True,
    )
    # triangles wound counter-clockwise as seen from the MPI camera (front faces face it)
    mesh = trimesh.Trimesh(vertices=corners, faces=[[0, 2, 1], [0, 3, 2]], process=False)
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return mesh


def frame_scene(frame: MPIFrame):
    """trimesh.Scene: node "head" (GLTF_FROM_OPENCV) holding the nodes "background" (when the
    frame has one) and "plane_00" .. "plane_{D-1}" (0 = farthest), each at its quad's centre in
    the head frame."""
    import trimesh

    scene = trimesh.Scene()
    scene.graph.update(frame_from=scene.graph.base_frame, frame_to=HEAD_NODE, matrix=GLTF_FROM_OPENCV)
    size = frame.size
    depths = frame.depths().astype(np.float64)
    if frame.background is not None:
        rgba = np.concatenate([np.asarray(frame.background).transpose(1, 2, 0), np.full((*size, 1), 255, np.uint8)], -1)
        corners = plane_corners(frame.K, frame.T_cam_from_head, depths[0] * BACKGROUND_BEHIND, size)
        _add_quad(scene, corners, rgba, False, "background")
    for i, rgba in enumerate(plane_textures(frame)):
        name = f"plane_{i:02d}"
        corners = plane_corners(frame.K, frame.T_cam_from_head, depths[i], size)
        _add_quad(scene, corners, rgba, True, name)
    return scene


def _with_unlit(glb: bytes) -> bytes:
    """The same GLB with KHR_materials_unlit on every material (trimesh does not write it)."""
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    length, kind = struct.unpack_from("<I4s", glb, 12)
    if magic != b"glTF" or kind != b"JSON":
        raise ValueError("trimesh produced an unexpected GLB layout")
    doc = json.loads(glb[20:20 + length])
    rest = glb[20 + length:]
    for material in doc.get("materials", []):
        material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
    used = doc.setdefault("extensionsUsed", [])
    if "KHR_materials_unlit" not in used:
        used.append("KHR_materials_unlit")
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    body = struct.pack("<I4s", len(text), b"JSON") + text + rest
    return struct.pack("<4sII", b"glTF", version, 12 + len(body)) + body


def export_glb(frame: MPIFrame, path: str | Path | None = None) -> bytes:
    """GLB bytes of `frame_scene(frame)` with unlit materials; also written to `path` when given."""
    glb = _with_unlit(frame_scene(frame).export(file_type="glb"))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(glb)
    return glb


def load_glb(data: bytes | str | Path):
    """trimesh.Scene from GLB bytes or a file (for tests and checks)."""
    import trimesh

    if isinstance(data, (str, Path)):
        return trimesh.load(str(data), file_type="glb", force="scene")
    return trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
