"""Per-edge 2D graph convolution (SIA-GCN): every directed edge of a graph of 2D maps has its own
2D kernel."""

from __future__ import annotations

from typing import Literal

import torch

from handgeom._checks import Checker

__all__ = ["edge_conv2d"]

# Kernel area from which the FFT path is faster than the direct one, forward+backward on a 2-core
# CPU (benchmarks/bench_edge_conv.py and the README): direct wins at 3x3 and 7x7 on 64x64 maps,
# FFT at 9x9 on 46x46 (0.26 s vs 0.34 s) and beyond.
FFT_FROM_TAPS = 81


def edge_conv2d(x: torch.Tensor, weight: torch.Tensor, edges: torch.Tensor, bias: torch.Tensor | None = None,
                aggregation: Literal["mean", "sum"] = "mean",
                method: Literal["auto", "direct", "fft"] = "auto") -> torch.Tensor:
    r"""One SIA-GCN layer without its activation: messages along edges, each by its own kernel.

    .. math::
        \mathrm{out}_t = n_t \sum_{e:\, tgt(e) = t} \big( x_{src(e)} \star F_e + b_e \big)

    with :math:`\star` a 2D cross-correlation with zero "same" padding (as ``conv2d``),
    :math:`n_t` = 1 / in-degree (``"mean"``, the paper's :math:`D^{-1}`) or 1 (``"sum"``); a node
    without incoming edges outputs zeros.

    Args:
        x: ``[B, K, H, W]`` node maps, or ``[B, M, K, H, W]`` for M heads (a 4D ``x`` with
            multi-head weights is shared by every head).
        weight: ``[E, kh, kw]`` or ``[M, E, kh, kw]``, odd kernel sizes; same dtype/device as x.
        edges: ``[E, 2]`` int64 (source, target) node indices; multi-edges and isolated nodes are
            fine.
        bias: ``[E]`` or ``[M, E]``, added to each edge's message.
        method: ``"direct"``: one fused kernel (CPU and CUDA, shared body) computing every output
            pixel from the node's incoming edges and kernel window, no per-edge intermediate;
            backward fused too (x by the transposed edges, weights as correlations, deterministic).
            ``"fft"``: node maps and kernels transformed once (``torch.fft``), products summed over
            incoming edges in the frequency domain, one inverse transform per output node.
            ``"auto"``: direct below ``FFT_FROM_TAPS`` kernel taps, FFT from there. Empty inputs
            (no batch, node, edge or pixel) take the direct path whatever the method: the result
            is empty, or zeros where there are no edges.

    Returns:
        ``[B, K, H, W]`` (single-head weights and 4D x) or ``[B, M, K, H, W]``. Differentiable in
        ``x``, ``weight`` and ``bias`` by both methods.
    """
    ck = Checker("edge_conv2d")
    ck.choice(aggregation, "aggregation", ("mean", "sum"))
    ck.choice(method, "method", ("auto", "direct", "fft"))
    ck.tensor(weight, "weight", [("E", "kh", "kw"), ("M", "E", "kh", "kw")], kind=None)  # dtypes: the op checks
    ck.tensor(x, "x", [("B", "K", "H", "W"), ("B", None, "K", "H", "W")], kind=None)  # heads: 1 or M (the op checks)
    single = weight.dim() == 3 and x.dim() == 4
    w = weight.unsqueeze(0) if weight.dim() == 3 else weight
    xm = x.unsqueeze(1) if x.dim() == 4 else x
    b = None if bias is None else (bias.unsqueeze(0) if bias.dim() == 1 else bias)
    if not isinstance(edges, torch.Tensor):
        edges = torch.as_tensor(edges, device=x.device)
    if edges.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
        edges = edges.long()
    if method == "auto":
        method = "fft" if w.shape[-1] * w.shape[-2] >= FFT_FROM_TAPS else "direct"
    if xm.numel() == 0 or w.numel() == 0:  # nothing to transform (torch.fft refuses empty sizes)
        method = "direct"
    mean = aggregation == "mean"
    if method == "direct":
        out = torch.ops.handgeom.edge_conv2d(xm, w, edges, b, mean)
    else:
        # the direct op validates; the FFT composition relies on the same checks
        torch.ops.handgeom.edge_conv2d(xm[:0], w, edges, None if b is None else b, mean)
        out = _edge_conv2d_fft(xm, w, edges, b, mean)
    return out[:, 0] if single else out


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes pocketfft and cuFFT transform fastest)."""
    best = 1 << (n - 1).bit_length()
    for three in (1, 3, 9, 27, 81):
        for five in (1, 5, 25, 125):
            m = three * five
            while m < n:
                m *= 2
            best = min(best, m)
    return best


def _edge_conv2d_fft(x, w, edges, bias, mean):
    """FFT path: x [B, Mx, K, H, W], w [M, E, kh, kw], bias [M, E] or None."""
    height, width, kh, kw = x.shape[-2], x.shape[-1], w.shape[-2], w.shape[-1]
    nodes = x.shape[2]
    size = (_fast_length(height + kh - 1), _fast_length(width + kw - 1))
    src, tgt = edges[:, 0], edges[:, 1]
    spectra = torch.fft.rfft2(x, s=size)  # [B, Mx, K, ...]: each node map once
    kernels = torch.fft.rfft2(w.flip(-2, -1), s=size)  # correlation = convolution with the flipped kernel
    products = spectra[:, :, src] * kernels  # [B, M, E, ...]
    summed = products.new_zeros(products.shape[:2] + (nodes,) + products.shape[3:]).index_add(2, tgt, products)
    full = torch.fft.irfft2(summed, s=size)  # one inverse per (batch, head, node)
    top, left = kh - 1 - kh // 2, kw - 1 - kw // 2  # "same" correlation inside the full convolution
    out = full[..., top:top + height, left:left + width]
    if bias is not None:
        out = out + bias.new_zeros(bias.shape[0], nodes).index_add(1, tgt, bias)[None, :, :, None, None]
    if mean:
        degree = torch.bincount(tgt, minlength=nodes).to(out.dtype)
        out = out / degree.clamp_min(1)[:, None, None]
    return out


@torch.library.register_fake("handgeom::edge_conv2d")
def _edge_conv_fake(x, weight, edges, bias, mean):
    return x.new_empty((x.shape[0], weight.shape[0]) + tuple(x.shape[2:]))


@torch.library.register_fake("handgeom::edge_conv2d_backward")
def _edge_conv_backward_fake(grad_out, x, weight, edges, mean):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[:2])


def _setup(ctx, inputs, output):
    x, weight, edges, bias, mean = inputs
    ctx.save_for_backward(x, weight, edges)
    ctx.mean, ctx.has_bias = mean, bias is not None


def _backward(ctx, grad_out):
    x, weight, edges = ctx.saved_tensors
    grad_x, grad_w, grad_b = torch.ops.handgeom.edge_conv2d_backward(grad_out, x, weight, edges, ctx.mean)
    return grad_x, grad_w, None, grad_b if ctx.has_bias else None, None


torch.library.register_autograd("handgeom::edge_conv2d", _backward, setup_context=_setup)
