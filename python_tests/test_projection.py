"""bone_plane_projection and sample_joint_features against the references in references.py."""

import pytest
import torch

import handgeom
from handgeom.ops import bone_plane_projection, sample_joint_features
import references as ref

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Hand bones plus a point plane (parent == child).
BONES = torch.tensor(ref.HAND_BONES + [(4, 4)])


def random_inputs(batch=3, joints=21, channels=5, dtype=torch.float64, spread=1.3, seed=0):
    """Joints spread beyond the image ([-spread, spread]); with 21 joints, adversarial
    coincidences: joints 7 and 8 coincide (a zero-length bone) and joint 2 sits exactly on a
    pixel centre."""
    gen = torch.Generator().manual_seed(seed)
    uv = (torch.rand(batch, joints, 2, generator=gen, dtype=dtype) * 2 - 1) * spread
    if joints == 21:
        uv[:, 8] = uv[:, 7]
        uv[:, 2] = torch.tensor([(2 * 5.5 / 20) - 1, (2 * 3.5 / 12) - 1], dtype=dtype)  # pixel (3, 5) of 12x20
    feat = torch.randn(batch, joints, channels, generator=gen, dtype=dtype)
    return uv, feat


CASES = [  # size, radius, profile, sigma
    ((12, 20), 2.5, "hard", None),
    ((16, 16), 1.0, "hard", None),
    ((12, 20), 0.3, "hard", None),  # radius below a pixel
    ((12, 20), 2.0, "gaussian", 1.5),
    ((9, 7), 1.0, "gaussian", None),
    ((12, 45), 1.5, "hard", None),  # several CPU column tiles, the last one partial
]


def mask_margin(uv, size, radius, profile, sigma):
    """|d - reach| per [B, H*W, P]: pixels this close to the mask edge may flip under rounding."""
    d, _, _ = ref.bone_plane_geometry(uv.double(), BONES, size)
    reach = ref.mask_reach(radius, profile, radius if sigma is None else sigma)
    return (d - reach).abs()


@pytest.mark.parametrize("size,radius,profile,sigma", CASES)
def test_forward_matches_reference_float64(size, radius, profile, sigma):
    uv, feat = random_inputs()
    out = bone_plane_projection(uv, feat, BONES, size, radius, profile, sigma)
    expected = ref.bone_plane_projection(uv, feat, BONES, size, radius, profile, sigma)
    assert out.shape == (3, BONES.shape[0] * 5, *size)
    assert expected.abs().sum() > 0  # the case draws something
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,radius,profile,sigma", CASES)
def test_forward_float32_matches_float64_reference(size, radius, profile, sigma):
    uv, feat = random_inputs(seed=1)
    out = bone_plane_projection(uv.float(), feat.float(), BONES, size, radius, profile, sigma)
    expected = ref.bone_plane_projection(uv, feat, BONES, size, radius, profile, sigma)
    # compare away from the mask edge, where float32 rounding may legitimately flip a pixel
    batch, planes, channels = 3, BONES.shape[0], 5
    keep = mask_margin(uv, size, radius, profile, sigma) > 1e-4  # [B, HW, P]
    keep = keep.permute(0, 2, 1).reshape(batch, planes, 1, *size).expand(-1, -1, channels, -1, -1)
    keep = keep.reshape(batch, planes * channels, *size)
    assert keep.float().mean() > 0.99
    torch.testing.assert_close(out.double()[keep], expected[keep], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,radius,profile,sigma", CASES)
def test_backward_matches_reference(size, radius, profile, sigma):
    uv, feat = random_inputs(seed=2)
    grad_out = torch.randn(3, BONES.shape[0] * 5, *size, dtype=torch.float64)
    grads = []
    for fn in (bone_plane_projection, ref.bone_plane_projection):
        u, f = uv.clone().requires_grad_(), feat.clone().requires_grad_()
        out = fn(u, f, BONES, size, radius, profile, sigma)
        grads.append(torch.autograd.grad(out, (u, f), grad_out))
    (uv_grad, feat_grad), (uv_expected, feat_expected) = grads
    assert feat_expected.abs().sum() > 0 and uv_expected.abs().sum() > 0
    torch.testing.assert_close(feat_grad, feat_expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(uv_grad, uv_expected, rtol=1e-10, atol=1e-10)
    assert torch.isfinite(uv_grad).all()  # joint on a pixel centre, zero-length bone


def test_joints_far_outside_the_image():
    uv, feat = random_inputs(seed=12)
    uv[:, 5:9] *= 50  # bones crossing the image from far away, and bones entirely outside
    out = bone_plane_projection(uv, feat, BONES, (12, 20), 2.3)
    expected = ref.bone_plane_projection(uv, feat, BONES, (12, 20), 2.3)
    assert expected[:, 4 * 5:8 * 5].abs().sum() > 0  # some far bone crosses the image
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_backward_in_several_channel_chunks():
    """70 channels: the CPU backward splits them into chunks of 64 and 6."""
    uv, feat = random_inputs(batch=2, channels=70, seed=13)
    grad_out = torch.randn(2, BONES.shape[0] * 70, 10, 11, dtype=torch.float64)
    grads = []
    for fn in (bone_plane_projection, ref.bone_plane_projection):
        u, f = uv.clone().requires_grad_(), feat.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(u, f, BONES, (10, 11), 2.0, "gaussian", 1.0), (u, f), grad_out))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_backward_is_deterministic_across_thread_counts():
    """Guards the design rule that CPU backward is a gather (no shared accumulators)."""
    uv, feat = random_inputs(batch=4, channels=16, dtype=torch.float32, seed=3)
    uv.requires_grad_(), feat.requires_grad_()
    grad_out = torch.randn(4, BONES.shape[0] * 16, 32, 32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            out = bone_plane_projection(uv, feat, BONES, 32, radius=2.0)
            results.append((out, *torch.autograd.grad(out, (uv, feat), grad_out)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_gradcheck_gaussian():
    uv, feat = random_inputs(batch=2, joints=6, channels=2, seed=4)
    bones = torch.tensor([(0, 1), (1, 2), (2, 3), (3, 3), (4, 5)])
    uv.requires_grad_(), feat.requires_grad_()
    fn = lambda u, f: bone_plane_projection(u, f, bones, (7, 9), profile="gaussian", sigma=1.2)
    assert torch.autograd.gradcheck(fn, (uv, feat), eps=1e-6, atol=1e-6)


def test_gradcheck_hard_away_from_mask_edge():
    bones = torch.tensor([(0, 1), (1, 2), (2, 3), (3, 3), (4, 5)])
    size, radius = (7, 9), 1.7
    for seed in range(100):  # a configuration with no pixel centre within 1e-3 px of an edge
        uv, feat = random_inputs(batch=2, joints=6, channels=2, spread=0.9, seed=seed)
        uv[:, 2] += 0.01  # off the pixel centre: |x - a| is not differentiable at 0
        d, _, _ = ref.bone_plane_geometry(uv, bones, size)
        if (d - radius).abs().min() > 1e-3:
            break
    else:
        pytest.fail("no configuration away from the mask edge")
    uv.requires_grad_(), feat.requires_grad_()
    fn = lambda u, f: bone_plane_projection(u, f, bones, size, radius=radius)
    assert torch.autograd.gradcheck(fn, (uv, feat), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("profile", ["hard", "gaussian"])
def test_opcheck(profile):
    uv, feat = random_inputs(batch=2, joints=21, channels=3, seed=5)
    args = (uv.requires_grad_(), feat.requires_grad_(), BONES, 8, 10, 1.5, profile, 1.0)
    torch.library.opcheck(torch.ops.handgeom.bone_plane_projection.default, args)


def test_torch_compile_matches_eager():
    uv, feat = random_inputs(batch=2, channels=4, dtype=torch.float32, seed=6)

    def head(u, f):
        planes = bone_plane_projection(u, f, BONES, 16, radius=2.0)
        return planes.relu().sum(dim=(2, 3))

    compiled = torch.compile(head, fullgraph=True)
    u1, f1 = uv.clone().requires_grad_(), feat.clone().requires_grad_()
    u2, f2 = uv.clone().requires_grad_(), feat.clone().requires_grad_()
    out_eager, out_compiled = head(u1, f1), compiled(u2, f2)
    torch.testing.assert_close(out_compiled, out_eager)
    out_eager.sum().backward(), out_compiled.sum().backward()
    torch.testing.assert_close(u2.grad, u1.grad)
    torch.testing.assert_close(f2.grad, f1.grad)


def test_non_contiguous_inputs_match_contiguous():
    uv, feat = random_inputs(channels=6, seed=7)
    uv_nc = uv.transpose(1, 2).contiguous().transpose(1, 2)  # same values, strided
    feat_nc = feat.repeat_interleave(2, dim=2)[:, :, ::2]
    bones_nc = BONES.t().contiguous().t()
    assert not (uv_nc.is_contiguous() or feat_nc.is_contiguous() or bones_nc.is_contiguous())
    expected = bone_plane_projection(uv, feat, BONES, (12, 20), 2.0)
    torch.testing.assert_close(bone_plane_projection(uv_nc, feat_nc, bones_nc, (12, 20), 2.0), expected)


def test_int32_bones_and_point_plane():
    uv, feat = random_inputs(seed=8)
    expected = bone_plane_projection(uv, feat, BONES, 16, 2.0)
    torch.testing.assert_close(bone_plane_projection(uv, feat, BONES.int(), 16, 2.0), expected)
    # a point plane is the joint's feature on a disc around it
    point = bone_plane_projection(uv, feat, [(4, 4)], 16, 2.0)
    on = point[:, :1] != 0
    assert on.any() and torch.allclose(point[:, 1][on[:, 0]] / point[:, 0][on[:, 0]],
                                       (feat[:, 4, 1] / feat[:, 4, 0]).unsqueeze(1).expand(-1, 256)[on.reshape(3, -1)])


def test_empty_inputs():
    uv, feat = random_inputs()
    assert bone_plane_projection(uv[:0], feat[:0], BONES, 8).shape == (0, BONES.shape[0] * 5, 8, 8)
    assert bone_plane_projection(uv, feat[:, :, :0], BONES, 8).shape == (3, 0, 8, 8)
    empty = bone_plane_projection(uv, feat, torch.zeros(0, 2, dtype=torch.long), 8)
    assert empty.shape == (3, 0, 8, 8)
    u, f = uv[:0].clone().requires_grad_(), feat[:0].clone().requires_grad_()
    bone_plane_projection(u, f, BONES, 8).sum().backward()
    assert u.grad.shape == u.shape and f.grad.shape == f.shape


def _bad(**change):
    uv, feat = random_inputs(batch=2)
    args = dict(joint_uv=uv, joint_feat=feat, bones=BONES, size=8, radius=1.0, profile="hard", sigma=None)
    args.update(change)
    return args


nan_uv = random_inputs(batch=2)[0].clone()
nan_uv[1, 3, 0] = float("nan")
inf_uv = random_inputs(batch=2)[0].clone()
inf_uv[0, 0, 1] = float("inf")

BAD_INPUTS = [
    (_bad(joint_uv=torch.zeros(2, 21)), RuntimeError, "joint_uv must have shape [*, *, 2], got [2, 21]"),
    (_bad(joint_uv=torch.zeros(2, 21, 3, dtype=torch.float64)), RuntimeError, "joint_uv must have shape"),
    (_bad(joint_feat=torch.zeros(3, 21, 5, dtype=torch.float64)), RuntimeError, "joint_feat must have shape [2, 21, *]"),
    (_bad(joint_feat=torch.zeros(2, 21, 5)), RuntimeError, "joint_feat must have the dtype of joint_uv"),
    (_bad(joint_uv=torch.zeros(2, 21, 2, dtype=torch.long)), RuntimeError, "joint_uv must be float32 or float64"),
    (_bad(bones=torch.tensor([[0, 1, 2]])), RuntimeError, "bones must have shape [*, 2]"),
    (_bad(bones=torch.tensor([[0, 21]])), RuntimeError, "bones entries must lie in [0, 21), got values in [0, 21]"),
    (_bad(bones=torch.tensor([[-1, 3]])), RuntimeError, "bones entries must lie in [0, 21)"),
    (_bad(bones=torch.tensor([[0.0, 1.0]])), RuntimeError, "bones must be int64"),
    (_bad(joint_uv=nan_uv), RuntimeError, "joint_uv must be finite"),
    (_bad(joint_uv=inf_uv), RuntimeError, "joint_uv must be finite"),
    (_bad(joint_uv=torch.full((2, 21, 2), 2.0 ** 20 + 1, dtype=torch.float64)), RuntimeError,
     "joint_uv must be finite and within [-1048576, 1048576]"),
    (_bad(size=(8,)), ValueError, "size must be an integer or a pair (H, W), got (8,)"),
    (_bad(size=8.0), TypeError, "size must be an integer, got 8.0"),
    (_bad(radius=0.0), RuntimeError, "radius must be positive"),
    (_bad(radius=float("nan")), ValueError, "radius must be finite"),
    (_bad(radius="1"), TypeError, "radius must be a real number"),
    (_bad(profile="gaussian", sigma=-1.0), RuntimeError, "sigma must be positive"),
    (_bad(profile="box"), ValueError, "profile must be 'hard' or 'gaussian'"),
    (_bad(size=(0, 8)), RuntimeError, "size must lie in [1, 1048576], got (0, 8)"),
    (_bad(size=(8, -2)), RuntimeError, "size must lie in [1, 1048576], got (8, -2)"),
    (_bad(size=(8, 1 << 21)), RuntimeError, "size must lie in [1, 1048576]"),
]


@pytest.mark.parametrize("args,error,message", BAD_INPUTS)
def test_bad_input_is_rejected_with_a_named_argument(args, error, message):
    with pytest.raises(error) as info:
        bone_plane_projection(**args)
    assert message in str(info.value)


def test_bad_profile_is_rejected_by_the_operator_itself():
    uv, feat = random_inputs()
    with pytest.raises(RuntimeError, match="profile must be 'hard' or 'gaussian', got 'box'"):
        torch.ops.handgeom.bone_plane_projection(uv, feat, BONES, 8, 8, 1.0, "box", 1.0)


@pytest.mark.parametrize("grad_out,message", [
    (torch.zeros(3, 104, 8, 8, dtype=torch.float64), r"grad_out must have shape \[3, 105, 8, 8\]"),
    (torch.zeros(3, 105, 8, 8), "grad_out must have the dtype of joint_uv"),
])
def test_backward_op_checks_grad_out(grad_out, message):
    uv, feat = random_inputs()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.handgeom.bone_plane_projection_backward(grad_out, uv, feat, BONES, 8, 8, 1.0, "hard", 1.0)


# sample_joint_features --------------------------------------------------------------------------


def test_sample_joint_features_matches_bilinear_reference():
    gen = torch.Generator().manual_seed(9)
    feat = torch.randn(2, 4, 9, 13, generator=gen, dtype=torch.float64)
    uv = (torch.rand(2, 21, 2, generator=gen, dtype=torch.float64) * 2 - 1) * 1.2  # some outside
    torch.testing.assert_close(sample_joint_features(feat, uv), ref.bilinear_sample(feat, uv))
    feat.requires_grad_(), uv.requires_grad_()
    assert torch.autograd.gradcheck(sample_joint_features, (feat, uv))


def test_sample_joint_features_inverts_a_constant_projection():
    uv, feat = random_inputs(batch=2, channels=3, spread=0.8, seed=10)
    planes = bone_plane_projection(uv, feat, [(5, 5)], 32, radius=3.0)  # disc of joint 5's feature
    torch.testing.assert_close(sample_joint_features(planes, uv[:, 5:6])[:, 0], feat[:, 5])


@pytest.mark.parametrize("feat,uv,error,message", [
    (torch.zeros(2, 4, 8), torch.zeros(2, 21, 2), ValueError, "feat must have shape [B, C, H, W]"),
    (torch.zeros(2, 4, 8, 8), torch.zeros(3, 21, 2), ValueError, "joint_uv must have shape [B, J, 2] with B = 2"),
    (torch.zeros(2, 4, 8, 8), torch.zeros(2, 21, 2, dtype=torch.float64), TypeError, "joint_uv must have dtype torch.float32"),
    (torch.zeros(2, 4, 8, 8, dtype=torch.long), torch.zeros(2, 21, 2), TypeError, "feat must be a floating point tensor"),
    (torch.zeros(2, 4, 0, 8), torch.zeros(2, 21, 2), ValueError, "feat must have H, W >= 1"),
])
def test_sample_joint_features_bad_input(feat, uv, error, message):
    with pytest.raises(error) as info:
        sample_joint_features(feat, uv)
    assert message in str(info.value)


# CUDA parity (runs on the first machine with a GPU) ----------------------------------------------


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size,radius,profile,sigma", CASES)
def test_cuda_matches_cpu(size, radius, profile, sigma, dtype):
    """19 channels: the CUDA backward runs 3 channel chunks. Joints are kept 1e-3 px away from
    the mask edge, where fused multiply-adds on the GPU may round a pixel the other way."""
    for seed in range(11, 200):
        uv, feat = random_inputs(dtype=dtype, channels=19, seed=seed)
        if mask_margin(uv, size, radius, profile, sigma).min() > 1e-3:
            break
    grad_out = torch.randn(3, BONES.shape[0] * 19, *size, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        u = uv.to(device).requires_grad_()
        f = feat.to(device).requires_grad_()
        out = bone_plane_projection(u, f, BONES.to(device), size, radius, profile, sigma)
        results.append([t.cpu() for t in (out, *torch.autograd.grad(out, (u, f), grad_out.to(device)))])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda, cpu, **tol)


@requires_cuda
def test_cuda_device_mismatch_is_rejected():
    uv, feat = random_inputs()
    with pytest.raises(RuntimeError, match="joint_feat must be on the device of joint_uv"):
        bone_plane_projection(uv.cuda(), feat, BONES.cuda(), 8)
    with pytest.raises(RuntimeError, match="bones must be on the device of joint_uv"):
        bone_plane_projection(uv.cuda(), feat.cuda(), BONES, 8)


def test_build_info_reports_the_build():
    info = handgeom.build_info()
    assert info["version"] == handgeom.__version__
    assert info["torch_built_against"] == torch.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert bool(info["cuda_archs"]) == info["cuda"]


# bone_plane_projection's backward reads the incoming gradient in place -------------------------


def _lit(uv, size, radius, profile="hard", sigma=None):
    """[B, P, H, W] bool: the pixels each bone's mask lights (from the float64 reference)."""
    d, _, _ = ref.bone_plane_geometry(uv.double(), BONES, size)
    reach = ref.mask_reach(radius, profile, radius if sigma is None else sigma)
    return (d < reach).permute(0, 2, 1).reshape(uv.shape[0], BONES.shape[0], *size)


@pytest.mark.parametrize("layout", ["expanded", "transposed", "sliced", "channels_last"])
def test_projection_backward_reads_strided_gradients(layout):
    """The gradient of out.sum() is an expanded scalar; others are views with odd strides."""
    uv, feat = random_inputs(seed=14)
    size, channels = (12, 20), 5
    shape = (3, BONES.shape[0] * channels, *size)
    gen = torch.Generator().manual_seed(15)
    if layout == "expanded":
        grad_out = torch.tensor(1.7, dtype=torch.float64).expand(shape)
    elif layout == "transposed":
        grad_out = torch.randn(3, shape[1], size[1], size[0], generator=gen, dtype=torch.float64).transpose(2, 3)
    elif layout == "sliced":
        grad_out = torch.randn(3, shape[1], size[0], 2 * size[1], generator=gen, dtype=torch.float64)[..., 1::2]
    else:
        grad_out = torch.randn(shape, generator=gen, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert not grad_out.is_contiguous()
    grads = []
    for fn, g in ((bone_plane_projection, grad_out), (ref.bone_plane_projection, grad_out.contiguous())):
        u, f = uv.clone().requires_grad_(), feat.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(u, f, BONES, size, 2.0, "gaussian", 1.0), (u, f), g))
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_projection_backward_reads_only_lit_pixels():
    """NaN in the incoming gradient wherever no mask reaches changes nothing."""
    uv, feat = random_inputs(seed=16)
    size, radius, channels = (12, 20), 2.0, 5
    grad_out = torch.randn(3, BONES.shape[0] * channels, *size, dtype=torch.float64)
    lit = _lit(uv, size, radius).repeat_interleave(channels, dim=1)
    poisoned = torch.where(lit, grad_out, torch.full_like(grad_out, float("nan")))
    grads = []
    for g in (grad_out * lit, poisoned):
        u, f = uv.clone().requires_grad_(), feat.clone().requires_grad_()
        grads.append(torch.autograd.grad(bone_plane_projection(u, f, BONES, size, radius), (u, f), g))
    for clean, dirty in zip(*grads):
        assert torch.isfinite(dirty).all()
        torch.testing.assert_close(dirty, clean, rtol=0, atol=0)


# bone_plane_conv -------------------------------------------------------------------------------

from handgeom.ops import bone_plane_conv  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def composition(uv, feat, bones, weight, bias, size, radius=1.0, profile="hard", sigma=None):
    """What bone_plane_conv equals: handgeom's projection, then conv2d."""
    planes = bone_plane_projection(uv, feat, bones, size, radius, profile, sigma)
    return F.conv2d(planes, weight, bias, padding=weight.shape[-1] // 2)


def conv_inputs(out_channels=19, k=3, channels=5, dtype=torch.float64, seed=20, batch=3, far=True, bias=True):
    """Joints of random_inputs (a zero-length bone, a point plane, joints beyond the image) with
    some bones leaving the map or lying wholly outside it, and a weight whose O = 19 is not a
    multiple of the CPU's 32-channel chunks."""
    uv, feat = random_inputs(batch=batch, channels=channels, dtype=dtype, seed=seed)
    if far:
        uv[:, 10:12] *= 3.0  # bones 9-11 cross the border or stay outside
    gen = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(out_channels, BONES.shape[0] * channels, k, k, generator=gen, dtype=dtype) / k
    b = torch.randn(out_channels, generator=gen, dtype=dtype) if bias else None
    return uv, feat, weight, b


def conv_grads(fn, uv, feat, weight, bias, grad_out, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (uv, feat, weight)]
    leaves.append(None if bias is None else bias.detach().clone().requires_grad_())
    out = fn(leaves[0], leaves[1], BONES, leaves[2], leaves[3], **kw)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)
    return out, grads


def assert_conv_close(got, expected, dtype):
    # relative to each tensor's scale: the sums run in another order
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        scale = e.abs().max().clamp_min(1e-30)
        assert e.abs().sum() > 0
        torch.testing.assert_close(g / scale, e / scale, rtol=0, atol=tol)


CONV_CASES = [  # size, radius, profile, sigma
    ((12, 20), 2.0, "hard", None),
    ((9, 7), 1.0, "hard", None),
    ((12, 20), 1.5, "gaussian", 1.0),
    ((16, 16), 1.0, "gaussian", None),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("size,radius,profile,sigma", CONV_CASES)
def test_conv_matches_composition(size, radius, profile, sigma, k, dtype):
    """Forward and the gradients of joint_uv, joint_feat, weight and bias."""
    uv, feat, weight, bias = conv_inputs(k=k, dtype=dtype)
    grad_out = torch.randn(3, weight.shape[0], *size, generator=torch.Generator().manual_seed(22), dtype=dtype)
    kw = dict(size=size, radius=radius, profile=profile, sigma=sigma)
    got = conv_grads(bone_plane_conv, uv, feat, weight, bias, grad_out, **kw)
    expected = conv_grads(composition, uv, feat, weight, bias, grad_out, **kw)
    assert got[0].shape == (3, 19, *size)
    assert_conv_close([got[0], *got[1]], [expected[0], *expected[1]], dtype)


@pytest.mark.parametrize("profile", ["hard", "gaussian"])
def test_conv_matches_brute_force_reference(profile):
    """Against the planes of the float64 brute-force projection (no handgeom code at all)."""
    uv, feat, weight, bias = conv_inputs(seed=23)
    size = (12, 20)
    grad_out = torch.randn(3, 19, *size, generator=torch.Generator().manual_seed(24), dtype=torch.float64)
    kw = dict(size=size, radius=2.0, profile=profile, sigma=1.2)
    reference = lambda u, f, bones, w, b, **kw: ref.bone_plane_conv(u, f, bones, w, b, **kw)  # noqa: E731
    got = conv_grads(bone_plane_conv, uv, feat, weight, bias, grad_out, **kw)
    expected = conv_grads(reference, uv, feat, weight, bias, grad_out, **kw)
    assert_conv_close([got[0], *got[1]], [expected[0], *expected[1]], torch.float64)


@pytest.mark.parametrize("out_channels", [1, 32, 45, 70])
def test_conv_output_channel_chunks(out_channels):
    """Exactly one chunk, a partial second chunk, three chunks; no bias; 70 input channels per
    plane (the projection's 64-channel backward chunks; and at O = 70 the CPU's backward copies the
    NCHW gradient in two blocks of channels, 64 and 6, and takes the bones 11 at a time, 4 MiB of
    scratch: 21 bones in 2 groups for the first block, the last partial, and 1 for the second)."""
    channels = 70 if out_channels == 70 else 3
    uv, feat, weight, _ = conv_inputs(out_channels=out_channels, channels=channels, seed=25, batch=2, bias=False)
    size = (10, 11)
    grad_out = torch.randn(2, out_channels, *size, generator=torch.Generator().manual_seed(26), dtype=torch.float64)
    kw = dict(size=size, radius=1.7, profile="gaussian", sigma=0.8)
    got = conv_grads(bone_plane_conv, uv, feat, weight, None, grad_out, **kw)
    expected = conv_grads(composition, uv, feat, weight, None, grad_out, **kw)
    assert_conv_close([got[0], *got[1]], [expected[0], *expected[1]], torch.float64)


def test_conv_forward_in_several_bone_groups():
    """k = 5 and O = 200 (padded to 224) with 70 channels per plane: 3.5 MB of forward scratch
    per bone, so the CPU's forward (16 MiB of it) takes the bones 4 at a time, 21 bones in 6
    groups, the last partial, each adding to the output."""
    uv, feat, weight, bias = conv_inputs(out_channels=200, k=5, channels=70, seed=27, batch=2)
    size = (10, 11)
    grad_out = torch.randn(2, 200, *size, generator=torch.Generator().manual_seed(28), dtype=torch.float64)
    kw = dict(size=size, radius=1.5)
    got = conv_grads(bone_plane_conv, uv, feat, weight, bias, grad_out, **kw)
    expected = conv_grads(composition, uv, feat, weight, bias, grad_out, **kw)
    assert_conv_close([got[0], *got[1]], [expected[0], *expected[1]], torch.float64)


def test_conv_non_contiguous_weight_and_inputs():
    uv, feat, weight, bias = conv_inputs(seed=27)
    weight_nc = weight.transpose(2, 3).contiguous().transpose(2, 3)  # same values, strided
    bigger = torch.zeros(2 * weight.shape[0], *weight.shape[1:], dtype=weight.dtype)
    bigger[::2] = weight
    uv_nc = uv.transpose(1, 2).contiguous().transpose(1, 2)
    feat_nc = feat.repeat_interleave(2, dim=2)[:, :, ::2]
    assert not (weight_nc.is_contiguous() or bigger[::2].is_contiguous() or uv_nc.is_contiguous())
    kw = dict(size=(12, 20), radius=2.0)
    expected = composition(uv, feat, BONES, weight, bias, **kw)
    for w in (weight_nc, bigger[::2]):
        torch.testing.assert_close(bone_plane_conv(uv_nc, feat_nc, BONES, w, bias, **kw), expected, rtol=1e-11, atol=1e-11)
    # and the weight's gradient for a strided weight
    w = weight_nc.clone().requires_grad_()
    w2 = weight.clone().requires_grad_()
    bone_plane_conv(uv, feat, BONES, w, bias, **kw).square().sum().backward()
    composition(uv, feat, BONES, w2, bias, **kw).square().sum().backward()
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", ["expanded", "channels_last", "transposed"])
def test_conv_backward_strided_gradients(layout):
    uv, feat, weight, bias = conv_inputs(seed=28)
    size = (12, 20)
    shape = (3, 19, *size)
    gen = torch.Generator().manual_seed(29)
    if layout == "expanded":
        grad_out = torch.tensor(0.3, dtype=torch.float64).expand(shape)
    elif layout == "channels_last":
        grad_out = torch.randn(shape, generator=gen, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    else:
        grad_out = torch.randn(3, 19, size[1], size[0], generator=gen, dtype=torch.float64).transpose(2, 3)
    kw = dict(size=size, radius=2.0, profile="gaussian", sigma=1.0)
    got = conv_grads(bone_plane_conv, uv, feat, weight, bias, grad_out, **kw)
    expected = conv_grads(composition, uv, feat, weight, bias, grad_out.contiguous(), **kw)
    assert_conv_close(got[1], expected[1], torch.float64)


def test_conv_joints_far_outside_the_image():
    uv, feat, weight, bias = conv_inputs(seed=30)
    uv[:, 5:9] *= 50
    kw = dict(size=(12, 20), radius=2.3)
    expected = composition(uv, feat, BONES, weight, bias, **kw)
    torch.testing.assert_close(bone_plane_conv(uv, feat, BONES, weight, bias, **kw), expected, rtol=1e-11, atol=1e-11)


def test_conv_nan_features_where_the_planes_have_them():
    uv, feat, weight, bias = conv_inputs(seed=31)
    feat[1, 4, 2] = float("nan")  # the point plane's joint
    kw = dict(size=(12, 20), radius=2.0)
    expected = composition(uv, feat, BONES, weight, bias, **kw)
    got = bone_plane_conv(uv, feat, BONES, weight, bias, **kw)
    assert torch.equal(got.isnan(), expected.isnan()) and expected.isnan().any()
    torch.testing.assert_close(got.nan_to_num(), expected.nan_to_num(), rtol=1e-11, atol=1e-11)


def test_conv_empty_inputs():
    uv, feat, weight, bias = conv_inputs()
    kw = dict(size=(8, 9))
    u, f, w, b = (t[:0].clone() if i < 2 else t.clone() for i, t in enumerate((uv, feat, weight, bias)))
    u.requires_grad_(), f.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    out = bone_plane_conv(u, f, BONES, w, b, **kw)
    assert out.shape == (0, 19, 8, 9)
    out.sum().backward()
    assert u.grad.shape == u.shape and f.grad.shape == f.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    # no bones: the bias alone; no output channels: an empty map
    none = torch.zeros(0, 2, dtype=torch.long)
    out = bone_plane_conv(uv, feat, none, weight[:, :0], bias, **kw)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand(3, -1, 8, 9))
    assert bone_plane_conv(uv, feat, BONES, weight[:0], bias[:0], **kw).shape == (3, 0, 8, 9)


def test_conv_backward_reads_only_what_reaches_lit_pixels():
    """NaN in the incoming gradient farther than k // 2 from every lit pixel changes nothing."""
    uv, feat, weight, bias = conv_inputs(seed=32, bias=False)
    size, radius = (12, 20), 1.0
    grad_out = torch.randn(3, 19, *size, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    lit = _lit(uv, size, radius).any(1, keepdim=True).double()
    reach = F.max_pool2d(lit, 3, 1, 1) > 0  # within one pixel of a lit pixel (k = 3)
    assert not reach.all()
    poisoned = torch.where(reach, grad_out, torch.full_like(grad_out, float("nan")))
    clean = conv_grads(bone_plane_conv, uv, feat, weight, None, grad_out * reach, size=size, radius=radius)[1]
    dirty = conv_grads(bone_plane_conv, uv, feat, weight, None, poisoned, size=size, radius=radius)[1]
    for c, d in zip(clean, dirty):
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d, c, rtol=0, atol=0)


def test_conv_backward_is_deterministic_across_thread_counts():
    uv, feat, weight, bias = conv_inputs(channels=16, dtype=torch.float32, seed=34, batch=4)
    grad_out = torch.randn(4, 19, 32, 32, generator=torch.Generator().manual_seed(35))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(conv_grads(bone_plane_conv, uv, feat, weight, bias, grad_out, size=32, radius=2.0))
    finally:
        torch.set_num_threads(threads)
    (out1, g1), (out2, g2) = results
    assert torch.equal(out1, out2)
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_conv_gradcheck_gaussian():
    uv, feat = random_inputs(batch=2, joints=6, channels=2, seed=36)
    bones = torch.tensor([(0, 1), (1, 2), (2, 3), (3, 3), (4, 5)])
    gen = torch.Generator().manual_seed(37)
    weight = torch.randn(3, 10, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (uv, feat, weight, bias)]
    fn = lambda u, f, w, b: bone_plane_conv(u, f, bones, w, b, size=(7, 9), profile="gaussian", sigma=1.2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


def test_conv_gradcheck_hard_away_from_mask_edge():
    bones = torch.tensor([(0, 1), (1, 2), (2, 3), (3, 3), (4, 5)])
    size, radius = (7, 9), 1.7
    for seed in range(100):
        uv, feat = random_inputs(batch=2, joints=6, channels=2, spread=0.9, seed=seed)
        uv[:, 2] += 0.01
        d, _, _ = ref.bone_plane_geometry(uv, bones, size)
        if (d - radius).abs().min() > 1e-3:
            break
    else:
        pytest.fail("no configuration away from the mask edge")
    gen = torch.Generator().manual_seed(38)
    weight = torch.randn(2, 10, 5, 5, generator=gen, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (uv, feat, weight)]
    fn = lambda u, f, w: bone_plane_conv(u, f, bones, w, size=size, radius=radius)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("profile,with_bias", [("hard", True), ("gaussian", False)])
def test_conv_opcheck(profile, with_bias):
    uv, feat, weight, bias = conv_inputs(out_channels=4, channels=3, seed=39, batch=2)
    args = (uv.requires_grad_(), feat.requires_grad_(), BONES, weight.requires_grad_(),
            bias.requires_grad_() if with_bias else None, 8, 10, 1.5, profile, 1.0)
    torch.library.opcheck(torch.ops.handgeom.bone_plane_conv.default, args)


def test_conv_torch_compile_matches_eager():
    uv, feat, weight, bias = conv_inputs(channels=4, dtype=torch.float32, seed=40, batch=2)

    def head(u, f, w, b):
        return bone_plane_conv(u, f, BONES, w, b, size=16, radius=2.0).relu().sum(dim=(2, 3))

    compiled = torch.compile(head, fullgraph=True)
    eager_in = [t.clone().requires_grad_() for t in (uv, feat, weight, bias)]
    compiled_in = [t.clone().requires_grad_() for t in (uv, feat, weight, bias)]
    out_eager, out_compiled = head(*eager_in), compiled(*compiled_in)
    torch.testing.assert_close(out_compiled, out_eager)
    out_eager.sum().backward(), out_compiled.sum().backward()
    for a, b in zip(compiled_in, eager_in):
        torch.testing.assert_close(a.grad, b.grad)


def _conv_bad(**change):
    uv, feat, weight, bias = conv_inputs(batch=2)
    args = dict(joint_uv=uv, joint_feat=feat, bones=BONES, weight=weight, bias=bias, size=8, radius=1.0)
    args.update(change)
    return args


_W = conv_inputs(batch=2)[2]
CONV_BAD_INPUTS = [
    (_conv_bad(weight=_W[:, :-1]), RuntimeError, "bone_plane_conv: weight must have shape [*, 105, *, *], got [19, 104, 3, 3]"),
    (_conv_bad(weight=torch.zeros(19, 105, 2, 2, dtype=torch.float64)), RuntimeError,
     "weight must have a square kernel of odd size k"),
    (_conv_bad(weight=torch.zeros(19, 105, 3, 5, dtype=torch.float64)), RuntimeError,
     "weight must have a square kernel of odd size k"),
    (_conv_bad(weight=_W.float()), RuntimeError, "weight must have the dtype of joint_uv"),
    (_conv_bad(weight=_W[0]), ValueError, "bone_plane_conv: weight must have shape [*, *, *, *], got [105, 3, 3]"),
    (_conv_bad(bias=torch.zeros(18, dtype=torch.float64)), RuntimeError, "bias must have shape [19], got [18]"),
    (_conv_bad(bias=torch.zeros(19)), RuntimeError, "bias must have the dtype of joint_uv"),
    (_conv_bad(bias=torch.zeros(19, 1, dtype=torch.float64)), ValueError, "bias must have shape [*]"),
    (_conv_bad(joint_feat=torch.zeros(2, 21, 4, dtype=torch.float64)), RuntimeError,
     "weight must have shape [*, 84, *, *]"),
    (_conv_bad(bones=torch.tensor([[0, 21]])), RuntimeError, "bones entries must lie in [0, 21)"),
    (_conv_bad(radius=0.0), RuntimeError, "radius must be positive"),
    (_conv_bad(size=(8,)), ValueError, "size must be an integer or a pair (H, W)"),
    (_conv_bad(profile="box"), ValueError, "profile must be 'hard' or 'gaussian'"),
]


@pytest.mark.parametrize("args,error,message", CONV_BAD_INPUTS)
def test_conv_bad_input_is_rejected_with_a_named_argument(args, error, message):
    with pytest.raises(error) as info:
        bone_plane_conv(**args)
    assert message in str(info.value)


def test_conv_fake_rejects_what_the_op_rejects():
    from torch._subclasses.fake_tensor import FakeTensorMode
    uv, feat, weight, bias = conv_inputs(batch=2)
    for w, message in ((weight[:, :-1], "weight must have shape"), (weight[..., :2, :2], "odd size k")):
        with pytest.raises(RuntimeError, match=message):
            torch.ops.handgeom.bone_plane_conv(uv, feat, BONES, w, bias, 8, 8, 1.0, "hard", 1.0)
        with FakeTensorMode() as mode, pytest.raises(ValueError, match=message):
            args = [mode.from_tensor(t) for t in (uv, feat, BONES, w, bias)]
            torch.ops.handgeom.bone_plane_conv(*args, 8, 8, 1.0, "hard", 1.0)


def test_conv_backward_op_checks_grad_out():
    uv, feat, weight, bias = conv_inputs(batch=2)
    options = (8, 8, 1.0, "hard", 1.0)
    grad = torch.zeros(2, 19, 8, 8, dtype=uv.dtype)
    backward = torch.ops.handgeom.bone_plane_conv_backward
    with pytest.raises(RuntimeError, match=r"grad_out must have shape \[2, 19, 8, 8\]"):
        backward(grad[:, :18], uv, feat, BONES, weight, *options)
    with pytest.raises(RuntimeError, match=r"grad_out must have the dtype of joint_uv"):
        backward(grad.float(), uv, feat, BONES, weight, *options)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("size,radius,profile,sigma", CONV_CASES)
def test_conv_cuda_matches_cpu(size, radius, profile, sigma, k, dtype):
    """Joints 1e-3 px away from the mask edge, where the GPU's fused multiply-adds may round a
    pixel the other way."""
    for seed in range(41, 300):
        uv, feat, weight, bias = conv_inputs(k=k, dtype=dtype, seed=seed)
        if mask_margin(uv, size, radius, profile, sigma).min() > 1e-3:
            break
    grad_out = torch.randn(3, 19, *size, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        leaves = [t.to(device).requires_grad_() for t in (uv, feat, weight, bias)]
        out = bone_plane_conv(leaves[0], leaves[1], BONES.to(device), leaves[2], leaves[3], size=size, radius=radius,
                              profile=profile, sigma=sigma)
        results.append([t.cpu() for t in (out, *torch.autograd.grad(out, leaves, grad_out.to(device)))])
    assert_conv_close(results[1], results[0], dtype)


@requires_cuda
def test_conv_cuda_matches_composition_on_the_device():
    uv, feat, weight, bias = conv_inputs(dtype=torch.float32, seed=42)
    args = [t.cuda() for t in (uv, feat)] + [BONES.cuda()] + [t.cuda() for t in (weight, bias)]
    torch.testing.assert_close(bone_plane_conv(*args, size=(12, 20), radius=2.0),
                               composition(*args, size=(12, 20), radius=2.0), rtol=1e-4, atol=1e-4)
