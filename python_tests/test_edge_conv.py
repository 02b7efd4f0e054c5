"""edge_conv2d (both methods) against the naive gather / grouped conv2d / index_add composition."""

import pytest
import torch

from handgeom.ops import edge_conv2d
import references as ref

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# multi-edges (0->1 twice), a self-loop (2->2), node 4 isolated (no edges at all)
EDGES = torch.tensor([[0, 1], [1, 2], [2, 2], [3, 1], [0, 1], [1, 0], [2, 3]])


def inputs(batch=2, heads=3, nodes=5, size=(9, 13), kernel=(5, 3), dtype=torch.float64, seed=0, edges=EDGES):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, heads, nodes, *size, generator=gen, dtype=dtype)
    w = torch.randn(heads, edges.shape[0], *kernel, generator=gen, dtype=dtype)
    b = torch.randn(heads, edges.shape[0], generator=gen, dtype=dtype)
    return x, w, b


def compare(x, w, b, edges, method, aggregation="mean", shared_x=False, tol=1e-10):
    xs = x[:, :1] if shared_x else x
    grads = []
    for fn, arg in ((lambda *a: edge_conv2d(*a, aggregation=aggregation, method=method), xs[:, 0] if shared_x else xs),
                    (lambda *a: ref.edge_conv2d(*a, aggregation=aggregation), xs)):
        leaves = [t.clone().requires_grad_() for t in (arg, w, b)]
        out = fn(leaves[0], leaves[1], edges, leaves[2])
        out = out if out.dim() == 5 else out.unsqueeze(1)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        grads.append((out, *torch.autograd.grad(out, leaves, g)))
    for got, expected in zip(*grads):
        assert expected.abs().sum() > 0
        torch.testing.assert_close(got, expected.reshape(got.shape), rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (7, 7), (5, 3)])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_matches_naive_composition(method, kernel, aggregation):
    x, w, b = inputs(kernel=kernel)
    compare(x, w, b, EDGES, method, aggregation)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_paper_sized_kernels_45x45(method):
    """45x45 kernels on 46x46 maps (and a 41-column map: several CPU tiles, the last partial)."""
    for size in ((46, 46), (23, 41)):
        x, w, b = inputs(batch=1, heads=2, size=size, kernel=(45, 45), seed=2)
        compare(x, w, b, EDGES, method, tol=1e-9)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_single_head_and_shared_input(method):
    x, w, b = inputs(heads=1)
    compare(x, w, b, EDGES, method)  # [B, 1, K, H, W]
    x, w, b = inputs(heads=3)
    compare(x, w, b, EDGES, method, shared_x=True)  # a [B, K, H, W] map shared by three heads
    # the 4D / 3D form returns 4D
    out = edge_conv2d(x[:, 0], w[0], EDGES, b[0], method=method)
    assert out.shape == (2, 5, 9, 13)
    torch.testing.assert_close(out, ref.edge_conv2d(x[:, :1], w[:1], EDGES, b[:1])[:, 0])


def test_isolated_node_outputs_zero_and_methods_agree_on_hand_graph():
    hand = torch.tensor(ref.HAND_BONES)
    edges = torch.cat([hand, hand.flip(1), torch.arange(21).repeat(2, 1).T])  # 61 edges, as in the paper
    x, w, b = inputs(batch=2, heads=2, nodes=22, size=(16, 16), kernel=(7, 7), edges=edges, seed=3)
    direct = edge_conv2d(x, w, edges, b, method="direct")
    fft = edge_conv2d(x, w, edges, b, method="fft")
    torch.testing.assert_close(direct, fft)
    assert (direct[:, :, 21] == 0).all()  # node 21 has no edge


def test_non_contiguous_input():
    x, w, b = inputs()
    xt = x.transpose(3, 4).contiguous().transpose(3, 4)
    wt = w.transpose(2, 3).contiguous().transpose(2, 3)
    assert not xt.is_contiguous() and not wt.is_contiguous()
    torch.testing.assert_close(edge_conv2d(xt, wt, EDGES.T.contiguous().T, b), edge_conv2d(x, w, EDGES, b))


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_gradcheck(method):
    x, w, b = inputs(batch=1, heads=2, size=(5, 6), kernel=(3, 3), seed=4)
    leaves = [t.requires_grad_() for t in (x, w, b)]
    assert torch.autograd.gradcheck(lambda x, w, b: edge_conv2d(x, w, EDGES, b, method=method), leaves)


def test_opcheck():
    x, w, b = inputs(batch=1, heads=2, size=(6, 7), kernel=(3, 3), seed=5)
    args = (x.requires_grad_(), w.requires_grad_(), EDGES, b.requires_grad_(), True)
    torch.library.opcheck(torch.ops.handgeom.edge_conv2d.default, args)


def test_direct_backward_is_deterministic():
    x, w, b = inputs(batch=2, heads=2, size=(20, 40), kernel=(3, 3), dtype=torch.float32, seed=6)
    results = []
    for _ in range(2):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        edge_conv2d(*leaves[:2], EDGES, leaves[2], method="direct").square().sum().backward()
        results.append([t.grad for t in leaves])
    for a, c in zip(*results):
        assert torch.equal(a, c)


BAD = [
    (dict(edges=torch.cat([EDGES[:6], torch.tensor([[0, 5]])])), RuntimeError, "edges entries must lie in [0, 5)"),
    (dict(edges=torch.cat([EDGES[:6], torch.tensor([[-1, 0]])])), RuntimeError, "edges entries must lie in [0, 5)"),
    (dict(w=torch.zeros(3, 7, 4, 3, dtype=torch.float64)), RuntimeError, "weight kernels must have odd sizes, got 4x3"),
    (dict(w=torch.zeros(3, 6, 3, 3, dtype=torch.float64)), RuntimeError, "edges must have shape [6, 2]"),
    (dict(w=torch.zeros(4, 7, 3, 3, dtype=torch.float64)), RuntimeError, "x must have 1 or 4 heads"),
    (dict(w=torch.zeros(3, 7, 3, 3)), RuntimeError, "weight must have the dtype of x"),
    (dict(b=torch.zeros(3, 6, dtype=torch.float64)), RuntimeError, "bias must have shape [3, 7]"),
    (dict(x=torch.zeros(2, 5, 9, dtype=torch.float64)), ValueError, "x must have shape [B, K, H, W] or [B, *, K, H, W]"),
    (dict(aggregation="max"), ValueError, "aggregation must be 'mean' or 'sum'"),
    (dict(method="winograd"), ValueError, "method must be 'auto', 'direct' or 'fft'"),
]


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("change,error,message", BAD)
def test_bad_input_names_the_argument(change, error, message, method):
    x, w, b = inputs()
    args = dict(x=x, w=w, edges=EDGES, b=b, aggregation="mean", method=method)
    args.update(change)
    with pytest.raises(error) as info:
        edge_conv2d(args["x"], args["w"], args["edges"], args["b"], args["aggregation"], args["method"])
    assert message in str(info.value)


@requires_cuda
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_cuda_matches_cpu(method):
    x, w, b = inputs(kernel=(7, 7), seed=7)
    leaves = [[t.clone().to(d).requires_grad_() for t in (x, w, b)] for d in ("cpu", "cuda")]
    outs = [edge_conv2d(l[0], l[1], EDGES.to(l[0].device), l[2], method=method) for l in leaves]
    for o in outs:
        o.square().sum().backward()
    torch.testing.assert_close(outs[1].cpu(), outs[0])
    for a, c in zip(leaves[0], leaves[1]):
        torch.testing.assert_close(c.grad.cpu(), a.grad)
