"""NumPy rasterizer for the tabletop scene: flat-shaded boxes seen through a pinhole camera.

Every object is a box; each visible face is a convex quad filled with one color (top faces
brighter than sides), hidden surfaces resolved with a z-buffer. Rasterization is vectorized over
all faces of a call and over the pixels of their joint bounding box: edge functions (half-plane
tests) give coverage, the face's plane gives exact perspective depth along each pixel's ray.
The table is drawn once per camera and the resting objects (plates, blocks not carried) into a
cached layer whenever they change (reset, grasp, release); each frame copies that layer, darkens
it under the gripper and the carried block (light straight from above) and draws only the
moving parts, so a frame costs a few dozen small NumPy calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.base import Camera

BACKGROUND = (70, 74, 84)
TABLE_COLOR = (190, 172, 140)
TABLE_HALF = (0.36, 0.32)  # table surface half extents (x, y), centered at the origin
PALM_COLOR = (35, 35, 40)
FINGER_COLOR = (120, 120, 132)
SHADOW = 0.55  # color factor in shadow
LIGHT = np.array([0.25, -0.35, 1.0]) / np.linalg.norm([0.25, -0.35, 1.0])
# gripper geometry in the EE frame (EE = point between the fingertips; fingers open along x)
FINGER_HALF = (0.006, 0.012, 0.0275)  # finger box half extents; its bottom is at the EE point
PALM_HALF = (0.062, 0.016, 0.01)
PALM_Z = 0.065  # palm center height above the EE point
LABEL_BACKGROUND, LABEL_TABLE, LABEL_GRIPPER = -1, 0, 1  # objects use 2 + their index

# unit cube corners and its faces (outward normals); corner index bits = (x, y, z) > 0
_CORNERS = np.array([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], float) * 2 - 1
_FACES = np.array(
    [[0, 2, 6, 4], [1, 5, 7, 3], [0, 4, 5, 1], [2, 3, 7, 6], [0, 1, 3, 2], [4, 6, 7, 5]]
)
_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], float)


@dataclass
class Faces:
    """A batch of convex quads. verts (F, 4, 3) world; normals (F, 3); colors (F, 3) RGB float
    already shaded; labels (F,) int; top (F,) bool, True for upward faces (receive shadows)."""

    verts: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    labels: np.ndarray
    top: np.ndarray

    @staticmethod
    def concat(parts: list[Faces]) -> Faces:
        return Faces(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("verts", "normals", "colors", "labels", "top")
            )
        )


_NEXT = [1, 2, 3, 0]  # next corner of a quad
_FACE_CORNERS = _CORNERS[_FACES]  # (6, 4, 3) unit cube face corners
_UPRIGHT_SHADE = 0.45 + 0.55 * np.clip(_NORMALS @ LIGHT, 0.0, None)  # (6,) unrotated faces
_UPRIGHT_TOP = _NORMALS[:, 2] > 0.99


def _shade(normals: np.ndarray) -> np.ndarray:
    """(F,) brightness of faces with world normals (F, 3): ambient + Lambert toward LIGHT."""
    return 0.45 + 0.55 * np.clip(normals @ LIGHT, 0.0, None)


def box_faces(center, half, color, label: int) -> Faces:
    """The 6 faces of an axis-aligned box.

    Args:
        center: (3,) box center; half: (3,) half extents; color: RGB 0..255; label: pixel label.
    """
    verts = _FACE_CORNERS * np.asarray(half, float) + np.asarray(center, float)  # (6, 4, 3)
    colors = _UPRIGHT_SHADE[:, None] * np.asarray(color, float)
    return Faces(verts, _NORMALS, colors, np.full(6, label), _UPRIGHT_TOP)


def _gripper_template() -> tuple[np.ndarray, ...]:
    """Gripper faces in the EE frame at zero opening, the x-shift sign of each vertex per unit
    opening, base colors; fingers first (12 faces), then the palm (6 faces)."""
    boxes = [
        ((-FINGER_HALF[0], 0.0, FINGER_HALF[2]), FINGER_HALF, FINGER_COLOR, -1.0),
        ((FINGER_HALF[0], 0.0, FINGER_HALF[2]), FINGER_HALF, FINGER_COLOR, 1.0),
        ((0.0, 0.0, PALM_Z), PALM_HALF, PALM_COLOR, 0.0),
    ]
    verts = np.concatenate([_FACE_CORNERS * np.asarray(h) + np.asarray(c) for c, h, _, _ in boxes])
    shift = np.zeros(verts.shape)
    shift[..., 0] = np.repeat([sgn for *_, sgn in boxes], 6)[:, None]
    colors = np.repeat(np.asarray([col for _, _, col, _ in boxes], float), 6, axis=0)
    return verts, shift, np.tile(_NORMALS, (len(boxes), 1)), colors


_GRIP_VERTS, _GRIP_SHIFT, _GRIP_NORMALS, _GRIP_COLORS = _gripper_template()
_GRIP_LABELS = np.full(len(_GRIP_VERTS), LABEL_GRIPPER)


def gripper_faces(
    ee_pos: np.ndarray, rot: np.ndarray, opening: float, *, fingers_only: bool = False
) -> Faces:
    """Two fingers (bottoms at the EE point, inner faces ``opening`` from its axis) and the palm
    bar joining them (left out with ``fingers_only``).

    Args:
        ee_pos: (3,) EE point; rot: (3, 3) EE orientation; opening: finger half opening.
    """
    n = 12 if fingers_only else len(_GRIP_VERTS)
    local = _GRIP_VERTS[:n] + opening * _GRIP_SHIFT[:n]  # (F, 4, 3)
    verts = local @ rot.T + ee_pos
    normals = _GRIP_NORMALS[:n] @ rot.T
    colors = _shade(normals)[:, None] * _GRIP_COLORS[:n]
    return Faces(verts, normals, colors, _GRIP_LABELS[:n], normals[:, 2] > 0.99)


def look_at_camera(eye, target, *, fovy_deg: float, size: int, flip180: bool = False) -> Camera:
    """A square OpenCV pinhole camera at ``eye`` looking at ``target`` with world z up.

    Intrinsics as robosuite: f = 0.5 * size / tan(fovy / 2), principal point at the image center
    (pixel centers at integer coordinates).
    """
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    fwd = target - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    return _camera_from_axes(eye, right, down, fwd, fovy_deg=fovy_deg, size=size, flip180=flip180)


def _camera_from_axes(
    eye, right, down, fwd, *, fovy_deg: float, size: int, flip180: bool = False
) -> Camera:
    r_wc = np.stack([right, down, fwd])  # rows: camera axes in world
    ext = np.eye(4)
    ext[:3, :3] = r_wc
    ext[:3, 3] = -r_wc @ eye
    f = 0.5 * size / np.tan(np.deg2rad(fovy_deg) / 2)
    c = (size - 1) / 2
    k = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    return Camera(k, ext, size, size, flip180)


def wrist_camera(ee_pos: np.ndarray, rot: np.ndarray, *, size: int) -> Camera:
    """Camera fixed to the hand behind the palm, looking along the fingers (EE -z)."""
    eye = ee_pos + rot @ np.array([0.0, -0.05, 0.11])
    return _camera_from_axes(eye, rot[:, 0], -rot[:, 1], -rot[:, 2], fovy_deg=70.0, size=size)


class Rasterizer:
    """Draws ``Faces`` into color / depth / label / surface-height buffers of one camera.

    The camera's 180-degree flip is applied by the caller to the finished image, so buffers are
    always in the unflipped camera's pixel coordinates.
    """

    def __init__(self, camera: Camera):
        self.h, self.w = camera.height, camera.width
        k = camera.intrinsics
        self.fx, self.fy, self.cx, self.cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        v, u = np.mgrid[0 : self.h, 0 : self.w].astype(np.float64)  # (H, W)
        self.u, self.v = u.astype(np.float32), v.astype(np.float32)  # pixel centers
        self.rx = (u - self.cx) / self.fx  # (H, W) ray direction x / z
        self.ry = (v - self.cy) / self.fy
        self.set_pose(camera.extrinsics)

    def set_pose(self, extrinsics: np.ndarray) -> None:
        self.r = extrinsics[:3, :3]
        self.t = extrinsics[:3, 3]
        self.eye = -self.r.T @ self.t

    def new_buffers(self) -> dict[str, np.ndarray]:
        """Empty buffers: color (H, W, 3) float32, depth (H, W), label (H, W) int16 and height
        (H, W): the surface height at pixels of upward faces, inf elsewhere."""
        return {
            "color": np.broadcast_to(
                np.asarray(BACKGROUND, np.float32), (self.h, self.w, 3)
            ).copy(),
            "depth": np.full((self.h, self.w), np.inf),
            "label": np.full((self.h, self.w), LABEL_BACKGROUND, np.int16),
            "height": np.full((self.h, self.w), np.inf),
        }

    def draw(self, faces: Faces, buf: dict[str, np.ndarray]) -> tuple[slice, slice] | None:
        """Z-buffer ``faces`` into ``buf`` in place (skips back faces and faces behind the camera).

        Returns:
            the pixel window (rows, cols) that was considered, or None if nothing was on screen.
        """
        v0w = faces.verts[:, 0]  # (F, 3) one vertex per face
        keep = np.einsum("fk,fk->f", faces.normals, self.eye - v0w) > 1e-9  # facing the camera
        cam = faces.verts[keep] @ self.r.T + self.t  # (F, 4, 3)
        z = cam[..., 2]
        ok = z.min(axis=1) > 1e-3
        if not ok.all():
            cam, z = cam[ok], z[ok]
        if len(cam) == 0:
            return None
        sel = np.flatnonzero(keep)[ok]
        x = self.fx * cam[..., 0] / z + self.cx  # (F, 4) pixel coordinates of the corners
        y = self.fy * cam[..., 1] / z + self.cy
        sub = self._window(x, y)
        if sub is None:
            return None
        us = self.u[sub].reshape(1, 1, -1)  # (1, 1, Q)
        vs = self.v[sub].reshape(1, 1, -1)
        x1, y1 = x[:, _NEXT], y[:, _NEXT]
        area = np.sum(x * y1 - x1 * y, axis=1)  # (F,) twice the signed area
        sgn = np.sign(area)[:, None]
        ex, ey = (x1 - x) * sgn, (y1 - y) * sgn  # edge vectors, oriented so inside is >= 0
        c = ey * x - ex * y
        ex, ey, c = (t.astype(np.float32)[..., None] for t in (ex, ey, c))  # (F, 4, 1)
        e = ex * vs - ey * us + c  # (F, 4, Q) edge functions (float32: pixel-scale values)
        inside = (e.min(axis=1) >= 0) & (area != 0)[:, None]  # (F, Q) pixel centers inside
        n_c = faces.normals[sel] @ self.r.T  # (F, 3) normals in camera frame
        d_c = np.einsum("fk,fk->f", n_c, cam[:, 0])  # plane: n_c . X = d_c (< 0 when facing)
        denom = n_c[:, :1] * self.rx[sub].reshape(1, -1) + n_c[:, 1:2] * self.ry[sub].reshape(1, -1)
        denom += n_c[:, 2:3]  # (F, Q) = n_c . ray
        inside &= denom < -1e-9  # the ray meets the face's plane from its front
        depth = np.where(inside, d_c[:, None] / np.minimum(denom, -1e-9), np.inf)  # (F, Q)
        best = np.argmin(depth, axis=0)  # (Q,)
        dbest = depth[best, np.arange(len(best))]
        cur = buf["depth"][sub]
        win = (dbest < cur.reshape(-1)).reshape(cur.shape)  # (h, w)
        if not win.any():
            return sub
        fi = sel[best.reshape(cur.shape)[win]]
        cur[win] = dbest.reshape(cur.shape)[win]
        buf["color"][sub][win] = faces.colors[fi]
        buf["label"][sub][win] = faces.labels[fi]
        buf["height"][sub][win] = np.where(faces.top[fi], faces.verts[fi, 0, 2], np.inf)
        return sub

    def _window(self, x: np.ndarray, y: np.ndarray) -> tuple[slice, slice] | None:
        """Pixel window (rows, cols) covering pixel coordinates x, y; None if off the image."""
        u0, u1 = max(0, int(np.floor(x.min()))), min(self.w, int(np.ceil(x.max())) + 1)
        v0, v1 = max(0, int(np.floor(y.min()))), min(self.h, int(np.ceil(y.max())) + 1)
        if u0 >= u1 or v0 >= v1:
            return None
        return slice(v0, v1), slice(u0, u1)

    def window_of(self, points: np.ndarray) -> tuple[slice, slice] | None:
        """Pixel window covering world points (..., 3) in front of the camera; None if none is."""
        cam = points.reshape(-1, 3) @ self.r.T + self.t
        cam = cam[cam[:, 2] > 1e-3]
        if len(cam) == 0:
            return None
        return self._window(
            self.fx * cam[:, 0] / cam[:, 2] + self.cx, self.fy * cam[:, 1] / cam[:, 2] + self.cy
        )

    def world_xy(
        self, depth: np.ndarray, sub: tuple[slice, slice] = (slice(None), slice(None))
    ) -> np.ndarray:
        """World (x, y) of the visible surface point of each pixel in window ``sub``.

        Args:
            depth: (h, w) camera-frame depth of the window's pixels (inf gives nan).
        Returns:
            (h, w, 2).
        """
        with np.errstate(invalid="ignore"):
            pc = np.stack([self.rx[sub] * depth, self.ry[sub] * depth, depth], axis=-1)  # (h, w, 3)
            return ((pc - self.t) @ self.r)[..., :2]  # X_world = R^T (X_cam - t)


def shadow_mask(height: np.ndarray, xy: np.ndarray, casters: list[tuple]) -> np.ndarray:
    """Pixels of upward surfaces lying under a caster (light straight from above).

    Args:
        height: (H, W) surface height of upward faces, inf elsewhere.
        xy: (H, W, 2) world x, y of each pixel.
        casters: (xmin, xmax, ymin, ymax, bottom_z) footprints.
    Returns:
        (H, W) bool.
    """
    mask = np.zeros(height.shape, bool)
    x, y = xy[..., 0], xy[..., 1]
    for x0, x1, y0, y1, zb in casters:
        mask |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & (height < zb - 1e-4)
    return mask


def shadow_volume(casters: list[tuple]) -> np.ndarray:
    """(8, 3) corners of a box holding every caster's shadow: their joint footprint, from the
    table (z = 0) up to the highest caster bottom."""
    x0, y0 = min(c[0] for c in casters), min(c[2] for c in casters)
    x1, y1 = max(c[1] for c in casters), max(c[3] for c in casters)
    z1 = max(c[4] for c in casters)
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (0.0, z1)])


def footprint(faces: Faces) -> tuple:
    """(xmin, xmax, ymin, ymax, bottom_z) of a group of faces, as a shadow caster."""
    v = faces.verts.reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]), float(lo[2]))


def table_faces() -> Faces:
    """The table top at z = 0 (one upward quad)."""
    hx, hy = TABLE_HALF
    verts = np.array([[[-hx, -hy, 0.0], [hx, -hy, 0.0], [hx, hy, 0.0], [-hx, hy, 0.0]]])
    return Faces(
        verts,
        np.array([[0.0, 0.0, 1.0]]),
        np.asarray([TABLE_COLOR], float),
        np.array([LABEL_TABLE]),
        np.array([True]),
    )


class SceneRenderer:
    """Renders the tabletop from one fixed camera, caching what rests between frames.

    Call ``set_static(faces, casters)`` whenever resting objects change (reset, grasp, release)
    and ``render(moving, casters)`` each frame.
    """

    def __init__(self, camera: Camera):
        self.camera = camera
        self.raster = Rasterizer(camera)
        self._table = self.raster.new_buffers()
        self.raster.draw(table_faces(), self._table)
        self._table["xy"] = self.raster.world_xy(self._table["depth"])
        self._static: dict[str, np.ndarray] | None = None

    def set_static(self, objects: list[Faces], casters: list[tuple]) -> None:
        """Draw the resting objects (one ``Faces`` each; the table is drawn once) and their
        shadows into the cached layer. Each object gets its own small pixel window."""
        buf = {k: v.copy() for k, v in self._table.items()}
        for faces in objects:
            sub = self.raster.draw(faces, buf)
            if sub is not None:
                buf["xy"][sub] = self.raster.world_xy(buf["depth"][sub], sub)
        sub = self.raster.window_of(shadow_volume(casters)) if casters else None
        if sub is not None:
            buf["color"][sub][shadow_mask(buf["height"][sub], buf["xy"][sub], casters)] *= SHADOW
        self._static = buf

    def render(self, moving: Faces, casters: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """One frame: the cached layer, shadows of ``casters`` on it, then ``moving`` faces.

        Returns:
            image (H, W, 3) uint8 and labels (H, W) int16, both flipped if the camera says so.
        """
        if self._static is None:
            raise RuntimeError("SceneRenderer.render called before set_static")
        st = self._static
        buf = {k: st[k].copy() for k in ("color", "depth", "label", "height")}
        sub = self.raster.window_of(shadow_volume(casters)) if casters else None
        if sub is not None:  # shadows fall inside the boxes from the casters down to the table
            buf["color"][sub][shadow_mask(st["height"][sub], st["xy"][sub], casters)] *= SHADOW
        self.raster.draw(moving, buf)
        img = buf["color"].astype(np.uint8)
        lab = buf["label"]
        if self.camera.flip180:
            img, lab = img[::-1, ::-1].copy(), lab[::-1, ::-1].copy()
        return img, lab


def render_once(raster: Rasterizer, groups: list[Faces], casters: list[tuple]) -> np.ndarray:
    """Draw a whole frame without a cached layer (for a moving camera such as the wrist's).

    Args:
        raster: the camera's rasterizer, posed for this frame.
        groups: one ``Faces`` per object (each drawn in its own pixel window).
        casters: shadow casters, as for ``SceneRenderer.render``.
    Returns:
        (H, W, 3) uint8 image.
    """
    buf = raster.new_buffers()
    for faces in groups:
        raster.draw(faces, buf)
    if casters:
        buf["color"][shadow_mask(buf["height"], raster.world_xy(buf["depth"]), casters)] *= SHADOW
    return buf["color"].astype(np.uint8)


__all__ = [
    "Faces",
    "Rasterizer",
    "SceneRenderer",
    "box_faces",
    "gripper_faces",
    "look_at_camera",
    "wrist_camera",
    "table_faces",
    "footprint",
    "shadow_mask",
    "shadow_volume",
    "render_once",
]
