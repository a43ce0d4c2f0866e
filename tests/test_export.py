"""`imp export` / model.formats.gltf: an MPI frame as a GLB of textured planes, reloaded with trimesh."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from app.cli.imp import main
from model.formats import gltf
from model.geometry import mpi
from model.formats.clip import MPIClip, MPIFrame, save_clip
from bench.synthetic import head_mpi

S, D = 24, 6


def _frame(seed: int = 0) -> MPIFrame:
    f = head_mpi(S, D, seed=seed)
    # a head turned and shifted in the camera: vertex positions must go through T_head_from_cam
    c, s = np.cos(0.3), np.sin(0.3)
    T = np.array([[c, 0, s, 0.02], [0, 1, 0, -0.01], [-s, 0, c, 0.95], [0, 0, 0, 1]], np.float32)
    return MPIFrame(f.frontal, f.residual, f.alpha, f.K, T, f.near, f.far, f.background)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    clip = MPIClip.from_frames([_frame(0), _frame(1)], fps=25.0)
    save_clip(clip, tmp / "clip.mpi")
    out = tmp / "frame1.glb"
    assert main(["export", str(tmp / "clip.mpi"), "-o", str(out), "--frame", "1"]) == 0
    return clip.frame(1), out


def _in_camera(frame: MPIFrame, scene, name: str) -> np.ndarray:
    """Vertices (4, 3) of node `name` in the MPI camera: glTF world -> head frame -> camera."""
    world, _ = scene.graph.get(name)
    T = np.asarray(frame.T_cam_from_head, np.float64) @ np.linalg.inv(gltf.GLTF_FROM_OPENCV) @ world
    return np.asarray(scene.geometry[name].vertices) @ T[:3, :3].T + T[:3, 3]


def test_planes_sit_at_their_depths_and_span_the_frustum(exported):
    frame, path = exported
    scene = gltf.load_glb(path)
    names = sorted(scene.geometry)
    assert names == ["background"] + [f"plane_{i:02d}" for i in range(D)]
    depths = frame.depths()
    K = frame.K.astype(np.float64)
    for i in range(D):
        mesh = scene.geometry[f"plane_{i:02d}"]
        cam = _in_camera(frame, scene, f"plane_{i:02d}")
        assert cam[:, 2] == pytest.approx([depths[i]] * 4, abs=1e-5)
        # corners are the outer pixel edges cast to the plane's depth
        x = cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2]
        y = cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]
        assert sorted(set(np.round(x, 3))) == [-0.5, S - 0.5] and sorted(set(np.round(y, 3))) == [-0.5, S - 0.5]
        assert (mesh.face_normals @ np.asarray(frame.T_cam_from_head, np.float64)[:3, :3].T)[:, 2] == pytest.approx([-1, -1], abs=1e-6)
        # texture coordinate (0, 1) (trimesh's v-up convention: the image's first row) at the top-left corner
        top_left = np.argmin(x + y)
        assert mesh.visual.uv[top_left] == pytest.approx([0.0, 1.0])
    bg = _in_camera(frame, scene, "background")
    assert bg[:, 2] == pytest.approx([depths[0] * gltf.BACKGROUND_BEHIND] * 4, abs=1e-5)
    # every quad hangs under the y-up "head" node, its origin at its centre: viewers sorting
    # transparent objects by origin draw the planes back to front
    assert all(scene.graph.transforms.parents[n] == gltf.HEAD_NODE for n in names)
    assert np.allclose(scene.graph.get(gltf.HEAD_NODE)[0], gltf.GLTF_FROM_OPENCV)
    origins = [_in_camera(frame, scene, f"plane_{i:02d}").mean(0) for i in range(D)]
    for i, origin in enumerate(origins):
        world, _ = scene.graph.get(f"plane_{i:02d}")
        head = np.linalg.inv(gltf.GLTF_FROM_OPENCV) @ world
        assert np.allclose(np.asarray(frame.T_cam_from_head, np.float64)[:3] @ head[:, 3], origin, atol=1e-6)
    assert np.all(np.diff([o[2] for o in origins]) < 0)  # plane 0 farthest


def test_textures_hold_the_layer_colours_and_alpha(exported):
    frame, path = exported
    scene = gltf.load_glb(path)
    t = frame.tensors()
    colours = (mpi.layer_colours(t["frontal"][0], t["residual"][0], t["alpha"][0]) * 255).round().numpy()
    for i in range(D):
        material = scene.geometry[f"plane_{i:02d}"].visual.material
        assert material.alphaMode == "BLEND" and material.doubleSided
        rgba = np.asarray(material.baseColorTexture.convert("RGBA"))
        assert rgba.shape == (S, S, 4)
        assert np.array_equal(rgba[..., 3], frame.alpha[i]), i
        seen = frame.alpha[i] > 0
        assert np.abs(rgba[..., :3][seen].astype(float) - colours[i].transpose(1, 2, 0)[seen]).max(initial=0.0) <= 1.0
    # the test frame has opaque and empty texels, and content on several planes
    assert frame.alpha.max() == 255 and frame.alpha[:, 0, 0].max() == 0 and (frame.alpha.max(axis=(1, 2)) > 0).sum() >= 3
    background = scene.geometry["background"].visual.material
    assert background.alphaMode in (None, "OPAQUE")
    assert np.array_equal(np.asarray(background.baseColorTexture.convert("RGB")), frame.background.transpose(1, 2, 0))


def test_materials_are_unlit_and_the_glb_is_well_formed(exported):
    _, path = exported
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    size, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON" and size % 4 == 0
    doc = json.loads(data[20:20 + size])
    assert "KHR_materials_unlit" in doc["extensionsUsed"]
    assert len(doc["materials"]) == D + 1 and all("KHR_materials_unlit" in m["extensions"] for m in doc["materials"])


def test_export_errors_are_clear(tmp_path, capsys):
    save_clip(MPIClip.from_frames([_frame()], fps=25.0), tmp_path / "one.mpi")
    assert main(["export", str(tmp_path / "one.mpi"), "-o", str(tmp_path / "x.glb"), "--frame", "1"]) == 2
    assert "frame 1 is out of range, the clip has 1 frame" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.mpi"), "-o", str(tmp_path / "x.glb")]) == 2
    assert "none.mpi: no such clip file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "one.mpi"), "-o", str(tmp_path / "x.gltf")]) == 2
    assert "name it *.glb" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "one.mpi"), "-o", str(tmp_path / "last.glb"), "--frame", "-1"]) == 0
    assert not (tmp_path / "x.glb").exists() and (tmp_path / "last.glb").is_file()
