"""Synthetic hand scenes: posed with :class:`~handgeom.hand.HandModel`, placed with handgeom's mesh
queries, rendered with its ray casting (:mod:`handgeom.render`).

Three map-style datasets, ``Cls(size, image_size=256, seed=0, **options)``, whose sample ``i`` is
a pure function of ``(seed, i)`` (its own random generator, seeded from both): the same on every
call, in every DataLoader worker and on every machine; a held-out split is another seed. A
DataLoader's batch is made together (``__getitems__``): one hand-model call, one BVH build and one
ray cast per step for the whole batch instead of per sample, each sample bit for bit as alone
(every step's answer for a sample depends on that sample alone, and each sample draws from its own
generator in the same order).

- :class:`SyntheticInteractingHands`: a right and a left hand in close interaction, intersection-free.
- :class:`SyntheticHandObject`: a right hand grasping one of eight procedural objects.
- :class:`SyntheticSingleHand`: one hand in a random pose and view.

Each scene is built in a world frame, then seen by a pinhole camera at a random distance, aimed at
the scene's centre, and cropped so that the scene fills ``CROP_FILL`` of a square crop (the
interacting-hands papers' preprocessing); ``K`` is the crop's. The camera looks from a uniformly
random direction (all of SO(3)), except for the interacting hands' default "body" arrangement,
which is InterHand2.6M's capture: the hands in front of a person, in natural orientations, seen
from a dome of cameras in front. Images: Lambertian shading with ambient light and a random light
direction, a random skin tone per hand (with lighter palms and pale nails) and colour per object,
over a procedural background (a colour gradient, value noise, random discs and boxes). Samples
are dicts with the keys of :mod:`handgeom.datasets.sample`.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.utils.data import Dataset

from handgeom.datasets.augment import photometric
from handgeom.datasets.objects import OBJECT_CLASSES, OBJECT_VERTS, SHAPES, make_object
from handgeom.datasets.sample import (HAND_LABELS, OBJECT_LABEL, SIDES, crop_camera, hand_entries, hand_model,
                                      hands_to_camera, render_labels, seeded_generator)
from handgeom.hand import HandParams
from handgeom.hand.kinematics import quaternion_to_matrix
from handgeom.hand.skeleton import BONES
from handgeom.ops.mesh import MeshBVH, points_inside_mesh, ray_mesh_intersect, signed_distance, surface_points
from handgeom.render import cast, interpolate, pinhole_rays, shade, vertex_normals

__all__ = ["SyntheticInteractingHands", "SyntheticHandObject", "SyntheticSingleHand"]

F64 = torch.float64
TIPS = (4, 8, 12, 16, 20)
SEPARATION_EPS = 1e-4  # metres beyond the last crossing, so that the separated points are strictly outside
SWEEPS = (8, 8, 4)  # candidates per sweep of a closing stage: brackets of 1/8, 1/64, 1/256 of its motion


def _uniform(g: torch.Generator, lo: float, hi: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=F64)


def _rotation(g: torch.Generator) -> torch.Tensor:
    """Uniformly random rotation (normalized Gaussian quaternion)."""
    return quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(4, generator=g, dtype=F64), dim=0))


def _unit(g: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(3, generator=g, dtype=F64), dim=0)


def _frame_with_z(n: torch.Tensor, spin: float) -> torch.Tensor:
    """A rotation whose z axis is ``n``, turned by ``spin`` radians about it."""
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=F64) if abs(float(n[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    x = torch.nn.functional.normalize(torch.linalg.cross(helper, n), dim=0)
    y = torch.linalg.cross(n, x)
    c, s = math.cos(spin), math.sin(spin)
    return torch.stack([c * x + s * y, -s * x + c * y, n], 1)


def _posed(side: str, params: HandParams, resolution: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The joints and vertices of hands ``params`` (any batch shape; each hand's bits as if alone)."""
    out = hand_model(side, resolution)(params)
    return out.joints, out.verts


def _separation(moving: torch.Tensor, fixed: torch.Tensor, moving_bvh: MeshBVH, fixed_bvh: MeshBVH,
                direction: torch.Tensor) -> torch.Tensor:
    """For each scene of a batch, the smallest shift ``s >= 0`` of its moving mesh along the unit
    ``direction [B, 3]`` beyond which no moving point (``[B, N, 3]``, at shift 0) is inside the
    fixed mesh and no fixed point (``[B, M, 3]``) inside the moving mesh, for every larger shift:
    exactly the largest last crossing of the rays from the moving points along ``direction`` with
    the fixed mesh, and from the fixed points along ``-direction`` with the moving mesh. Each last
    crossing is the first hit of the ray cast back from far beyond both meshes, so this is two
    calls of :func:`ray_mesh_intersect`. Returns ``[B]`` float64."""
    moving, fixed = moving.float(), fixed.float()
    # beyond both meshes: scene by scene, each a Python float, as one scene alone computes it
    far = torch.tensor([2 * float((both.amax(0) - both.amin(0)).norm()) + 1.0 for both in torch.cat([moving, fixed], 1)])
    far = far.float()[:, None]
    shift = torch.zeros(moving.shape[0])
    for points, bvh, d in ((moving, fixed_bvh, direction.float()), (fixed, moving_bvh, -direction.float())):
        origins = points + far[..., None] * d[:, None]
        t, _, _ = ray_mesh_intersect(origins, (-d)[:, None].expand_as(origins), None, bvh.faces, bvh=bvh)
        shift = torch.maximum(shift, (far - t).clamp_min(0).amax(1))
    return shift.double()


class _Scenes(Dataset):
    """Shared camera, rendering and sample assembly; subclasses build the world-frame scene."""

    tag = 0  # distinguishes the datasets' random streams

    def __init__(self, size: int, image_size: int = 256, seed: int = 0, *, resolution: str = "coarse",
                 supersample: int = 1, distance: tuple[float, float] = (0.3, 1.0), noise: bool = False,
                 transform=None):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{type(self).__name__}: size must be a non-negative int, got {size!r}")
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"{type(self).__name__}: image_size must be an int >= 8, got {image_size!r}")
        if not isinstance(supersample, int) or supersample < 1:
            raise ValueError(f"{type(self).__name__}: supersample must be a positive int, got {supersample!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative int, got {seed!r}")
        if not 0 < distance[0] <= distance[1]:
            raise ValueError(f"{type(self).__name__}: distance must be (near, far) metres with 0 < near <= far, "
                             f"got {distance}")
        self.size, self.image_size, self.seed = size, image_size, int(seed)
        self.resolution, self.supersample, self.distance, self.noise = resolution, supersample, distance, noise
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def generator(self, index: int) -> torch.Generator:
        """The random generator of sample ``index``, seeded from ``(dataset, seed, index)``."""
        return seeded_generator(self.tag, self.seed & 0xFFFFFFFF, self.seed >> 32, index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Samples ``indices``, made together (the DataLoader's batched fetch): the expensive steps
        (hand model, BVHs, ray casts, shading) run once for the batch, and each sample has the
        same bits as when made alone."""
        indices = [self._checked(index) for index in indices]
        if not indices:
            return []
        gs = [self.generator(index) for index in indices]
        samples = self.render(self.scenes(gs), gs)
        if self.transform is not None:
            samples = [self.transform(sample, index) for sample, index in zip(samples, indices)]
        return samples

    def _checked(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for size {self.size}")
        return index % self.size

    def scenes(self, gs: list[torch.Generator]) -> list[tuple[dict[str, HandParams],
                                                             dict[str, tuple[torch.Tensor, torch.Tensor]], tuple | None]]:
        """The scene of each sample's generator: world-frame hand parameters by side, the hands'
        ``(joints, verts)`` (the model's output for them) by side, and the object ``(verts, faces,
        class)`` or None."""
        raise NotImplementedError

    def camera(self, g: torch.Generator) -> torch.Tensor:
        """The world-to-camera rotation: uniformly random."""
        return _rotation(g)

    def annotations(self, index: int, views: int = 1) -> dict[str, torch.Tensor]:
        """Scene ``index`` without images, for networks whose inputs are keypoints: the hand keys
        (:func:`hand_entries`) and ``K`` of ``views`` cameras (stacked: ``[views, ...]``), each
        drawn as :meth:`camera` draws one; the first camera's are ``self[index]``'s values
        (before ``transform``). A view costs a small fraction of the scene."""
        index = self._checked(index)
        if not isinstance(views, int) or views < 1:
            raise ValueError(f"{type(self).__name__}.annotations: views must be a positive int, got {views!r}")
        g = self.generator(index)
        hands, posed, obj = self.scenes([g])[0]
        samples = [self._view(hands, posed, obj, g)[0] for _ in range(views)]
        return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def _view(self, hands: dict[str, HandParams], posed: dict[str, tuple[torch.Tensor, torch.Tensor]],
              obj: tuple | None, g: torch.Generator) -> tuple[dict[str, torch.Tensor], tuple, torch.Tensor, dict]:
        """The camera (see :meth:`camera`): the sample's hand keys and ``K`` in its crop, the
        world-to-camera ``(R, t)``, and in float64 the crop's ``K`` and the camera-frame ``posed``."""
        # a view direction and spin, at a random distance, aimed at the scene's centre
        points = torch.cat([v for _, v in posed.values()] + ([obj[0]] if obj else []))
        centre = (points.amin(0) + points.amax(0)) / 2
        R = self.camera(g)
        t = torch.tensor([0.0, 0.0, float(_uniform(g, *self.distance))], dtype=F64) - R @ centre
        K = crop_camera(torch.eye(3, dtype=F64), points @ R.T + t, self.image_size,
                        centre_shift=tuple(_uniform(g, -0.03, 0.03, (2,)).tolist()))
        hands_cam = {side: hands_to_camera(p, R, t) for side, p in hands.items()}
        posed_cam = {side: (j @ R.T + t, v @ R.T + t) for side, (j, v) in posed.items()}  # = the model's, moved
        sample = hand_entries(hands_cam, K, self.resolution, posed=posed_cam)
        sample["K"] = K.float()
        return sample, (R, t), K, posed_cam

    def render(self, scenes: list[tuple], gs: list[torch.Generator]) -> list[dict[str, torch.Tensor]]:
        """The samples of ``scenes`` (see :meth:`scenes`), each seen by its own camera."""
        samples, meshes, labels, albedo, Ks = [], [], [], [], []
        for (hands, posed, obj), g in zip(scenes, gs, strict=True):
            sample, (R, t), K, posed_cam = self._view(hands, posed, obj, g)
            scene, scene_labels = [], []
            for slot, side in enumerate(SIDES):
                if side in hands:
                    scene.append((posed_cam[side][1], hand_model(side, self.resolution).faces))
                    scene_labels.append(HAND_LABELS[slot])
            if obj is not None:
                verts, faces, cls = obj
                scene.append((verts @ R.T + t, faces))
                scene_labels.append(OBJECT_LABEL)
                sample.update(object_verts=scene[-1][0].float(), object_faces=faces,
                              object_pose=torch.cat([R, t[:, None]], 1).float(), object_class=torch.tensor(cls))
            albedo.append([_hand_albedo(_skin(g), SIDES[HAND_LABELS.index(lab)], self.resolution) if lab in HAND_LABELS
                           else _object_colour(g).float().expand(verts.shape[0], 3)
                           for (verts, _), lab in zip(scene, scene_labels)])
            samples.append(sample)
            meshes.append(scene)
            labels.append(scene_labels)
            Ks.append(K)
        Ks = torch.stack(Ks)
        frags, entries = render_labels(meshes, labels, Ks, self.image_size, self.resolution, albedo=albedo)
        shading = entries.pop("albedo"), entries.pop("normals")
        images = self._shade(meshes, albedo, Ks, frags, shading, gs)
        for b, sample in enumerate(samples):
            sample.update({key: value[b] for key, value in entries.items()}, image=images[b])
        return samples

    def _shade(self, meshes, albedo, Ks, frags, shading, gs) -> list[torch.Tensor]:
        """The images: the pixel centres' ``shading`` (interpolated albedo and normals of
        ``frags``), or with supersampling, those of ``s x s`` rays per pixel cast here."""
        size, s = self.image_size, self.supersample
        if s > 1:  # the image from s x s rays per pixel; the labels stay the pixel centres'
            meshes = [[(v.float(), f) for v, f in scene] for scene in meshes]
            frags = cast(meshes, torch.zeros(3), pinhole_rays(Ks, size, size, s).reshape(len(meshes), -1, 3).float())
            values = interpolate([[torch.cat([vertex_normals(v, f), c], 1) for c, (v, f) in zip(colours, scene, strict=True)]
                                  for colours, scene in zip(albedo, meshes, strict=True)], frags)
            shading = values[:, 3:], values[:, :3]
        colours, normals = shading
        normals = torch.nn.functional.normalize(normals, dim=-1)
        rays = (size * s) ** 2
        bounds = torch.searchsorted(frags.hits, torch.arange(len(gs) + 1) * rays).tolist()  # each scene's hits
        images = []
        for b, g in enumerate(gs):
            light = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, -1.0]) + 0.8 * _unit(g).float(), dim=0)
            ambient = float(_uniform(g, 0.25, 0.5))
            image = _background(size, g).permute(1, 2, 0)
            if s > 1:
                image = image.repeat_interleave(s, 0).repeat_interleave(s, 1)
            image = image.reshape(-1, 3).clone()  # the hits are written into it: not into the background
            hits, mine = frags.hits[bounds[b]:bounds[b + 1]], slice(bounds[b], bounds[b + 1])
            image[hits - b * rays] = shade(colours[mine], normals[mine], frags.dirs[hits], light, ambient)
            image = image.view(size, s, size, s, 3).mean((1, 3)).permute(2, 0, 1).clamp(0, 1).contiguous()
            images.append(photometric(image, g) if self.noise else image)
        return images


def _skin(g: torch.Generator) -> torch.Tensor:
    """A skin tone: between a light and a dark reference tone, with a little per-channel jitter."""
    light, dark = torch.tensor([0.96, 0.80, 0.69], dtype=F64), torch.tensor([0.36, 0.23, 0.16], dtype=F64)
    a = _uniform(g, 0, 1)
    return ((1 - a) * light + a * dark) * _uniform(g, 0.92, 1.08, (3,))


PALM_TINT, NAIL_TINT = torch.tensor([0.90, 0.66, 0.58]), torch.tensor([0.93, 0.80, 0.78])


def _hand_albedo(skin: torch.Tensor, side: str, resolution: str) -> torch.Tensor:
    """Per-vertex ``[V, 3]`` float32 albedo of a hand of tone ``skin``: lighter, pinker palms and
    pale nails, as real hands have. Without them an untextured hand is ambiguous under a mirror:
    the palm side of a right hand has the silhouette of the back of a left hand."""
    palm, nail = _hand_tones(side, resolution)
    colour = skin.float().expand(palm.shape[0], 3)
    colour = colour + 0.6 * palm[:, None] * (PALM_TINT - colour)
    return colour + 0.6 * nail[:, None] * (NAIL_TINT - colour)


@functools.lru_cache(maxsize=None)
def _hand_tones(side: str, resolution: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-vertex weights ``[V]`` of the palm and of the nails, from the rest pose: palmar where the
    vertex normal faces the way the fingertips move when the fingers flex; nails on the opposite
    side of the outer half of each distal segment."""
    model = hand_model(side, resolution)
    rest = model.rest_pose((), F64)
    flexed = model.rest_pose((), F64)
    flexed.angles = model.limits.double().mean(1)
    rest_out, flexed_out = model(rest), model(flexed)
    palmar = torch.nn.functional.normalize((flexed_out.joints - rest_out.joints)[list(TIPS)].mean(0), dim=0)
    facing = vertex_normals(rest_out.verts, model.faces) @ palmar  # [V]
    surface = model.surface
    palm_count = surface.palm_offsets.shape[0]
    distal = torch.tensor([b for b, (_, child) in enumerate(BONES) if child in TIPS])
    on_tip = torch.zeros(model.num_verts, dtype=torch.bool)
    on_tip[palm_count:] = torch.isin(surface.tube_bone, distal) & (surface.tube_s >= 0.4)
    return (2 * facing).clamp(0, 1).float(), (on_tip & (facing < -0.5)).float()


def _object_colour(g: torch.Generator) -> torch.Tensor:
    return _uniform(g, 0.05, 0.95, (3,))


def _background(size: int, g: torch.Generator) -> torch.Tensor:
    """``[3, size, size]`` float32: a colour gradient, plus value noise, plus a few discs and boxes."""
    line = torch.linspace(-1, 1, size)
    ys, xs = torch.meshgrid(line, line, indexing="ij")
    a, b = _uniform(g, 0, 1, (3, 1, 1)).float(), _uniform(g, 0, 1, (3, 1, 1)).float()
    angle = float(_uniform(g, 0, 2 * math.pi))
    ramp = ((math.cos(angle) * xs + math.sin(angle) * ys + 1) / 2).clamp(0, 1)
    image = a + (b - a) * ramp
    cells = int(torch.randint(3, 12, (), generator=g))
    noise = torch.nn.functional.interpolate(torch.rand(1, 3, cells, cells, generator=g), size=(size, size),
                                            mode="bilinear", align_corners=False)[0]
    image = image + float(_uniform(g, 0, 0.4)) * (noise - 0.5)
    n = int(torch.randint(0, 6, (), generator=g))
    shape = torch.rand(n, 6, generator=g, dtype=F64)  # centre x, y, radius, disc or box, box aspect, -
    colour = torch.rand(n, 3, generator=g)
    centre, r, aspect = (2 * shape[:, :2] - 1).float(), (0.05 + 0.45 * shape[:, 2]).float(), (0.3 + 1.2 * shape[:, 4]).float()
    for k in range(n):  # later shapes on top
        dx, dy = line - centre[k, 0], (line - centre[k, 1])[:, None]  # separable: one [size, size] test per shape
        covered = (dx ** 2 + dy ** 2 < r[k] ** 2 if shape[k, 3] < 0.5
                   else (dx.abs() < r[k]) & (dy.abs() < r[k] * aspect[k]))
        image = torch.where(covered, colour[k, :, None, None], image)
    return image.clamp(0, 1)


def _cone(g: torch.Generator, axis: torch.Tensor, degrees: float) -> torch.Tensor:
    """A unit vector uniformly random within ``degrees`` of the unit ``axis``."""
    cos = 1 - (1 - math.cos(math.radians(degrees))) * float(torch.rand((), generator=g, dtype=F64))
    return _frame_with_z(axis, float(_uniform(g, 0, 2 * math.pi))) @ torch.tensor(
        [math.sqrt(1 - cos * cos), 0.0, cos], dtype=F64)


def _frame(y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The rotation whose y axis is ``y`` and whose z axis is ``z`` made orthogonal to it."""
    y = torch.nn.functional.normalize(y, dim=0)
    z = torch.nn.functional.normalize(z - (z @ y) * y, dim=0)
    return torch.stack([torch.linalg.cross(y, z), y, z], 1)


# The body frame of the "body" arrangement: x the person's right, y down, z forward.
RIGHT, DOWN, FORWARD = torch.eye(3, dtype=F64)
BODY_MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=F64))  # the person's right <-> left


def _body_rotation(g: torch.Generator) -> torch.Tensor:
    """A right hand's orientation in front of the body: the fingers (hand y) within 50 degrees of
    forward-and-inward, and the forearm's roll from palm down (-10 degrees) through palm inward
    (90) to palm up (180). The left hand's is its mirror, ``BODY_MIRROR R BODY_MIRROR``."""
    fingers = _cone(g, torch.nn.functional.normalize(FORWARD - 0.5 * RIGHT, dim=0), 50.0)
    roll = math.radians(float(_uniform(g, -10.0, 180.0)))
    return _frame(fingers, -math.cos(roll) * DOWN + math.sin(roll) * RIGHT)  # z: the back of the hand


def _sample_hand(side: str, g: torch.Generator, resolution: str) -> HandParams:
    """A random pose from the hand model's sampler, random rotation, bone lengths jittered by 5 %
    and a random size (scale 0.85-1.1), at the origin."""
    params = hand_model(side, resolution).sample_poses(1, g, global_rotation=True, length_jitter=0.05, dtype=F64)[0]
    params.scale = _uniform(g, 0.85, 1.1)
    return params


class SyntheticInteractingHands(_Scenes):
    """A right and a left hand in close interaction, as in InterHand2.6M's interacting subset.

    Both poses come from the hand model's sampler. With ``arrangement="body"`` (the default,
    InterHand2.6M's capture) the hands are in front of a person (body frame: x the person's right,
    y down, z forward): each in a natural orientation (:func:`_body_rotation`, the left hand the
    mirror image of a right hand's), the left hand coming from the person's left (within 60
    degrees), seen by a camera within 75 degrees of the front with its roll within 25 degrees of
    upright. With ``arrangement="random"`` both hands and the camera are uniformly random over
    SO(3), a harder task: without the body's frame, which hand is which can only be told from its
    chirality. The left hand approaches the right along its direction (its centre offset sideways
    by up to ``lateral`` metres) and stops where the two surfaces first stop intersecting: the smallest
    shift after which no vertex or face point of either hand is inside the other by the exact
    inside test (computed exactly by :func:`_separation`, plus 0.1 mm). Then, with probability ``contact``, it
    moves on by a gap of at most 1 cm (``near_gap``), else by 1 to 8 cm (``far_gap``). The remaining
    intersection volume (edges crossing between the tested points) is measured by
    ``benchmarks/bench_datasets.py``. Options: see :class:`_Scenes` (``resolution``, ``supersample``,
    ``distance``, ``noise``, ``transform``).
    """

    tag = 1

    def __init__(self, size: int, image_size: int = 256, seed: int = 0, *, contact: float = 0.7,
                 lateral: float = 0.03, near_gap: tuple[float, float] = (0.0005, 0.01),
                 far_gap: tuple[float, float] = (0.01, 0.08), arrangement: str = "body", **options):
        super().__init__(size, image_size, seed, **options)
        if not 0 <= contact <= 1:
            raise ValueError(f"SyntheticInteractingHands: contact must be a probability, got {contact}")
        if arrangement not in ("body", "random"):
            raise ValueError(f"SyntheticInteractingHands: arrangement must be 'body' or 'random', got {arrangement!r}")
        self.contact, self.lateral, self.near_gap, self.far_gap = contact, lateral, near_gap, far_gap
        self.arrangement = arrangement

    def camera(self, g: torch.Generator) -> torch.Tensor:
        if self.arrangement == "random":
            return super().camera(g)
        # a camera of a dome in front of the person, looking at the hands, its roll within 25 degrees of upright
        z = -_cone(g, FORWARD, 75.0)
        y = torch.nn.functional.normalize(DOWN - (DOWN @ z) * z, dim=0)
        x = torch.linalg.cross(y, z)
        roll = math.radians(float(_uniform(g, -25.0, 25.0)))
        x, y = math.cos(roll) * x + math.sin(roll) * y, -math.sin(roll) * x + math.cos(roll) * y
        return torch.stack([x, y, z])  # rows: the camera's axes in the world

    def scenes(self, gs):
        pairs = []
        for g in gs:
            right, left = (_sample_hand(side, g, self.resolution) for side in SIDES)
            if self.arrangement == "body":
                right.rotation = _body_rotation(g)
                left.rotation = BODY_MIRROR @ _body_rotation(g) @ BODY_MIRROR
            pairs.append((right, left))
        faces = [hand_model(side, self.resolution).faces for side in SIDES]
        (j_right, v_right), (j_left, v_left) = (_posed(side, HandParams.stack([pair[k] for pair in pairs]), self.resolution)
                                                for k, side in enumerate(SIDES))
        ways, laterals = [], []
        for g in gs:
            u = _unit(g) if self.arrangement == "random" else _cone(g, -RIGHT, 60.0)  # where the left hand comes from
            lateral = torch.linalg.cross(u, _unit(g))
            ways.append(u)
            laterals.append(lateral / lateral.norm().clamp_min(1e-12) * float(_uniform(g, 0, self.lateral)))
        c_right = (v_right.amin(1) + v_right.amax(1)) / 2
        c_left = (v_left.amin(1) + v_left.amax(1)) / 2
        start = c_right - c_left + torch.stack(laterals)
        v_left = v_left + start[:, None]
        bvh_right, bvh_left = MeshBVH(v_right.float(), faces[0]), MeshBVH(v_left.float(), faces[1])
        shifts = _separation(surface_points(v_left, faces[1], 1), surface_points(v_right, faces[0], 1), bvh_left,
                             bvh_right, torch.stack(ways)) + SEPARATION_EPS
        scenes = []
        for b, g in enumerate(gs):
            gap = self.near_gap if bool(torch.rand((), generator=g) < self.contact) else self.far_gap
            move = start[b] + (float(shifts[b]) + float(_uniform(g, *gap))) * ways[b]
            right, left = pairs[b]
            left.translation = left.translation + move
            scenes.append(({"right": right, "left": left},
                           {"right": (j_right[b], v_right[b]), "left": (j_left[b] + move, v_left[b] - start[b] + move)}, None))
        return scenes


class SyntheticSingleHand(_Scenes):
    """One hand in a random pose and view (for 2D pose networks): ``side`` ``"right"``,
    ``"left"`` or ``"random"`` (either, with equal probability; it fills its slot)."""

    tag = 2

    def __init__(self, size: int, image_size: int = 256, seed: int = 0, *, side: str = "random", **options):
        super().__init__(size, image_size, seed, **options)
        if side not in ("right", "left", "random"):
            raise ValueError(f"SyntheticSingleHand: side must be 'right', 'left' or 'random', got {side!r}")
        self.side = side

    def scenes(self, gs):
        hands = []
        for g in gs:
            side = SIDES[int(torch.randint(2, (), generator=g))] if self.side == "random" else self.side
            hands.append((side, _sample_hand(side, g, self.resolution)))
        posed = [None] * len(hands)
        for side in SIDES:  # one hand-model call per side
            mine = [b for b, (s, _) in enumerate(hands) if s == side]
            if mine:
                joints, verts = _posed(side, HandParams.stack([hands[b][1] for b in mine]), self.resolution)
                for k, b in enumerate(mine):
                    posed[b] = joints[k], verts[k]
        return [({side: params}, {side: pose}, None) for (side, params), pose in zip(hands, posed)]


class SyntheticHandObject(_Scenes):
    """A right hand grasping an object, synthesized with the mesh queries.

    The object (one of :data:`~handgeom.datasets.objects.SHAPES`, largest extent uniform in
    ``object_size``) sits at the world origin. The hand, open (flexion near the low limits) and
    palm towards the object, is placed above the surface point hit by a ray from a random
    direction, and pushed along it to the first pose where no hand vertex is inside the object.
    Then its fingers close until contact, each finger on its own (the thumb included): first all
    of its joints together, then its two distal joints, each stage to the last pose before a vertex
    of that finger enters the object (nested sweeps of ``SWEEPS`` candidates, to 1/256 of the stage's
    motion: a fingertip moves by about 0.5 mm).
    A grasp is kept when at least ``min_contacts`` fingertips lie within ``contact_tolerance``
    (2 mm) of the surface, else a new approach is drawn; after ``attempts`` approaches, a new object
    (up to ``attempts`` objects; none succeeding raises RuntimeError).
    """

    tag = 3

    def __init__(self, size: int, image_size: int = 256, seed: int = 0, *,
                 object_size: tuple[float, float] = (0.04, 0.15), classes: tuple[str, ...] = SHAPES,
                 min_contacts: int = 3, contact_tolerance: float = 0.002, attempts: int = 12, **options):
        super().__init__(size, image_size, seed, **options)
        unknown = [c for c in classes if c not in SHAPES]
        if unknown or not classes:
            raise ValueError(f"SyntheticHandObject: classes must be a non-empty subset of {SHAPES}, got {classes}")
        if not 0 < object_size[0] <= object_size[1]:
            raise ValueError(f"SyntheticHandObject: object_size must be (smallest, largest) metres, got {object_size}")
        if not 1 <= min_contacts <= 5 or attempts < 1:
            raise ValueError(f"SyntheticHandObject: min_contacts must be 1 to 5 and attempts >= 1, got "
                             f"{min_contacts} and {attempts}")
        self.object_size, self.classes = object_size, tuple(classes)
        self.min_contacts, self.contact_tolerance, self.attempts = min_contacts, contact_tolerance, attempts
        surface = hand_model("right", self.resolution).surface
        palm = surface.palm_offsets.shape[0]
        self.moving = torch.arange(palm, surface.num_verts)  # finger tubes; the palm does not move with the angles
        self.finger_of = surface.tube_bone // 4  # [len(moving)]: the finger each moving vertex belongs to
        limits = hand_model("right", self.resolution).limits.double()
        self.lo, self.hi = limits[:, 0], limits[:, 1]
        # joints each closing stage moves per finger: (flexions of all three joints), (the two distal)
        chains = [(0, 3, 4)] + [(5 + 4 * f, 7 + 4 * f, 8 + 4 * f) for f in range(4)]
        self.stages = [torch.tensor(chains), torch.tensor([c[1:] for c in chains])]

    def scenes(self, gs):
        """Grasps for all samples at once, in rounds: each round gives every sample still without a
        grasp one approach (on a new object when its object has had ``attempts``), batched."""
        objects: list[tuple | None] = [None] * len(gs)  # (verts, faces, class), as the sample holds it
        tries = [[0, 0] for _ in gs]  # objects drawn, approaches on the current object
        grasps: list[tuple | None] = [None] * len(gs)
        pending = list(range(len(gs)))
        while pending:
            drawn = False
            for b in pending:
                if tries[b][0] == 0 or tries[b][1] == self.attempts:
                    if tries[b][0] == self.attempts:
                        raise RuntimeError(f"SyntheticHandObject: no grasp with {self.min_contacts} fingertip contacts "
                                           f"in {self.attempts}x{self.attempts} attempts; lower min_contacts")
                    g = gs[b]
                    cls = int(torch.randint(len(self.classes), (), generator=g))
                    name = self.classes[cls]
                    objects[b] = (*make_object(name, float(_uniform(g, *self.object_size)), g), OBJECT_CLASSES.index(name))
                    tries[b] = [tries[b][0] + 1, 0]
                    drawn = True
                tries[b][1] += 1
            if drawn:  # every sample's object, built once (objects are redrawn rarely)
                verts, faces = torch.stack([o[0] for o in objects]), torch.stack([o[1] for o in objects])
                bvh = MeshBVH(verts.float(), faces)
                points = torch.stack([surface_points(v, f, 1) for v, f in zip(verts, faces)])
            mine = bvh[pending]
            params = self._approach([gs[b] for b in pending], verts[pending], points[pending], mine)
            params, (joints, hands), contacts = self._close(params, mine)
            for k, b in enumerate(pending):
                if contacts[k] >= self.min_contacts:
                    grasps[b] = {"right": params[k]}, {"right": (joints[k], hands[k])}, objects[b]
            pending = [b for b in pending if grasps[b] is None]
        return grasps

    def _approach(self, gs, verts, object_points, bvh) -> HandParams:
        """The open hands ``[B]``, palm towards each object's surface where a ray from a random
        direction, aimed at a random vertex, first meets it, pushed out to the first pose without
        contact. Objects ``verts [B, V, 3]``, their :func:`surface_points` ``object_points [B, N,
        3]`` and ``bvh``."""
        model = hand_model("right", self.resolution)
        normals, vertices, hands, spins = [], [], [], []
        abduction = torch.tensor([1, 2, 6, 10, 14, 18])  # thumb CMC abduction, twist; finger abductions
        for g, v in zip(gs, verts):
            normals.append(_unit(g))
            vertices.append(v[int(torch.randint(OBJECT_VERTS, (), generator=g))])  # the torus's last 2: vertex 0
            params = model.rest_pose((), F64)
            params.angles = self.lo + (self.hi - self.lo) * _uniform(g, 0.0, 0.3, (21,))
            params.angles[abduction] = self.lo[abduction] + (self.hi - self.lo)[abduction] * _uniform(g, 0.2, 0.8, (6,))
            params.bone_lengths = params.bone_lengths * _uniform(g, 0.95, 1.05, (20,))
            params.scale = _uniform(g, 0.85, 1.1)
            hands.append(params)
            spins.append(float(_uniform(g, 0, 2 * math.pi)))
        n = torch.stack(normals)
        # the ray at the centre, or at the vertex if that one misses (a torus)
        targets = torch.stack([torch.zeros_like(n), torch.stack(vertices)], 1)  # [B, 2, 3]
        t, _, _ = ray_mesh_intersect((targets + n[:, None]).float(), -n[:, None].float().expand(-1, 2, 3), None, bvh.faces,
                                     bvh=bvh)
        centre_hit = torch.isfinite(t[:, 0])
        target = torch.where(centre_hit[:, None], targets[:, 0], targets[:, 1])
        t = torch.where(centre_hit, t[:, 0], t[:, 1])
        surface_point = target + n * (1 - t.clamp(max=1.0).double())[:, None]  # a grazing ray: the vertex itself
        params = HandParams.stack(hands)
        joints, hand = _posed("right", params, self.resolution)  # at the origin, unrotated
        palm_centre = joints[:, [0, 5, 9, 13, 17]].mean(1)
        rotations, moved = [], []
        for b in range(len(gs)):  # the hand's dorsal z away from the object
            R = _frame_with_z(n[b], spins[b])
            rotations.append(R)
            moved.append(surface_point[b] - R @ palm_centre[b])  # the palm sunk into the surface
        params.rotation, params.translation = torch.stack(rotations), torch.stack(moved)
        hand = torch.stack([h @ R.T + t for h, R, t in zip(hand, rotations, moved)])  # = the model's for the moved params
        hand_faces = model.faces
        # the hand's vertices (the grasp's bound is on them) and the object's surface points
        shift = _separation(hand, object_points, MeshBVH(hand.float(), hand_faces), bvh, n) + SEPARATION_EPS
        params.translation = params.translation + shift[:, None] * n
        return params

    def _close(self, params: HandParams, bvh: MeshBVH) -> tuple[HandParams, tuple, torch.Tensor]:
        """Closes each finger of the hands ``params [B]`` on the objects of ``bvh`` until contact
        (two stages, see the class docstring); returns the grasps, their ``(joints, verts)`` and
        their numbers of fingertips within the contact tolerance ``[B]``."""
        model = hand_model("right", self.resolution)
        B = params.angles.shape[0]
        for joints in self.stages:  # [5, k] angle indices per finger
            start = params.angles[:, joints]  # [B, 5, k]
            target = self.hi[joints]
            # per finger, [lo, hi] brackets the first collision: lo is free (at first the start,
            # free by the separation or the stage before), hi collides (at first unknown: tested too)
            lo, hi = torch.zeros(B, 5, dtype=F64), torch.ones(B, 5, dtype=F64)
            for sweep, n in enumerate(SWEEPS):
                steps = torch.arange(1, n + 1 if sweep == 0 else n, dtype=F64) / n
                ts = lo[:, None] + (hi - lo)[:, None] * steps[:, None]  # [B, m, 5]
                m = ts.shape[1]
                angles = params.angles[:, None].expand(B, m, 21).clone()
                angles[:, :, joints] = start[:, None] + ts[..., None] * (target - start)[:, None]
                candidate = HandParams(rotation=params.rotation[:, None].expand(B, m, 3, 3),
                                       translation=params.translation[:, None].expand(B, m, 3),
                                       bone_lengths=params.bone_lengths[:, None].expand(B, m, 20), angles=angles,
                                       scale=params.scale[:, None].expand(B, m))
                hand = model(candidate, self.moving).verts  # the vertices that flexion moves
                inside = points_inside_mesh(hand.reshape(B, -1, 3).float(), None, bvh.faces, bvh=bvh).view(B, m, -1)
                collides = torch.zeros(B, m, 5).index_add_(2, self.finger_of, inside.float()) > 0  # [B, m, 5]
                first = torch.where(collides.any(1), collides.float().argmax(1), m)  # [B, 5]
                free = ts.gather(1, (first - 1).clamp_min(0)[:, None]).squeeze(1)  # the last free candidate
                lo, hi = (torch.where(first == 0, lo, free),
                          torch.where(first == m, hi if sweep else free, ts.gather(1, first.clamp(max=m - 1)[:, None]).squeeze(1)))
            params.angles = params.angles.clone()
            params.angles[:, joints] = start + lo[..., None] * (target - start)
        hand = model(params)
        distance, _, _ = signed_distance(hand.joints[:, list(TIPS)].float(), None, bvh.faces, bvh=bvh)
        return params, (hand.joints, hand.verts), (distance.abs() <= self.contact_tolerance).sum(1)
