"""SIA-GCN (spatial-information-aware graph network for 2D hand pose): heatmaps on the nodes of
the hand graph, refined by per-edge 2D kernels, and the multi-head SiaPose refinement head."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from handgeom.hand.skeleton import BONES
from handgeom.ops.edge_conv import edge_conv2d

__all__ = ["SIAGCN", "SiaPoseHead", "hand_graph_edges", "heatmap_keypoints"]


def hand_graph_edges(num_joints: int = 21, self_loops: bool = True) -> torch.Tensor:
    """``[E, 2]`` (source, target): the 20 hand bones in both directions plus, by default, a
    self-loop per joint (61 edges, SIA-GCN's graph)."""
    bones = torch.tensor(BONES)
    edges = [bones, bones.flip(1)]
    if self_loops:
        edges.append(torch.arange(num_joints).repeat(2, 1).T)
    return torch.cat(edges)


class SIAGCN(nn.Module):
    """A stack of per-edge 2D graph convolutions (:func:`handgeom.ops.edge_conv2d`) with an
    activation between layers: ``X' = act(D^-1 A ((B X) * F))`` per layer, the last layer linear.

    Args:
        edges: ``[E, 2]`` graph (default: :func:`hand_graph_edges`); any graph works.
        num_nodes: nodes of the graph (21 for a hand).
        kernel_size: odd size of every edge's kernel (45 in the paper, on 46x46 heatmaps).
        layers: number of graph convolutions (5 in the paper).
        heads: independent stacks evaluated together (the SiaPose head's M).
        method: ``edge_conv2d``'s method (``"auto"`` picks direct or FFT by kernel size).

    Kernels start as the identity on self-loops and small elsewhere, so an untrained network
    passes heatmaps through (a refinement starts from its input).
    """

    def __init__(self, edges: torch.Tensor | None = None, num_nodes: int = 21, kernel_size: int = 45,
                 layers: int = 5, heads: int = 1, activation: type[nn.Module] = nn.ReLU,
                 aggregation: Literal["mean", "sum"] = "mean", method: Literal["auto", "direct", "fft"] = "auto"):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"SIAGCN: kernel_size must be odd, got {kernel_size}")
        edges = hand_graph_edges(num_nodes) if edges is None else torch.as_tensor(edges, dtype=torch.long)
        self.register_buffer("edges", edges, persistent=False)
        self.num_nodes, self.aggregation, self.method = num_nodes, aggregation, method
        count = edges.shape[0]
        loops = (edges[:, 0] == edges[:, 1]).float()
        degree = torch.bincount(edges[:, 1], minlength=num_nodes).clamp_min(1).float()[edges[:, 1]]
        centre = kernel_size // 2
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for _ in range(layers):
            w = 1e-3 * torch.randn(heads, count, kernel_size, kernel_size)
            # identity through the self-loop: its message is multiplied back by the in-degree
            w[:, :, centre, centre] += (loops * (degree if aggregation == "mean" else 1.0))[None]
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(heads, count)))
        self.activation = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, K, H, W]`` (shared by every head) or ``[B, M, K, H, W]`` -> ``[B, M, K, H, W]``."""
        for index, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = edge_conv2d(x, w, self.edges, b, self.aggregation, self.method)
            if index < len(self.weights) - 1:
                x = self.activation(x)
        return x


def heatmap_keypoints(heatmaps: torch.Tensor, soft: bool = False, beta: float = 100.0) -> torch.Tensor:
    """Keypoints ``[..., K, 2]`` (x, y) in pixels (pixel centres at integers) from heatmaps
    ``[..., K, H, W]``: the argmax, or with ``soft`` the differentiable soft-argmax (expected
    position under ``softmax(beta * heatmap)``)."""
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.flatten(-2)
    if soft:
        p = torch.softmax(beta * flat, dim=-1)
        ys = torch.arange(height, dtype=heatmaps.dtype, device=heatmaps.device).repeat_interleave(width)
        xs = torch.arange(width, dtype=heatmaps.dtype, device=heatmaps.device).repeat(height)
        return torch.stack([(p * xs).sum(-1), (p * ys).sum(-1)], -1)
    index = flat.argmax(dim=-1)
    return torch.stack([index % width, index // width], -1).to(heatmaps.dtype)


class SiaPoseHead(nn.Module):
    """SiaPose's refinement head: M SIA-GCN heads refine the preliminary heatmaps, a small pointer
    network on the image features weighs the heads per image (softmax), and the weighted fusion
    gives the final heatmaps and keypoints.

    ``head(heatmaps [B, K, H, W], features [B, C, h, w])`` returns a dict with ``heatmaps``
    ``[B, K, H, W]``, ``head_weights`` ``[B, M]`` and ``keypoints`` ``[B, K, 2]`` (argmax, or
    soft-argmax with ``soft_argmax=True``, which is differentiable).
    """

    def __init__(self, feature_channels: int, heads: int = 10, kernel_size: int = 45, layers: int = 5,
                 edges: torch.Tensor | None = None, num_nodes: int = 21, hidden: int = 64,
                 soft_argmax: bool = False, method: Literal["auto", "direct", "fft"] = "auto"):
        super().__init__()
        self.gcn = SIAGCN(edges, num_nodes, kernel_size, layers, heads, method=method)
        self.pointer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature_channels, hidden),
                                     nn.ReLU(), nn.Linear(hidden, heads))
        self.soft_argmax = soft_argmax

    def forward(self, heatmaps: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
        refined = self.gcn(heatmaps)  # [B, M, K, H, W]
        weights = torch.softmax(self.pointer(features), dim=-1)  # [B, M]
        fused = (weights[:, :, None, None, None] * refined).sum(1)
        return {"heatmaps": fused, "head_weights": weights,
                "keypoints": heatmap_keypoints(fused, soft=self.soft_argmax)}
