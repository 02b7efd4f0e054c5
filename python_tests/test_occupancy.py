"""conditioned_mlp against the plain torch formula; HandOccupancyNet (fused eval path, shipped
weights and their IoU); the intersection loss and the occupancy intersection count."""

import pytest
import torch

import handgeom
from handgeom.hand import HandModel, HandOutput, two_hand_preset
from handgeom.losses import hand_query_points, intersection_loss, mirror
from handgeom.metrics import count_intersections, count_intersections_occupancy
from handgeom.models import HandOccupancyNet
from handgeom.models.occupancy import HAND_CULL_MARGIN, OUTSIDE_LOGIT, canonical_frame
from handgeom.ops import conditioned_mlp, conditioned_mlp_penalty
from handgeom.train_occupancy import grid_iou, grown_box, hand_samples
import references as ref

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def mlp_args(batch=3, points=37, features=5, width=24, layers=4, dtype=torch.float64, seed=0):
    """inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift (scale around 1, some
    negative, so ReLUs are both on and off)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return [r(batch, points, features), r(width, features) / features ** 0.5, 0.1 * r(width),
            r(layers, width, width) / width ** 0.5, 0.1 * r(layers, width), r(width) / width ** 0.5, r(1),
            1 + 0.5 * r(batch, layers, width), 0.3 * r(batch, layers, width)]


DIFFERENTIABLE = (0, 7, 8)  # inputs, scale, shift


def compare(args, tol):
    outs = []
    for fn in (conditioned_mlp, ref.conditioned_mlp):
        leaves = [a.clone().requires_grad_(i in DIFFERENTIABLE) for i, a in enumerate(args)]
        y = fn(*leaves)
        go = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        outs.append((y, *torch.autograd.grad(y, [leaves[i] for i in DIFFERENTIABLE], go)))
    for got, expected in zip(*outs):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", [dict(), dict(points=1), dict(points=64), dict(points=100, width=20),
                                   dict(features=1, layers=2), dict(features=43, width=64, layers=8),
                                   dict(width=128, points=33), dict(batch=1, points=700)])
def test_matches_torch(dtype, tol, shape):
    """Partial and several tiles and slots, widths off the 8-row blocks, 2 to 8 layers."""
    compare(mlp_args(dtype=dtype, **shape), tol)


def test_gradcheck():
    args = mlp_args(batch=2, points=5, features=3, width=8, layers=2)
    leaves = [a.requires_grad_(i in DIFFERENTIABLE) for i, a in enumerate(args)]
    assert torch.autograd.gradcheck(conditioned_mlp, leaves)


def test_opcheck():
    args = mlp_args(batch=2, points=40, features=4, width=16, layers=2)
    for i in DIFFERENTIABLE:
        args[i].requires_grad_()
    torch.library.opcheck(torch.ops.handgeom.conditioned_mlp.default, args)


def test_empty_batches():
    for batch, points in ((0, 7), (2, 0)):
        args = mlp_args(batch=batch, points=points)
        x = args[0].requires_grad_()
        y = conditioned_mlp(*args)
        assert y.shape == (batch, points)
        y.sum().backward()
        assert x.grad.shape == x.shape


def test_nan_propagates():
    args = mlp_args()
    args[0][1, 3, 0] = float("nan")
    y = conditioned_mlp(*args)
    assert y[1, 3].isnan() and y.isnan().sum() == 1


@pytest.mark.parametrize("index,bad,match", [
    (0, lambda a: a[0], "inputs must have shape"),
    (1, lambda a: a[:, :-1], "w_in must have shape"),
    (3, lambda a: a[:3], "must be even"),
    (3, lambda a: a.new_zeros(2, 130, 130), r"\[1, 128\]"),
    (7, lambda a: a[:, :, :-1], "scale must have shape"),
    (8, lambda a: a[:1], "shift must have shape"),
    (6, lambda a: a.float(), "b_out must have the dtype of inputs"),
    (0, lambda a: a.new_zeros(3, 37, 65), r"\[1, 64\]"),
    (0, lambda a: a.long(), "float32 or float64"),
])
def test_bad_input(index, bad, match):
    args = mlp_args()
    args[index] = bad(args[index])
    with pytest.raises(RuntimeError, match=match):
        conditioned_mlp(*args)


def test_weights_requiring_grad_are_refused():
    args = mlp_args()
    args[3].requires_grad_()
    with pytest.raises(ValueError, match="w_hidden requires grad"):
        conditioned_mlp(*args)
    with torch.no_grad():
        conditioned_mlp(*args)  # fine without grad mode


def penalty_args(dtype=torch.float64, seed=0, **shape):
    """mlp_args with point weights (some zero, as padding) inserted after the inputs; logits spread
    over both sides of p = 1/2."""
    args = mlp_args(dtype=dtype, seed=seed, **shape)
    args[6] = args[6] + 1.0
    weights = torch.rand(args[0].shape[:2], generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    weights[:, 1::5] = 0
    return [args[0], weights, *args[1:]]


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", [dict(), dict(points=1), dict(batch=1, points=700, features=43, width=64),
                                   dict(width=20, layers=2, points=130)])
def test_penalty_matches_torch(truncate, dtype, tol, shape):
    """The fused penalty (forward and reverse in one pass) against the reference penalty of the
    reference logits, value and gradients to inputs, scale and shift."""
    args = penalty_args(dtype=dtype, **shape)
    differentiable = (0, 8, 9)
    outs = []
    for fn in (conditioned_mlp_penalty,
               lambda x, w, *rest, truncate: ref.occupancy_penalty(ref.conditioned_mlp(x, *rest), w, truncate)):
        leaves = [a.clone().requires_grad_(i in differentiable) for i, a in enumerate(args)]
        y = fn(*leaves, truncate=truncate)
        go = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
        outs.append((y, *torch.autograd.grad(y, [leaves[i] for i in differentiable], go)))
    for got, expected in zip(*outs):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_penalty_gradcheck_and_opcheck():
    args = penalty_args(batch=2, points=7, features=3, width=8, layers=2)
    for i in (0, 8, 9):
        args[i].requires_grad_()
    for truncate in (False, True):
        assert torch.autograd.gradcheck(lambda *a: conditioned_mlp_penalty(*a, truncate=truncate), args)
        torch.library.opcheck(torch.ops.handgeom.conditioned_mlp_penalty.default, (*args, truncate))


def test_penalty_bad_input_and_empty_batches():
    args = penalty_args()
    with pytest.raises(RuntimeError, match="point_weights must have shape"):
        conditioned_mlp_penalty(args[0], args[1][:, 1:], *args[2:])
    with pytest.raises(ValueError, match="point_weights requires grad"):
        conditioned_mlp_penalty(args[0], args[1].clone().requires_grad_(), *args[2:])
    for batch, points in ((0, 7), (2, 0)):
        empty = penalty_args(batch=batch, points=points)
        x = empty[0].requires_grad_()
        y = conditioned_mlp_penalty(*empty)
        assert y.shape == (batch,) and not y.any()
        y.sum().backward()
        assert x.grad.shape == x.shape


@requires_cuda
def test_cuda_matches_cpu():
    args = mlp_args(dtype=torch.float32, features=43, width=64, points=300)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [a.to(device).requires_grad_(i in DIFFERENTIABLE) for i, a in enumerate(args)]
        y = conditioned_mlp(*leaves)
        results.append([y, *torch.autograd.grad(y.sum(), [leaves[i] for i in DIFFERENTIABLE])])
    for c, g in zip(*results):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-4, atol=1e-4)


@requires_cuda
def test_cuda_penalty_matches_cpu():
    args = penalty_args(dtype=torch.float32, features=43, width=64, points=300)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [a.to(device).requires_grad_(i in (0, 8, 9)) for i, a in enumerate(args)]
        y = conditioned_mlp_penalty(*leaves, truncate=True)
        results.append([y, *torch.autograd.grad(y.sum(), [leaves[i] for i in (0, 8, 9)])])
    for c, g in zip(*results):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The network


@pytest.fixture(scope="module")
def net():
    return HandOccupancyNet.pretrained()


@pytest.fixture(scope="module")
def hands():
    model = HandModel("right")
    params = model.sample_poses(4, torch.Generator().manual_seed(3), global_rotation=True, length_jitter=0.1)
    return model(params)


def test_eval_mode_fused_equals_torch_modules(net, hands):
    """The eval-mode decoder (fused op) against the same decoder as torch modules, forward and
    gradients to points and joints, on an untrained float64 net with random BN statistics."""
    torch.manual_seed(0)
    fresh = HandOccupancyNet().double()
    for p in fresh.parameters():
        p.data.normal_(0, 0.2)
    for norm in fresh.decoder.norms:
        norm.running_mean.normal_(0, 0.3)
        norm.running_var.uniform_(0.5, 2)
    fresh.eval().requires_grad_(False)
    joints = hands.joints.double().requires_grad_()
    points = (hands.verts.double() + 0.01 * torch.randn_like(hands.verts.double())).requires_grad_()
    fused = fresh(points, joints)
    fresh.decoder.forward = fresh.decoder.forward_torch  # same weights, torch modules
    plain = fresh(points, joints)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(fused.sum(), [points, joints]), torch.autograd.grad(plain.sum(), [points, joints])):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("cull_margin,truncate", [(None, False), (HAND_CULL_MARGIN, False), (HAND_CULL_MARGIN, True)])
def test_net_penalty_equals_the_penalty_of_its_logits(hands, cull_margin, truncate):
    """HandOccupancyNet.penalty (the fused value-and-gradient op) against the reference penalty of
    its logits (the fused logits op), value and gradients to points and joints, with and without
    culling, on an untrained float64 net whose logits straddle 0."""
    torch.manual_seed(1)
    fresh = HandOccupancyNet().double()
    for p in fresh.parameters():
        p.data.normal_(0, 0.1)  # logits of order 1: probabilities not saturated
    fresh.eval().requires_grad_(False)
    joints = hands.joints.double().requires_grad_()
    verts = hands.verts.double()
    g = torch.Generator().manual_seed(4)
    points = torch.cat([verts + 0.01 * torch.randn(verts.shape, generator=g, dtype=verts.dtype),
                        verts[:, :50] + 0.2 * torch.randn(4, 50, 3, generator=g, dtype=verts.dtype)], 1).requires_grad_()
    with torch.no_grad():
        fresh.decoder.fc_out.bias -= fresh(points, joints).median()  # half the points inside
    fused = fresh.penalty(points, joints, cull_margin, truncate)
    logits = fresh(points, joints, cull_margin)
    assert (logits > 0).any() and (logits < 0).any()
    plain = ref.occupancy_penalty(logits, torch.ones_like(logits), truncate)
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    for a, b in zip(torch.autograd.grad(fused.sum(), [points, joints]), torch.autograd.grad(plain.sum(), [points, joints])):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_invariant_to_rigid_motion(net, hands):
    rot = handgeom.hand.kinematics.axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.7]))
    shift = torch.tensor([0.2, -0.1, 0.05])
    a = net(hands.verts, hands.joints)
    b = net(hands.verts @ rot.T + shift, hands.joints @ rot.T + shift)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_pretrained_reaches_iou_target(net):
    """Fresh random poses (not the training stream's seed), 32^3 grids: IoU >= 0.9."""
    iou = grid_iou(net, HandModel("right", "fine"), hands=8, resolution=32, seed=2024, progress=False)
    assert iou >= 0.9, iou


def test_culling_with_a_3cm_margin_keeps_every_inside_point(net):
    """Culled points are outside the hand mesh (none of the culled answers is a true inside); the
    points it changes were the network's far-field false positives."""
    model = HandModel("right", "fine")
    hands = model(model.sample_poses(4, torch.Generator().manual_seed(3), global_rotation=True, length_jitter=0.1))
    points = hands.verts[:, :1] + 0.12 * torch.randn(4, 2000, 3, generator=torch.Generator().manual_seed(0))
    full, culled = net(points, hands.joints), net(points, hands.joints, cull_margin=0.03)
    truth = handgeom.ops.points_inside_mesh(points, hands.verts, model.faces)
    assert (culled == OUTSIDE_LOGIT).any() and (culled != OUTSIDE_LOGIT).any()
    kept = culled != OUTSIDE_LOGIT
    torch.testing.assert_close(culled[kept], full[kept])
    assert not (truth & ~kept).any()
    assert ((culled > 0) != truth).sum() <= ((full > 0) != truth).sum()


def test_hand_cull_margin_holds_the_whole_hand():
    """The claim behind HAND_CULL_MARGIN: every vertex of the hand model lies within it of the
    joints' canonical box, over random poses, rotations and bone lengths."""
    model = HandModel("right", "fine")
    out = model(model.sample_poses(500, torch.Generator().manual_seed(8), global_rotation=True, length_jitter=0.1))
    origin, rotation = canonical_frame(out.joints)
    joints, verts = ((x - origin[:, None]) @ rotation.transpose(1, 2) for x in (out.joints, out.verts))
    reach = torch.maximum(joints.amin(1, keepdim=True) - verts, verts - joints.amax(1, keepdim=True)).amax()
    assert 0.01 < reach < HAND_CULL_MARGIN, reach


def test_pretrained_says_outside_far_from_the_hand(net):
    """No false positives 1 to 20 cm outside the hand's box grown by 1 cm, where the other hand's
    points lie (the far-field training samples)."""
    model = HandModel("right", "fine")
    g = torch.Generator().manual_seed(5)
    joints, verts = hand_samples(model, 16, g)
    lo, hi = grown_box(verts)
    points = (lo - 0.2) + torch.rand(16, 4096, 3, generator=g) * (hi - lo + 0.4)
    outside = ((points < lo) | (points > hi)).any(-1)
    assert outside.float().mean() > 0.8
    assert not ((net(points, joints) > 0) & outside).any()


def test_net_rejects_bad_shapes(net, hands):
    with pytest.raises(ValueError, match="points must have shape"):
        net(hands.verts[0], hands.joints)
    with pytest.raises(ValueError, match="joints must have shape"):
        net(hands.verts, hands.joints[:, :20])


# ---------------------------------------------------------------------------------------------
# Intersection loss and count


@pytest.fixture(scope="module")
def clasped():
    right, left = two_hand_preset("clasped")
    batched = lambda out: HandOutput(out.joints[None], out.verts[None], out.bone_frames[None])  # noqa: E731
    return batched(HandModel("left")(left)), batched(HandModel("right")(right))


def test_dense_points():
    joints = torch.randn(2, 21, 3)
    dense = hand_query_points(joints, "dense")
    assert dense.shape == (2, 121, 3)
    torch.testing.assert_close(dense[:, 21], joints[:, 0] + (joints[:, 1] - joints[:, 0]) / 6)


@pytest.mark.parametrize("points", ["sparse", "dense", "mesh"])
def test_loss_decreases_apart_and_gradient_separates(points):
    """A right and a left hand overlapping palm on palm, the left pulled out along its back (+z)."""
    right_model, left_model = HandModel("right"), HandModel("left")
    right = right_model(right_model.pose((1,), index_mcp_flex=20))
    left = left_model(left_model.pose((1,), middle_mcp_flex=20))
    away = torch.tensor([0.0, 0.0, 1.0])

    def loss(offset, joints=left.joints, verts=left.verts):
        return intersection_loss(joints + offset * away, right.joints, points=points, verts_left=verts + offset * away,
                                 verts_right=right.verts)

    losses = [loss(d).item() for d in (0.01, 0.03, 0.15)]
    assert losses[0] > losses[1] > losses[2] >= 0 and losses[0] > 1 and losses[2] < 1e-3, losses
    joints, verts = left.joints.clone().requires_grad_(), left.verts.clone().requires_grad_()
    grad_j, grad_v = torch.autograd.grad(loss(0.01, joints, verts), [joints, verts], allow_unused=True)
    total = grad_j.sum((0, 1)) + (grad_v.sum((0, 1)) if grad_v is not None else 0)
    assert (total * away).sum() < 0  # descending moves the left hand away from the right


def test_loss_options(clasped):
    left, right = clasped
    one = intersection_loss(left.joints, right.joints, both=False)
    two = intersection_loss(left.joints, right.joints)
    flipped = intersection_loss(mirror(right.joints), mirror(left.joints), both=False)  # the other term alone
    torch.testing.assert_close(two, one + flipped)
    assert intersection_loss(left.joints, right.joints, truncate=True) <= two
    batch = intersection_loss(left.joints.repeat(3, 1, 1), right.joints.repeat(3, 1, 1), reduction="none")
    torch.testing.assert_close(batch, two.repeat(3))
    with pytest.raises(ValueError, match="needs verts_left"):
        intersection_loss(left.joints, right.joints, points="mesh")
    with pytest.raises(ValueError, match=r"joints_left must have shape \[B, 21, 3\]"):
        intersection_loss(left.joints[:, :20], right.joints)


def test_occupancy_count_correlates_with_exact_count():
    """Random interacting pairs: random poses, the left hand placed near the right."""
    gen = torch.Generator().manual_seed(7)
    right_model, left_model = HandModel("right"), HandModel("left")
    pairs = 16
    r = right_model(right_model.sample_poses(pairs, gen, global_rotation=True))
    lp = left_model.sample_poses(pairs, gen, global_rotation=True)
    lp.translation = r.joints[:, 9] + 0.03 * torch.randn(pairs, 3, generator=gen)
    l = left_model(lp)
    exact = count_intersections(l.verts, left_model.faces, r.verts, right_model.faces).double()
    occupancy = count_intersections_occupancy(l.joints, r.joints).double()
    assert exact.max() > 100
    corr = torch.corrcoef(torch.stack([exact, occupancy]))[0, 1]
    assert corr > 0.8, (corr, exact, occupancy)
