"""HandOccupancyNet: the probability that a 3D point lies inside a right hand, given the hand's 21
joints (after "Two Hands Are Better Than One", whose network and weights are not public).

Design (handgeom's own, trained on handgeom's hand model by ``python -m handgeom.train_occupancy``):

- Canonical frame: wrist at the origin; y towards the middle finger's MCP, x towards the index
  MCP (radial) orthogonalized, z = x × y. Rotating or moving the hand changes nothing.
- Per-point features (43): the canonical point, and for each of the 20 bones the position along
  the bone (in bone lengths) and the distance to the bone segment, in units of 5 cm: bone-local
  coordinates as in NASA (Deng et al. 2020) and LEAP (Mihajlovic et al. 2021), which make the
  union-of-tubes shape of a hand easy to learn for a small network.
- Encoder: an MLP over the 21 canonical joints → latent → per-layer FiLM scale and shift.
- Decoder: a residual MLP whose hidden layers are conditionally batch-normalized (batch norm
  without affine, then the FiLM scale and shift). In eval mode each conditional batch norm is a
  per-hand affine map, and the decoder runs as the fused :func:`handgeom.ops.conditioned_mlp`;
  in train mode it is plain torch with batch statistics.

Left hands are queried by mirroring (x → -x) points and joints together (see
:func:`handgeom.losses.intersection_loss`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from handgeom._checks import Checker
from handgeom.hand.skeleton import BONES, bone_ends
from handgeom.ops.occupancy import conditioned_mlp, conditioned_mlp_penalty

__all__ = ["HandOccupancyNet", "ConditionedDecoder", "canonical_frame", "bone_features", "OUTSIDE_LOGIT",
           "HAND_CULL_MARGIN"]

UNIT = 0.05  # metres per feature unit
OUTSIDE_LOGIT = -20.0  # what culled points get: probability 2e-9
# A culling margin that drops no point of the hand: the hand model's surface lies at most 18.2 mm
# outside its joints' canonical box (measured over 10,000 random poses, bone lengths ±10%).
HAND_CULL_MARGIN = 0.03
PRETRAINED = Path(__file__).resolve().parent.parent / "weights" / "hand_occupancy.pt"


def canonical_frame(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(origin [B, 3], rotation [B, 3, 3])`` of the hand frame of ``joints [B, 21, 3]``: rows of
    ``rotation`` are the frame's axes, so ``(p - origin) @ rotation.T`` is canonical."""
    origin = joints[:, 0]
    y = nn.functional.normalize(joints[:, 9] - origin, dim=-1)
    across = joints[:, 5] - joints[:, 17]
    x = nn.functional.normalize(across - (across * y).sum(-1, keepdim=True) * y, dim=-1)
    return origin, torch.stack([x, y, torch.linalg.cross(x, y)], dim=1)


def bone_features(points: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """``[B, N, 43]`` features of canonical ``points [B, N, 3]`` for canonical ``joints [B, 21, 3]``:
    the point, then per bone the position along it (bone lengths) and the distance to it."""
    start, end = bone_ends(joints)  # [B, 20, 3]
    axis = end - start
    rel = points[:, :, None] - start[:, None]  # [B, N, 20, 3]
    along = (rel * axis[:, None]).sum(-1) / (axis * axis).sum(-1).clamp_min(1e-12)[:, None]
    nearest = rel - along.clamp(0, 1)[..., None] * axis[:, None]
    distance = ((nearest * nearest).sum(-1) + 1e-12).sqrt()  # smooth at 0: finite gradients on the bone
    return torch.cat([points / UNIT, along, distance / UNIT], dim=-1)


class ConditionedDecoder(nn.Module):
    """``h0 = W_in x``; residual blocks of two (CBN → ReLU → Linear); ``logit = w_out · relu(h)``;
    see :func:`handgeom.ops.conditioned_mlp` for the exact formula. CBN(z) = gamma ⊙ BN(z) + beta
    with BN without affine parameters; gamma, beta ``[B, L, H]`` come from the condition."""

    def __init__(self, inputs: int, width: int = 64, layers: int = 4):
        super().__init__()
        if layers % 2:
            raise ValueError(f"ConditionedDecoder: layers must be even (residual blocks of two), got {layers}")
        self.fc_in = nn.Linear(inputs, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(width, affine=False) for _ in range(layers))
        self.fc_out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``x [B, N, D]`` → logits ``[B, N]``: the fused op in eval mode with frozen weights (or
        no grad), plain torch otherwise."""
        if self._fused():
            return conditioned_mlp(x, *self._fused_weights(), *self.modulation(gamma, beta))
        return self.forward_torch(x, gamma, beta)

    def penalty(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, point_weights: torch.Tensor,
                truncate: bool = False) -> torch.Tensor:
        """``[B]``: ``sum_n w_n q(sigmoid(logit_n))``, q(p) = p² (truncate: p² [p > 1/2]); one fused
        pass for value and gradients (:func:`handgeom.ops.conditioned_mlp_penalty`) when
        :meth:`forward` would be fused, plain torch otherwise."""
        if self._fused():
            return conditioned_mlp_penalty(x, point_weights, *self._fused_weights(), *self.modulation(gamma, beta),
                                           truncate=truncate)
        return self.penalty_torch(x, gamma, beta, point_weights, truncate)

    def penalty_torch(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, point_weights: torch.Tensor,
                      truncate: bool = False) -> torch.Tensor:
        """:meth:`penalty` of :meth:`forward_torch`'s logits."""
        p = torch.sigmoid(self.forward_torch(x, gamma, beta))
        q = p * p * (p > 0.5) if truncate else p * p
        return (point_weights * q).sum(-1)

    def _fused(self) -> bool:
        frozen = not torch.is_grad_enabled() or not any(p.requires_grad for p in self.parameters())
        return not self.training and frozen

    def _fused_weights(self) -> tuple[torch.Tensor, ...]:
        """w_in, b_in, w_hidden, b_hidden, w_out, b_out as the fused ops take them."""
        return (self.fc_in.weight, self.fc_in.bias, torch.stack([m.weight for m in self.hidden]),
                torch.stack([m.bias for m in self.hidden]), self.fc_out.weight[0], self.fc_out.bias)

    def forward_torch(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """The decoder as torch modules (batch statistics in train mode, running ones in eval)."""
        B, N, _ = x.shape

        def cbn(z, l):
            z = self.norms[l](z.reshape(B * N, -1)).view(B, N, -1)
            return torch.relu(gamma[:, l, None] * z + beta[:, l, None])

        h = self.fc_in(x)
        for l in range(0, len(self.hidden), 2):
            a = self.hidden[l](cbn(h, l))
            h = h + self.hidden[l + 1](cbn(a, l + 1))
        return self.fc_out(torch.relu(h))[..., 0]

    def modulation(self, gamma: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode CBN as ``(scale, shift) [B, L, H]``: gamma (z - mean) / std + beta."""
        mean = torch.stack([n.running_mean for n in self.norms])
        inv_std = torch.stack([(n.running_var + n.eps).rsqrt() for n in self.norms])
        scale = gamma * inv_std
        return scale, beta - scale * mean


class HandOccupancyNet(nn.Module):
    """``net(points [B, N, 3], joints [B, 21, 3]) -> logits [B, N]``: inside a right hand when
    the logit is positive. Points and joints in one world frame, metres, floating point of one
    dtype (computed in the network's, returned in theirs). NaN points or joints give NaN logits
    (culling never hides them).

    Args:
        width, layers: the decoder's hidden width and number of modulated layers (even).
        latent: the encoder's output size.
    """

    def __init__(self, width: int = 64, layers: int = 4, latent: int = 128):
        super().__init__()
        self.config = dict(width=width, layers=layers, latent=latent)
        self.encoder = nn.Sequential(nn.Linear(63, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                     nn.Linear(256, latent), nn.ReLU())
        self.film = nn.Linear(latent, 2 * layers * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.decoder = ConditionedDecoder(3 + 2 * len(BONES), width, layers)

    def condition(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(origin, rotation, gamma, beta)`` for ``joints [B, 21, 3]``; gamma, beta ``[B, L, H]``."""
        origin, rotation = canonical_frame(joints)
        canonical = (joints - origin[:, None]) @ rotation.transpose(1, 2)
        film = self.film(self.encoder(canonical.flatten(1) / UNIT))
        gamma, beta = film.view(joints.shape[0], 2, self.config["layers"], self.config["width"]).unbind(1)
        return origin, rotation, 1 + gamma, beta

    def forward(self, points: torch.Tensor, joints: torch.Tensor, cull_margin: float | None = None) -> torch.Tensor:
        """Logits ``[B, N]``.

        Args:
            points: ``[B, N, 3]``; joints: ``[B, 21, 3]`` (a right hand; mirror left hands).
            cull_margin: if set (metres), points outside the joints' canonical bounding box grown
                by this margin get ``OUTSIDE_LOGIT`` without evaluating the network: an
                approximation of the network, off by default. With ``HAND_CULL_MARGIN`` (3 cm) no
                point of the hand model's volume is culled, so only the network's errors change.
        """
        features, gamma, beta, index, valid = self._query(points, joints, cull_margin)
        logits = self.decoder(features, gamma, beta).to(points.dtype)
        if index is None:
            return logits
        full = points.new_full(points.shape[:2], OUTSIDE_LOGIT)
        return full.scatter(1, index, torch.where(valid, logits, full.gather(1, index)))

    def penalty(self, points: torch.Tensor, joints: torch.Tensor, cull_margin: float | None = None,
                truncate: bool = False) -> torch.Tensor:
        """``[B]``: ``sum_n q(sigmoid(net(points, joints)_n))`` with q(p) = p² (truncate: p² [p > 1/2]),
        the intersection penalty of "Two Hands Are Better Than One"; in eval mode its value and
        gradients come from one fused pass (:meth:`ConditionedDecoder.penalty`). Culled points
        (``cull_margin``, as in :meth:`forward`) count 0."""
        features, gamma, beta, index, valid = self._query(points, joints, cull_margin)
        weights = features.new_ones(features.shape[:2]) if valid is None else valid.to(features.dtype)
        return self.decoder.penalty(features, gamma, beta, weights, truncate).to(points.dtype)

    def _query(self, points: torch.Tensor, joints: torch.Tensor, cull_margin: float | None):
        """``(features, gamma, beta, index, valid)``: the decoder's inputs for the points, or with
        culling for the kept points of each row first (stable, padded to the longest row: ``index
        [B, K]`` into the points, ``valid [B, K]`` false on padding); index and valid are None
        without culling."""
        ck = Checker("HandOccupancyNet")
        ck.tensor(points, "points", ("B", "N", 3))
        ck.tensor(joints, "joints", ("B", 21, 3), like=points)
        if cull_margin is not None:
            cull_margin = ck.real(cull_margin, "cull_margin", minimum=0)
        dtype = self.film.weight.dtype
        points, joints = points.to(dtype), joints.to(dtype)
        origin, rotation, gamma, beta = self.condition(joints)
        rt = rotation.transpose(1, 2)
        canonical_joints = (joints - origin[:, None]) @ rt
        canonical = (points - origin[:, None]) @ rt
        if cull_margin is None:
            return bone_features(canonical, canonical_joints), gamma, beta, None, None
        lo = canonical_joints.amin(1, keepdim=True) - cull_margin
        hi = canonical_joints.amax(1, keepdim=True) + cull_margin
        keep = ~((canonical < lo) | (canonical > hi)).any(-1)  # [B, N]; NaN is kept (and gives NaN)
        order = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices
        index = order[:, :int(keep.sum(1).max()) if len(keep) else 0]
        selected = canonical.gather(1, index[..., None].expand(-1, -1, 3))
        return bone_features(selected, canonical_joints), gamma, beta, index, keep.gather(1, index)

    @classmethod
    def pretrained(cls, device: torch.device | str | None = None) -> "HandOccupancyNet":
        """The network shipped with handgeom (``handgeom/weights/hand_occupancy.pt``), in eval mode
        with frozen weights; its training settings are in ``net.training_record``."""
        state = _load_pretrained()
        net = cls(**state["config"])
        net.load_state_dict(state["weights"])
        net.training_record = state["record"]
        return net.eval().requires_grad_(False).to(device)


@lru_cache(maxsize=1)
def _load_pretrained() -> dict:
    if not PRETRAINED.exists():
        raise FileNotFoundError(f"HandOccupancyNet.pretrained: {PRETRAINED} is missing; train it with "
                                "`python -m handgeom.train_occupancy`")
    return torch.load(PRETRAINED, map_location="cpu", weights_only=True)
