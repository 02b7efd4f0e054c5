"""Batched occupancy queries: a residual MLP whose hidden layers are modulated per sample (FiLM),
evaluated per point in one fused kernel (the occupancy decoder of "Two Hands Are Better Than
One" in eval mode, where each conditional batch norm is a per-hand affine map)."""

from __future__ import annotations

import torch

__all__ = ["conditioned_mlp", "conditioned_mlp_penalty"]


def conditioned_mlp(inputs: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_hidden: torch.Tensor,
                    b_hidden: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor, scale: torch.Tensor,
                    shift: torch.Tensor) -> torch.Tensor:
    r"""Logits of a FiLM-conditioned residual MLP at every point, without storing activations.

    Per point :math:`x` of sample :math:`b`, with :math:`\sigma` = ReLU and
    :math:`m_l(z) = \sigma(s_{b,l} \odot z + t_{b,l})`:

    .. math::
        h_0 = W_{in} x + b_{in},\quad
        h_{k+1} = h_k + W_{2k+1}\, m_{2k+1}\big(W_{2k}\, m_{2k}(h_k) + b_{2k}\big) + b_{2k+1},\quad
        \mathrm{logit} = w_{out} \cdot \sigma(h_{L/2}) + b_{out}

    Weights use ``nn.Linear``'s (out, in) layout. Every layer of a tile of points is evaluated in
    registers / L1 (CPU: 64-point tiles, AVX-512 or AVX2 picked at load time; CUDA: a thread per
    point with the weights in shared memory). NaN inputs give NaN logits.

    Args:
        inputs: ``[B, N, D]`` per-point input features, float32 or float64, ``1 <= D <= 64``.
        w_in, b_in: ``[H, D]``, ``[H]`` input layer, ``1 <= H <= 128``.
        w_hidden, b_hidden: ``[L, H, H]``, ``[L, H]``: L (even, 2..8) hidden layers, residual
            blocks of two.
        w_out, b_out: ``[H]``, ``[1]`` output layer.
        scale, shift: ``[B, L, H]`` per-sample modulation of each hidden layer's input.

    Returns:
        ``[B, N]`` logits. Differentiable in ``inputs``, ``scale`` and ``shift``; the weights are
        frozen (they must not require grad while grad mode is on: train with the torch module,
        ``handgeom.models.occupancy.ConditionedDecoder``).
    """
    _refuse_frozen_requiring_grad("conditioned_mlp", w_in=w_in, b_in=b_in, w_hidden=w_hidden, b_hidden=b_hidden,
                                  w_out=w_out, b_out=b_out)
    return torch.ops.handgeom.conditioned_mlp(inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift)


def conditioned_mlp_penalty(inputs: torch.Tensor, point_weights: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor,
                            w_hidden: torch.Tensor, b_hidden: torch.Tensor, w_out: torch.Tensor, b_out: torch.Tensor,
                            scale: torch.Tensor, shift: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    r"""The weighted occupancy penalty of :func:`conditioned_mlp`'s logits, per sample, with its
    gradients computed in the same pass (the intersection loss of "Two Hands Are Better Than One"):

    .. math::
        P_b = \sum_n w_{b,n}\, q(\mathrm{sigmoid}(\mathrm{logit}_{b,n})),\qquad
        q(p) = p^2 \text{ (truncate: } p^2 [p > 1/2])

    Backpropagating through ``conditioned_mlp`` repeats each tile's forward pass; here the forward
    and reverse passes run once per tile, and the backward only scales the stored gradients by
    ``dL/dP_b``.

    Args:
        inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift: as :func:`conditioned_mlp`.
        point_weights: ``[B, N]`` each point's weight (e.g. 0 for padding), same dtype.
        truncate: count only probabilities above 1/2 (the paper's variant).

    Returns:
        ``[B]``. Differentiable in ``inputs``, ``scale`` and ``shift`` (not in ``point_weights``;
        the weights are frozen).
    """
    _refuse_frozen_requiring_grad("conditioned_mlp_penalty", point_weights=point_weights, w_in=w_in, b_in=b_in,
                                  w_hidden=w_hidden, b_hidden=b_hidden, w_out=w_out, b_out=b_out)
    return torch.ops.handgeom.conditioned_mlp_penalty(inputs, point_weights, w_in, b_in, w_hidden, b_hidden, w_out,
                                                      b_out, scale, shift, truncate)[0]


def _refuse_frozen_requiring_grad(op: str, **frozen: torch.Tensor) -> None:
    if torch.is_grad_enabled():
        for name, w in frozen.items():
            if w.requires_grad:
                raise ValueError(f"{op}: {name} requires grad, but the fused op has no gradient for it; freeze it "
                                 "(requires_grad_(False)), or train the weights with the torch module")


@torch.library.register_fake("handgeom::conditioned_mlp")
def _fake(inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift):
    return inputs.new_empty(inputs.shape[:2])


@torch.library.register_fake("handgeom::conditioned_mlp_backward")
def _backward_fake(grad_logits, inputs, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift):
    return torch.empty_like(inputs), torch.empty_like(scale), torch.empty_like(shift)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_logits):
    grad_inputs, grad_scale, grad_shift = torch.ops.handgeom.conditioned_mlp_backward(grad_logits, *ctx.saved_tensors)
    return grad_inputs, None, None, None, None, None, None, grad_scale, grad_shift


torch.library.register_autograd("handgeom::conditioned_mlp", _backward, setup_context=_setup)


@torch.library.register_fake("handgeom::conditioned_mlp_penalty")
def _penalty_fake(inputs, point_weights, w_in, b_in, w_hidden, b_hidden, w_out, b_out, scale, shift, truncate):
    return inputs.new_empty(inputs.shape[:1]), torch.empty_like(inputs), torch.empty_like(scale), torch.empty_like(shift)


def _penalty_setup(ctx, inputs, output):
    _, grad_inputs, grad_scale, grad_shift = output
    ctx.mark_non_differentiable(grad_inputs, grad_scale, grad_shift)
    ctx.save_for_backward(grad_inputs, grad_scale, grad_shift)


def _penalty_backward(ctx, grad_penalty, *_):
    grad_inputs, grad_scale, grad_shift = ctx.saved_tensors
    g = grad_penalty[:, None, None]
    return grad_inputs * g, None, None, None, None, None, None, None, grad_scale * g, grad_shift * g, None


torch.library.register_autograd("handgeom::conditioned_mlp_penalty", _penalty_backward, setup_context=_penalty_setup)
