"""Deferred, batched backward of the drift over a whole rollout (a speed-up with identical results).

In an off-policy rollout the states are detached: x_{n+1} = x_n + h mu(x_n, t_n) + noise uses mu's
value only, and the loss depends on the drift parameters through the N per-step outputs
mu_n = mu_theta(x_n, t_n) alone. So the N small forward passes (B rows each) run without autograd,
each keeping its activations on a tape, and after the rollout one autograd node replays the
backward of all N B rows at once: for every layer one (N B, W)^T (N B, W) matmul for the weight
gradient instead of N small ones, and ~15 operations in all instead of ~15 per step. The arithmetic
is that of ordinary backpropagation (tested equal to autograd to float rounding).

For the PIS MLP (nets.drift.MLPDrift) with hidden layers k = 1..L:
    u = x / s,  h_0 = u W_0^T + b_0 + c(t),  z_k = h_{k-1} W_k^T + b_k,  h_k = gelu(z_k),
    mu = s (h_L W_o^T + b_o),
and, with g = dLoss/dmu (M, d), M = N B rows:
    g_o = s g;  dW_o = g_o^T h_L;  db_o = sum_rows g_o;  g_h = g_o W_o;
    g_z = gelu'(z_k) * g_h;  dW_k = g_z^T h_{k-1};  db_k = sum_rows g_z;  g_h = g_z W_k;
    dc = g_h;  dW_0 = g_h^T u;  db_0 = sum_rows g_h.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


class _ReplayMLP(torch.autograd.Function):
    """Returns the taped outputs; its backward is the batched backward above.

    Inputs: c (M, W) (the time context, differentiable), out (M, d) (taped outputs), scale,
    u, h_0, (z_k, h_k) for k = 1..L (taped, no grad), then the parameters
    W_0, b_0, W_1, b_1, ..., W_L, b_L, W_o, b_o."""

    @staticmethod
    def forward(ctx, c, out, scale, n_hidden, *tensors):
        acts, params = tensors[:2 + 2 * n_hidden], tensors[2 + 2 * n_hidden:]
        ctx.scale, ctx.n_hidden = scale, n_hidden
        ctx.save_for_backward(*acts, *params)
        return out.clone()

    @staticmethod
    def backward(ctx, g):
        L = ctx.n_hidden
        saved = ctx.saved_tensors
        u, h0 = saved[0], saved[1]
        zs, hs = saved[2:2 + 2 * L:2], saved[3:2 + 2 * L:2]    # z_k, h_k for k = 1..L
        params = saved[2 + 2 * L:]                              # W_0, b_0, W_1, b_1, ..., W_o, b_o
        pg: list = [None] * len(params)
        g = g * ctx.scale
        pg[-2], pg[-1] = g.t().mm(hs[-1] if L else h0), g.sum(0)
        g_h = g.mm(params[-2])
        for k in range(L, 0, -1):                               # hidden layer k: params[2k], params[2k+1]
            g_z = torch.ops.aten.gelu_backward(g_h, zs[k - 1])
            pg[2 * k], pg[2 * k + 1] = g_z.t().mm(hs[k - 2] if k > 1 else h0), g_z.sum(0)
            g_h = g_z.mm(params[2 * k])
        pg[0], pg[1] = g_h.t().mm(u), g_h.sum(0)
        return (g_h, None, None, None, *([None] * (2 + 2 * L)), *pg)


class MLPTape:
    """Tape of one rollout's passes through an `MLPDrift` (see the module docstring)."""

    def __init__(self, drift) -> None:
        layers = list(drift.joint)
        self.drift = drift
        self.linears = [m for m in layers if isinstance(m, torch.nn.Linear)]
        if any(not isinstance(m, (torch.nn.Linear, torch.nn.GELU)) or
               (isinstance(m, torch.nn.GELU) and m.approximate != "none") for m in layers):
            raise TypeError("MLPTape supports Linear / exact-GELU MLPs only")
        self.rows: list[list[torch.Tensor]] = []        # per step: u, h_0, z_1, h_1, ..., z_L, h_L
        self.outs: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, x: torch.Tensor, context: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        """mu (B, d) at states x (B, d) with time context (B, W); no autograd, activations taped."""
        d = self.drift
        u = x / d.scale
        h = torch.addmm(d.state_enc.bias, u, d.state_enc.weight.t()).add_(context)
        row = [u, h]
        for lin in self.linears[:-1]:
            z = torch.addmm(lin.bias, h, lin.weight.t())
            h = F.gelu(z)
            row += [z, h]
        last = self.linears[-1]
        out = torch.addmm(last.bias, h, last.weight.t()).mul_(d.scale)
        self.rows.append(row)
        self.outs.append(out)
        return out

    def replay(self, context: torch.Tensor) -> torch.Tensor:
        """The taped outputs of all steps, (N B, d) step-major, differentiable w.r.t. the drift's
        parameters and `context` (N B, W) (the time context of all steps, with its graph)."""
        d = self.drift
        acts = [torch.cat(col) for col in zip(*self.rows)]
        params = [d.state_enc.weight, d.state_enc.bias]
        for lin in self.linears:
            params += [lin.weight, lin.bias]
        return _ReplayMLP.apply(context, torch.cat(self.outs), d.scale, len(self.linears) - 1, *acts, *params)


class LangevinTape:
    """Tape of one rollout's passes through a `LangevinDrift`:
    mu = base(x, t) + NN_2(t) * clip(score); the base MLP is taped, NN_2(t) comes with the time
    context (computed once for all steps, with its graph)."""

    def __init__(self, drift) -> None:
        self.drift = drift
        self.base = MLPTape(drift.base)
        self.scores: list[torch.Tensor] = []

    @torch.no_grad()
    def step(self, x: torch.Tensor, context: tuple[torch.Tensor, torch.Tensor], score: torch.Tensor) -> torch.Tensor:
        c_base, c_scale = context
        s = score.clamp(-self.drift.score_clip, self.drift.score_clip)
        self.scores.append(s)
        return self.base.step(x, c_base) + c_scale * s

    def replay(self, context: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        c_base, c_scale = context
        return self.base.replay(c_base) + c_scale * torch.cat(self.scores)
