"""MediaPipe's legacy face mesh: the landmark runner and the mesh topology.

Landmarks come out as "pseudo-3D" points in source pixels: (x * W, y * H, z * W), where MediaPipe's
z is depth relative to the face centre in the same units as x (smaller = nearer the camera). So the
points already follow OpenCV's axes (x right, y down, z away from the camera), up to an unknown
metric scale, which `shape.py` fixes with a mean-face prior."""
from __future__ import annotations

import functools
import itertools
from collections import Counter, defaultdict, deque

import numpy as np

LANDMARK_COUNT = 478  # 468 mesh points + 2 x 5 iris points (refine_landmarks=True)
MESH_POINTS = 468  # the iris points (468..477) are not part of the tessellation

# Named landmarks. "Right"/"left" are the subject's: the right eye is on the image's left.
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (362, 263)  # inner, outer
MOUTH_INNER_CORNERS = (78, 308)
MOUTH_CORNERS = (61, 291)
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
NOSE_BRIDGE = 6
CHEEKS = (234, 454)  # the face oval's widest points, right and left

# Points that move little with expressions (forehead, nose bridge, eye corners, cheekbones,
# temples): used for rigid / similarity alignment. After MediaPipe's own Procrustes basis of the
# face-geometry module, without its two jaw-line points, which follow the mouth.
STABLE_POINTS = np.array(
    [4, 6, 10, 33, 54, 67, 117, 119, 121, 127, 129, 132, 133, 143, 147, 198, 205, 263, 284, 297, 346,
     348, 350, 356, 358, 361, 362, 372, 376, 420, 425],
    dtype=np.int64,
)

# Orientation of the propagated triangle winding that makes normals face the camera for an upright
# face in OpenCV axes (checked by tests/test_tracking.py::test_mesh_faces_are_a_consistent_front_facing_surface).
_FLIP_WINDING = True


@functools.cache
def mesh_connections():
    """MediaPipe's `face_mesh_connections` module (FACEMESH_TESSELATION, FACEMESH_LIPS, ...) read
    from the installed wheel without importing the mediapipe package: that import takes ~1 s
    (TensorFlow Lite, protobuf, OpenCV) and generating from a prepared portrait needs only these
    constants (imp-viewer's first frame)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("mediapipe")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("mediapipe is not installed: `pip install mediapipe==0.10.21` (see README)")
    path = Path(list(spec.submodule_search_locations)[0]) / "python" / "solutions" / "face_mesh_connections.py"
    if not path.is_file():  # another layout: the ordinary import
        from mediapipe.python.solutions import face_mesh_connections

        return face_mesh_connections
    module_spec = importlib.util.spec_from_file_location("_im_portrait_face_mesh_connections", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _tessellation_edges() -> set[tuple[int, int]]:
    return {tuple(sorted(e)) for e in mesh_connections().FACEMESH_TESSELATION}


def _boundary_loop(boundary: set[tuple[int, int]], start: int) -> list[int]:
    """The closed loop of boundary edges through vertex `start`, as an ordered vertex list."""
    nbrs = defaultdict(list)
    for a, b in boundary:
        nbrs[a].append(b)
        nbrs[b].append(a)
    loop, prev = [start], None
    while True:
        cur = loop[-1]
        nxt = [v for v in nbrs[cur] if v != prev]
        if not nxt or nxt[0] == start:
            return loop
        prev = cur
        loop.append(nxt[0])


def _zip_hole(loop: list[int], corner_a: int, corner_b: int) -> list[tuple[int, int, int]]:
    """Triangulate a hole (eye, mouth) as a strip between its two chains from corner to corner:
    deterministic and free of the folds a fan gives on these non-convex loops."""
    i, j = loop.index(corner_a), loop.index(corner_b)
    rolled = loop[i:] + loop[:i]
    j = (j - i) % len(loop)
    upper = rolled[: j + 1]  # corner_a .. corner_b one way round
    lower = [corner_a] + rolled[j:][::-1]  # corner_a .. corner_b the other way
    tris = []
    u, l = 0, 0
    while u < len(upper) - 1 or l < len(lower) - 1:
        # advance along whichever chain is behind in relative progress
        if l >= len(lower) - 1 or (u < len(upper) - 1 and (u + 1) / len(upper) <= (l + 1) / len(lower)):
            tris.append((upper[u], upper[u + 1], lower[l]))
            u += 1
        else:
            tris.append((upper[u], lower[l + 1], lower[l]))
            l += 1
    return [t for t in tris if len(set(t)) == 3]


def _orient(tris: list[tuple[int, int, int]]) -> np.ndarray:
    """Give all triangles one consistent winding by propagating across shared edges."""
    by_edge = defaultdict(list)
    for k, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            by_edge[frozenset((a, b))].append(k)
    out = [None] * len(tris)
    for seed in range(len(tris)):
        if out[seed] is not None:
            continue
        out[seed] = tris[seed]
        queue = deque([seed])
        while queue:
            k = queue.popleft()
            a, b, c = out[k]
            for e0, e1 in ((a, b), (b, c), (c, a)):
                for n in by_edge[frozenset((e0, e1))]:
                    if out[n] is not None:
                        continue
                    t = tris[n]
                    # a neighbour must traverse the shared edge the other way: e1 -> e0
                    rots = [t, (t[1], t[2], t[0]), (t[2], t[0], t[1])]
                    same = any(r[0] == e0 and r[1] == e1 for r in rots)
                    out[n] = (t[0], t[2], t[1]) if same else t
                    queue.append(n)
    return np.array(out, dtype=np.int32)


@functools.cache
def mesh_faces() -> np.ndarray:
    """(898, 3) int32 triangles over the 468 mesh points, wound so normals face the camera.

    MediaPipe ships its tessellation as edges only. Triangles are the 3-cliques of that graph minus
    the few cliques that are not faces (they are the only ones whose three edges are all shared by
    three cliques), which gives a disk with three holes (852 triangles); the eyes and the inner
    mouth are then closed by zipping their two lids / lips (46 triangles), as in MediaPipe's
    canonical face model (898 triangles)."""
    edges = _tessellation_edges()
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    use = Counter(e for t in cliques for e in itertools.combinations(t, 2))
    tris = [t for t in cliques if not all(use[e] == 3 for e in itertools.combinations(t, 2))]
    use = Counter(e for t in tris for e in itertools.combinations(t, 2))
    boundary = {e for e, n in use.items() if n == 1}
    for a, b in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS, MOUTH_INNER_CORNERS):
        tris += _zip_hole(_boundary_loop(boundary, a), a, b)
    faces = _orient(tris)
    return faces[:, ::-1].copy() if _FLIP_WINDING else faces


@functools.cache
def mouth_faces() -> np.ndarray:
    """(F,) bool over `mesh_faces()`: the triangles that close the inner mouth (zipped between the
    lips). They stand for the mouth's inside, which a closed-mouth photo does not show."""
    faces = mesh_faces()
    edges = _tessellation_edges()
    hole = _inner_mouth_loop()
    # zipped triangles use only inner-lip vertices and cross the mouth with an edge MediaPipe lacks
    return np.array([all(v in hole for v in t) and any(tuple(sorted(e)) not in edges for e in itertools.combinations(t, 2))
                     for t in faces.tolist()])


@functools.cache
def face_topology():
    """The mesh as model.geometry.portrait_warp needs it: faces, mouth triangles, bridge -> chin."""
    import torch

    from model.geometry.portrait_warp import FaceTopology

    return FaceTopology(torch.from_numpy(mesh_faces()).long(), torch.from_numpy(mouth_faces()), NOSE_BRIDGE, CHIN)


@functools.cache
def _inner_mouth_loop() -> frozenset[int]:
    # the inner lip contour: the lip loop through the inner mouth corners
    lips = {tuple(sorted(e)) for e in mesh_connections().FACEMESH_LIPS}
    loop = _boundary_loop(lips, MOUTH_INNER_CORNERS[0])
    inner = set(loop)
    if MOUTH_INNER_CORNERS[1] not in inner or MOUTH_CORNERS[0] in inner:
        raise RuntimeError("MediaPipe's lip contours changed: cannot find the inner-lip loop")
    return frozenset(inner)


# a video frame's second look (FaceMeshRunner.video_frame): in-plane angles (deg) and crop spans of
# `ensemble`. One upright view at span 2.2 was chosen on the tuning videos over six (the still
# portrait's ensemble: 24.80 against 24.86 dB; it moved still speakers' landmarks, d6 -0.5 dB) and
# over one centred on the smoothed first-pass track (24.82)
VIDEO_VIEW = ((0.0,), (2.2,))


class FaceMeshRunner:
    """MediaPipe FaceMesh for one image or one video (use as a context manager).

    `static=True` detects the face afresh in every image; `static=False` tracks it from frame to
    frame (video mode). FaceMesh's own detector is the short-range one, which misses faces smaller
    than about a fifth of the frame; when it finds nothing, the full-range face detector looks for
    the face and a static FaceMesh runs on a square crop around it. The models ship inside the
    mediapipe wheel: nothing is downloaded."""

    CROP_FACTOR = 2.2  # crop side / detected face box side for the fallback

    def __init__(self, static: bool, min_confidence: float = 0.5):
        import mediapipe as mp

        from model.tracking.native_logs import hush_mediapipe
        hush_mediapipe()  # MediaPipe's C++ log lines stay out of the user's terminal (unless --verbose)

        def face_mesh(static_mode: bool):
            return mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static_mode,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )

        self._mesh = face_mesh(static)
        self._crop_mesh = face_mesh(True)
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    @staticmethod
    def _landmarks(result, w: int, h: int) -> np.ndarray | None:
        if not result.multi_face_landmarks:
            return None
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x, p.y, p.z) for p in lm], dtype=np.float64)
        return pts * np.array([w, h, w], dtype=np.float64)

    def _via_detector(self, rgb: np.ndarray) -> np.ndarray | None:
        import cv2

        h, w = rgb.shape[:2]
        found = self._detector.process(rgb).detections
        if not found:
            return None
        best = max(found, key=lambda d: d.score[0])
        box = best.location_data.relative_bounding_box
        side = self.CROP_FACTOR * max(box.width * w, box.height * h)
        x0 = int(round((box.xmin + box.width / 2) * w - side / 2))
        y0 = int(round((box.ymin + box.height / 2) * h - side / 2))
        side = int(round(side))
        # the crop may leave the image: pad with the border so the face stays centred
        M = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
        crop = cv2.warpAffine(rgb, M, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        pts = self._landmarks(self._crop_mesh.process(crop), side, side)
        return None if pts is None else pts + np.array([x0, y0, 0.0])

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) float64 pseudo-3D landmarks in pixels of an RGB uint8 (H, W, 3) image, or None."""
        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        h, w = rgb.shape[:2]
        pts = self._landmarks(self._mesh.process(rgb), w, h)
        return pts if pts is not None else self._via_detector(rgb)

    def video_frame(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks of one frame of a video or a live stream, or None: found on the whole
        frame, then found again in one upright square view around that face (`ensemble` with
        VIDEO_VIEW). MediaPipe on the whole frame sees the face at whatever size and roll the frame
        gives it; seen upright at a fixed size it places the landmarks where the portrait's pixels
        carried by them match the frames better: self-reenactment of the shipped model gained 0.10 dB
        on the 14 tuning videos and 0.57 dB on the 6 held-out ones (model card, twelfth session). They
        do not jitter less (RMS second difference of the stable points on LivePortrait d9: 0.52 px
        for the first look, 0.59 for the second; the smoothing takes that). One more MediaPipe run per
        frame (~7 ms)."""
        pts = self(rgb)
        return None if pts is None else self.ensemble(rgb, pts, *VIDEO_VIEW)

    def ensemble(self, rgb: np.ndarray, pts: np.ndarray, angles=(-10.0, 0.0, 10.0), spans=(2.0, 2.4),
                 size: int = 384) -> np.ndarray:
        """Landmarks (478, 3) of a still image averaged over several views of the face found at
        `pts`: square crops around it, turned upright by its eye line, at a few in-plane rotations and zooms, each resized to `size`
        px. MediaPipe's landmarks wobble by ~1-2 % in scale and ~0.5 deg in roll with how the face
        sits in its input; a portrait is tracked once and fixes the identity template, so it is
        worth the few extra runs (~50 ms each)."""
        import cv2

        rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        xy = pts[:MESH_POINTS, :2]
        centre = (xy.min(0) + xy.max(0)) / 2
        extent = float((xy.max(0) - xy.min(0)).max())
        eyes = pts[list(LEFT_EYE_CORNERS)].mean(0) - pts[list(RIGHT_EYE_CORNERS)].mean(0)
        upright = float(np.degrees(np.arctan2(eyes[1], eyes[0])))  # cv2 angles turn counter-clockwise on screen
        views = []
        for angle in (upright + a for a in angles):
            for span in spans:
                s = size / (span * extent)
                # source -> view: rotate by `angle` about the face centre, scale, centre in the view
                M = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, s)
                M[:, 2] += (size - 1) / 2 - centre
                view = cv2.warpAffine(rgb, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                got = self._landmarks(self._crop_mesh.process(view), size, size)
                if got is None:
                    continue
                A = np.linalg.inv(np.vstack([M, [0.0, 0.0, 1.0]]))
                back = got.copy()
                back[:, :2] = got[:, :2] @ A[:2, :2].T + A[:2, 2]
                back[:, 2] = got[:, 2] / s
                views.append(back)
        return np.mean(views, axis=0) if views else pts

    def close(self) -> None:
        self._mesh.close()
        self._crop_mesh.close()
        self._detector.close()

    def __enter__(self) -> "FaceMeshRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
