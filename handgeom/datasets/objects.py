"""The objects of hand-object samples: procedural closed shapes for the synthetic scenes (eight,
with random proportions, 4 to 15 cm across, as fixed-size triangle meshes) and the class
vocabulary shared with the real datasets' YCB objects.

``OBJECT_CLASSES`` is every sample's ``object_class`` vocabulary: the procedural ``SHAPES``, then
the 21 ``YCB_OBJECTS`` of the YCB-Video set, which HO-3D names by ``objName`` and DexYCB by
``ycb_ids`` (1-based indices into ``YCB_OBJECTS``). One vocabulary means one class embedding
serves a network trained on any of them.

Every mesh is closed and outward-oriented. Two topologies build all of them: a latitude-longitude
sphere (a ring of ``SEGMENTS`` vertices per latitude, a vertex at each pole) whose rings are placed
by a profile or a radial function, and a torus grid. The mug is a closed body and a handle torus
whose ends are buried in it: a union of two closed shells, which the inside test (non-zero
winding) treats as one solid. All eight have the same ``OBJECT_FACES`` faces (the mug's body has
fewer rings, for its handle), so a batch of them needs no padding faces, which would cost a BVH
and its rays as much as real ones; the torus's two missing vertices are copies of vertex 0.
:func:`pad_mesh` fills meshes to common sizes with copies of vertex 0 and faces ``(0, 0, 0)`` (the
readers' YCB meshes): zero-area faces are never hit by a ray and never closer than the surface
they sit on.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SHAPES", "YCB_OBJECTS", "OBJECT_CLASSES", "OBJECT_VERTS", "OBJECT_FACES", "make_object", "pad_mesh"]

SHAPES = ("box", "cylinder", "sphere", "ellipsoid", "capsule", "torus", "bottle", "mug")
YCB_OBJECTS = ("002_master_chef_can", "003_cracker_box", "004_sugar_box", "005_tomato_soup_can", "006_mustard_bottle",
               "007_tuna_fish_can", "008_pudding_box", "009_gelatin_box", "010_potted_meat_can", "011_banana",
               "019_pitcher_base", "021_bleach_cleanser", "024_bowl", "025_mug", "035_power_drill", "036_wood_block",
               "037_scissors", "040_large_marker", "051_large_clamp", "052_extra_large_clamp", "061_foam_brick")
OBJECT_CLASSES = SHAPES + YCB_OBJECTS
# Every shape has the same 960 faces and 482 vertices (the torus 480; see the module docstring):
SEGMENTS = 24      # vertices per ring of the latitude-longitude sphere
RINGS = 21         # sphere: RINGS - 1 rings between the poles, 2 SEGMENTS (RINGS - 1) faces
TORUS = (40, 12)   # torus: segments around its axis and around its tube (the same face count)
MUG_RINGS = 16     # the mug's body (a sphere of MUG_RINGS - 1 rings) and its handle, a torus:
HANDLE = (15, 8)   # 2 SEGMENTS (MUG_RINGS - 1) + 2 * 15 * 8 = 960 faces


def _sphere_faces(rings: int = RINGS) -> torch.Tensor:
    """Faces of the latitude-longitude sphere of ``rings - 1`` rings: vertex 0 the bottom pole,
    then the rings, then the top pole; outward when ring ``k`` is above ring ``k - 1`` and each
    ring turns counter-clockwise seen from the top."""
    n, s = rings - 1, SEGMENTS
    j = torch.arange(s)
    faces = [torch.stack([torch.zeros_like(j), 1 + (j + 1) % s, 1 + j], 1)]
    for k in range(n - 1):
        a, b = 1 + k * s + j, 1 + k * s + (j + 1) % s
        faces += [torch.stack([a, b, b + s], 1), torch.stack([a, b + s, a + s], 1)]
    top = 1 + n * s
    faces.append(torch.stack([torch.full_like(j, top), 1 + (n - 1) * s + j, 1 + (n - 1) * s + (j + 1) % s], 1))
    return torch.cat(faces)


def _torus_faces(grid: tuple[int, int] = TORUS) -> torch.Tensor:
    major, minor = grid
    i, j = torch.meshgrid(torch.arange(major), torch.arange(minor), indexing="ij")
    a = i * minor + j
    b = ((i + 1) % major) * minor + j
    c = ((i + 1) % major) * minor + (j + 1) % minor
    d = i * minor + (j + 1) % minor
    return torch.cat([torch.stack([a, b, c], -1).view(-1, 3), torch.stack([a, c, d], -1).view(-1, 3)])


def _sphere_dirs() -> torch.Tensor:
    """Unit directions of the sphere's vertices, ``[2 + (RINGS - 1) SEGMENTS, 3]``."""
    polar = torch.arange(1, RINGS, dtype=torch.float64) * math.pi / RINGS  # from the bottom pole
    phi = torch.arange(SEGMENTS, dtype=torch.float64) * 2 * math.pi / SEGMENTS
    z = -torch.cos(polar)[:, None].expand(-1, SEGMENTS)
    r = torch.sin(polar)[:, None]
    rings = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).reshape(-1, 3)
    pole = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.cat([-pole, rings, pole])


def _revolution(profile: torch.Tensor) -> torch.Tensor:
    """Sphere-topology vertices of a surface of revolution about z: ``profile [RINGS + 1, 2]``
    gives ``(radius, z)`` from the bottom pole (radius 0) to the top pole (radius 0)."""
    phi = torch.arange(SEGMENTS, dtype=torch.float64) * 2 * math.pi / SEGMENTS
    r, z = profile[1:-1, 0:1], profile[1:-1, 1:2].expand(-1, SEGMENTS)
    rings = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).reshape(-1, 3)
    poles = torch.nn.functional.pad(profile[[0, -1], 1:], (2, 0))  # (0, 0, z) of each pole
    return torch.cat([poles[:1], rings, poles[1:]])


def _polyline(points: list[tuple[float, float]], n: int) -> torch.Tensor:
    """``n`` points evenly spaced by arc length along a polyline ``[(r, z), ...]``."""
    p = torch.tensor(points, dtype=torch.float64)
    seg = (p[1:] - p[:-1]).norm(dim=1)
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    s = torch.linspace(0, float(cum[-1]), n, dtype=torch.float64)
    k = torch.bucketize(s, cum[1:-1])
    w = ((s - cum[k]) / seg[k]).clamp(0, 1)[:, None]
    return p[k] + w * (p[k + 1] - p[k])


def _rounded_profile(radius: float, half_height: float, rounding: float, n: int) -> list[tuple[float, float]]:
    """Cylinder profile with edges rounded by ``rounding`` (a quarter circle of points per edge)."""
    arc = [(math.sin(a), math.cos(a)) for a in torch.linspace(0, math.pi / 2, n).tolist()]
    bottom = [(radius - rounding + rounding * s, -half_height + rounding - rounding * c) for s, c in arc]
    top = [(radius - rounding + rounding * c, half_height - rounding + rounding * s) for s, c in arc]
    return [(0.0, -half_height)] + bottom + top + [(0.0, half_height)]


def _torus(major: float, minor: float, grid: tuple[int, int] = TORUS) -> torch.Tensor:
    u = torch.arange(grid[0], dtype=torch.float64) * 2 * math.pi / grid[0]
    v = torch.arange(grid[1], dtype=torch.float64) * 2 * math.pi / grid[1]
    u, v = torch.meshgrid(u, v, indexing="ij")
    ring = major + minor * torch.cos(v)
    return torch.stack([ring * torch.cos(u), ring * torch.sin(u), minor * torch.sin(v)], -1).reshape(-1, 3)


SPHERE_FACES = _sphere_faces()
TORUS_FACES = _torus_faces()
MUG_FACES = torch.cat([_sphere_faces(MUG_RINGS), _torus_faces(HANDLE) + 2 + (MUG_RINGS - 1) * SEGMENTS])
OBJECT_VERTS = 2 + (RINGS - 1) * SEGMENTS
OBJECT_FACES = SPHERE_FACES.shape[0]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _shape(name: str, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpadded ``(verts, faces)`` of one object with unit largest extent (about 1), centred."""
    if name == "sphere":
        return _sphere_dirs() * 0.5, SPHERE_FACES
    if name == "ellipsoid":
        axes = torch.tensor([0.5, _uniform(g, 0.2, 0.45), _uniform(g, 0.15, 0.4)], dtype=torch.float64)
        return _sphere_dirs() * axes, SPHERE_FACES
    if name == "box":  # a superellipsoid with exponent 10: a box with slightly rounded edges
        half = torch.tensor([0.5, _uniform(g, 0.15, 0.5), _uniform(g, 0.1, 0.5)], dtype=torch.float64)
        d = _sphere_dirs()
        return d / ((d.abs() / half) ** 10).sum(1, keepdim=True) ** 0.1, SPHERE_FACES
    if name == "cylinder":
        radius, half = _uniform(g, 0.12, 0.5), 0.5
        profile = _polyline(_rounded_profile(radius, half, 0.15 * radius, 4), RINGS + 1)
        return _revolution(profile), SPHERE_FACES
    if name == "capsule":
        radius = _uniform(g, 0.12, 0.3)
        polar = torch.linspace(0, math.pi, RINGS + 1, dtype=torch.float64)
        cap = torch.where(polar < math.pi / 2, -1.0, 1.0) * (0.5 - radius)  # hemispheres apart by the shaft
        profile = torch.stack([radius * torch.sin(polar), -radius * torch.cos(polar) + cap], 1)
        return _revolution(profile), SPHERE_FACES
    if name == "bottle":
        r, neck = _uniform(g, 0.14, 0.22), _uniform(g, 0.05, 0.08)
        body, shoulder = _uniform(g, 0.05, 0.2), _uniform(g, 0.25, 0.32)
        points = ([(0.0, -0.5)] + _rounded_profile(r, 0.5, 0.1 * r, 3)[1:4]
                  + [(r, body), (neck, shoulder), (neck, 0.47), (neck * 0.8, 0.5), (0.0, 0.5)])
        return _revolution(_polyline(points, RINGS + 1)), SPHERE_FACES
    if name == "torus":
        minor = _uniform(g, 0.06, 0.15)
        return _torus(0.5 - minor, minor), TORUS_FACES
    if name == "mug":
        r, half = _uniform(g, 0.25, 0.33), 0.4
        body = _revolution(_polyline(_rounded_profile(r, half, 0.1 * r, 3), MUG_RINGS + 1))
        minor, major = 0.05, 0.2
        handle = _torus(major, minor, HANDLE)[:, [0, 2, 1]]  # the ring in the xz plane
        handle[:, 0] += r + major - 2.2 * minor  # both ends sunk into the body's wall
        verts = torch.cat([body, handle])
        return verts - (verts.amax(0) + verts.amin(0)) / 2, MUG_FACES
    raise ValueError(f"make_object: unknown shape {name!r}; known: {SHAPES}")


def make_object(name: str, size: float, generator: torch.Generator | None = None,
                pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed object ``(verts [V, 3] float64 metres, faces [F, 3] int64)``, centred on its
    bounding box, its largest extent ``size`` metres, proportions drawn with ``generator``.
    ``pad`` fills it to ``OBJECT_VERTS`` / ``OBJECT_FACES`` (see the module docstring)."""
    if not 0 < size < float("inf"):
        raise ValueError(f"make_object: size must be a positive length in metres, got {size}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    verts, faces = _shape(name, g)
    verts = verts * (size / float((verts.amax(0) - verts.amin(0)).max()))
    return pad_mesh(verts, faces.long(), OBJECT_VERTS, OBJECT_FACES) if pad else (verts, faces.long())


def pad_mesh(verts: torch.Tensor, faces: torch.Tensor, num_verts: int, num_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mesh ``(verts [V, 3], faces [F, 3])`` filled to ``num_verts`` vertices and ``num_faces``
    faces with copies of vertex 0 and faces ``(0, 0, 0)`` (see the module docstring)."""
    if verts.shape[0] > num_verts or faces.shape[0] > num_faces:
        raise ValueError(f"pad_mesh: a mesh of {verts.shape[0]} vertices and {faces.shape[0]} faces does not fit in "
                         f"{num_verts} and {num_faces}")
    return (torch.cat([verts, verts[:1].expand(num_verts - verts.shape[0], 3)]),
            torch.cat([faces, faces.new_zeros(num_faces - faces.shape[0], 3)]))
