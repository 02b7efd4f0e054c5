"""The SIA-GCN model layer and the 2D pose metrics."""

import pytest
import torch

from handgeom.metrics import mpck, pck
from handgeom.models import SIAGCN, SiaPoseHead, hand_graph_edges, heatmap_keypoints


def gaussian_heatmaps(keypoints, size, sigma=1.5):
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    d2 = (xs - keypoints[..., 0, None, None]) ** 2 + (ys - keypoints[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))


def test_hand_graph_is_sia_gcns():
    edges = hand_graph_edges()
    assert edges.shape == (61, 2)
    assert (edges[:, 0] == edges[:, 1]).sum() == 21
    pairs = {tuple(e) for e in edges.tolist()}
    assert all((b, a) in pairs for a, b in pairs)  # every bone both ways


def test_untrained_sia_gcn_passes_heatmaps_through():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 21, 16, 16, generator=gen)
    out = SIAGCN(kernel_size=5, layers=3)(x)
    assert out.shape == (2, 1, 21, 16, 16)
    torch.testing.assert_close(out[:, 0], x, atol=0.05, rtol=0)


def test_sia_pose_head_trains_on_synthetic_refinement():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    keypoints = torch.rand(4, 21, 2, generator=gen) * 13 + 1.5
    clean = gaussian_heatmaps(keypoints, 16)
    noisy = 0.6 * clean + 0.3 * torch.rand(4, 21, 16, 16, generator=gen)
    features = torch.randn(4, 8, 4, 4, generator=gen)
    head = SiaPoseHead(8, heads=3, kernel_size=5, layers=2, soft_argmax=True)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = head(noisy, features)
        loss = (out["heatmaps"] - clean).square().mean() + 1e-3 * (out["keypoints"] - keypoints).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert out["head_weights"].shape == (4, 3)
    torch.testing.assert_close(out["head_weights"].sum(-1), torch.ones(4))
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in head.parameters())


def test_heatmap_keypoints_argmax_and_soft_argmax():
    keypoints = torch.tensor([[[3.0, 7.0], [10.0, 2.0]]])
    heatmaps = gaussian_heatmaps(keypoints, 16)
    torch.testing.assert_close(heatmap_keypoints(heatmaps), keypoints)
    torch.testing.assert_close(heatmap_keypoints(heatmaps, soft=True), keypoints, atol=1e-3, rtol=0)


def test_pck_and_mpck():
    target = torch.zeros(1, 10, 2)
    pred = target.clone()
    pred[0, :, 0] = torch.arange(10, dtype=torch.float32)  # errors 0..9 px
    assert pck(pred, target, crop_size=100, delta=0.045) == pytest.approx(0.5)  # errors <= 4.5
    visible = torch.zeros(1, 10, dtype=torch.bool)
    visible[0, :4] = True
    assert pck(pred, target, 100, 0.02, visible) == pytest.approx(0.75)  # 0, 1, 2 of 0..3
    assert mpck(pred, target, 100, deltas=(0.0, 0.09)) == pytest.approx((0.1 + 1.0) / 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SIAGCN(kernel_size=4)
