"""Batched solvers: every entity of a batch fitted at once, on torch (float64, on CUDA when
there is one).

A batch is ``Z`` (B, n, F): each entity's rows, padded to the batch's longest; ``mask`` (B, n)
1.0 on real rows, 0.0 on padding; ``y`` (B, n) the labels (a class index for softmax). Every
objective is Linear Learner's, per entity, over its n real rows:

    (1/n) sum_i loss_i + wd * ||w||^2 + l1 * ||w||_1        (the intercept is not penalized)

with the squared loss for a regressor and the log loss for a classifier. The matching
scikit-learn fits, per entity: ``Ridge(alpha=n * wd)``; ``Lasso(alpha=l1 / 2)`` (with
``wd == 0``); ``ElasticNet(alpha=a, l1_ratio=r)`` where ``l1 = 2 a r`` and ``wd = a (1 - r)``;
``LogisticRegression(C=1 / (2 n wd))`` (binary and multinomial; ``penalty=None`` at ``wd == 0``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor
RCOND = 1e-10  # eigenvalues below this share of the largest count as zero (rank-deficient)


def centered(Z: Tensor, y: Tensor, mask: Tensor, fit_intercept: bool) -> tuple[Tensor, ...]:
    """(G, c, z_mean, y_mean): the Gram matrix Z'Z / n and Z'y / n of each entity's rows, about
    their means when there is an intercept (a regressor's normal equations). Padding rows must
    be zero in Z and y; the means are taken out of the sums (Z'Z/n - z z'), with no centered
    copy of the batch."""
    n = mask.sum(1).clamp(min=1)  # (B,)
    G = Z.transpose(1, 2) @ Z / n[:, None, None]
    c = (Z.transpose(1, 2) @ y[..., None])[..., 0] / n[:, None]
    if not fit_intercept:
        return G, c, Z.new_zeros(Z.shape[0], Z.shape[2]), y.new_zeros(y.shape[0])
    z_mean = Z.sum(1) / n[:, None]
    y_mean = y.sum(1) / n
    G = G - z_mean[:, :, None] * z_mean[:, None, :]
    c = c - z_mean * y_mean[:, None]
    return G, c, z_mean, y_mean


def solve_psd(A: Tensor, b: Tensor) -> Tensor:
    """A x = b for symmetric positive semi-definite A (B, F, F): Cholesky where A is definite;
    the minimum-norm solution (pseudo-inverse) where it is not (a rank-deficient entity)."""
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(b[..., None], L)[..., 0]
    d = torch.diagonal(L, dim1=1, dim2=2).abs()
    # singular, or singular to rounding (a factor that succeeds on noise): no Cholesky answer
    bad = (info != 0) | ~(d.amin(1) ** 2 > RCOND * d.amax(1) ** 2)
    if bool(bad.any()):
        pinv = torch.linalg.pinv(A[bad], hermitian=True, rtol=RCOND)
        x[bad] = (pinv @ b[bad][..., None])[..., 0]
    return x


def ridge(G: Tensor, c: Tensor, wd: float) -> Tensor:
    """w minimizing (1/n)||yc - Zc w||^2 + wd ||w||^2, from ``centered``'s G and c."""
    eye = torch.eye(G.shape[-1], dtype=G.dtype, device=G.device)
    return solve_psd(G + wd * eye, c)


def lasso(
    G: Tensor, c: Tensor, wd: float, l1: float, tol: float = 1e-12, max_sweeps: int = 20_000
) -> Tensor:
    """w minimizing (1/n)||yc - Zc w||^2 + wd ||w||^2 + l1 ||w||_1: cyclic coordinate descent
    on the Gram matrix, every entity's coordinate j updated at once, until no weight moves by
    more than ``tol`` (relative) in a sweep."""
    B, F = c.shape
    w = c.new_zeros(B, F)
    diag = torch.diagonal(G, dim1=1, dim2=2) + wd  # (B, F)
    safe = torch.where(diag > 0, diag, torch.ones_like(diag))
    half = l1 / 2
    for _ in range(max_sweeps):
        moved = c.new_zeros(B)
        for j in range(F):
            r = c[:, j] - (G[:, j, :] * w).sum(1) + G[:, j, j] * w[:, j]
            new = torch.sign(r) * (r.abs() - half).clamp(min=0) / safe[:, j]
            new = torch.where(diag[:, j] > 0, new, torch.zeros_like(new))
            moved = torch.maximum(moved, (new - w[:, j]).abs())
            w[:, j] = new
        if bool((moved <= tol * w.abs().amax(1).clamp(min=1)).all()):
            break
    return w


def with_intercept(Z: Tensor, fit_intercept: bool) -> Tensor:
    """Z with a column of ones appended (the intercept's), or as it is."""
    if not fit_intercept:
        return Z
    return torch.cat([Z, Z.new_ones(*Z.shape[:2], 1)], dim=2)


def logistic(
    Z: Tensor,
    y: Tensor,
    mask: Tensor,
    wd: float,
    fit_intercept: bool,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """(w (B, F), b (B,)) minimizing (1/n) sum log-loss + wd ||w||^2 (y in {0, 1}): Newton's
    method, each entity's step halved until its objective does not rise."""
    Z1 = with_intercept(Z, fit_intercept)
    B, _, F1 = Z1.shape
    n = mask.sum(1).clamp(min=1)
    pen = Z.new_full((F1,), 2 * wd)
    if fit_intercept:
        pen[-1] = 0
    theta = Z.new_zeros(B, F1)

    def objective(t: Tensor) -> Tensor:
        s = (Z1 @ t[..., None])[..., 0]
        loss = (torch.nn.functional.softplus(s) - y * s) * mask
        return loss.sum(1) / n + 0.5 * (pen * t * t).sum(1)

    f = objective(theta)
    for _ in range(max_iter):
        s = (Z1 @ theta[..., None])[..., 0]
        p = torch.sigmoid(s)
        g = (Z1.transpose(1, 2) @ ((p - y) * mask)[..., None])[..., 0] / n[:, None] + pen * theta
        if float(g.abs().max()) < tol:
            break
        d = (p * (1 - p) * mask)[..., None]
        H = Z1.transpose(1, 2) @ (Z1 * d) / n[:, None, None] + torch.diag(pen)
        step = solve_psd(H, g)
        theta, f = _backtrack(objective, theta, step, f)
    w, b = (theta[:, :-1], theta[:, -1]) if fit_intercept else (theta, Z.new_zeros(B))
    return w, b


def softmax(
    Z: Tensor,
    y: Tensor,
    mask: Tensor,
    k: int,
    wd: float,
    fit_intercept: bool,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """(W (B, k, F), b (B, k)) minimizing (1/n) sum multinomial log-loss + wd ||W||^2 (y a class
    index): Newton's method with the minimum-norm step (the softmax is unchanged by adding one
    vector to every class, so the Hessian is singular; from zero the steps keep the classes'
    weights and intercepts summing to zero, as scikit-learn's solution does)."""
    Z1 = with_intercept(Z, fit_intercept)
    B, N, F1 = Z1.shape
    n = mask.sum(1).clamp(min=1)
    Y = torch.nn.functional.one_hot(y.long().clamp(0, k - 1), k).to(Z.dtype)  # (B, N, k)
    pen = Z.new_full((F1,), 2 * wd)
    if fit_intercept:
        pen[-1] = 0
    theta = Z.new_zeros(B, k, F1)
    ZZ = (Z1[..., :, None] * Z1[..., None, :]).reshape(B, N, F1 * F1)

    def objective(t: Tensor) -> Tensor:
        s = Z1 @ t.transpose(1, 2)  # (B, N, k)
        loss = (torch.logsumexp(s, 2) - (Y * s).sum(2)) * mask
        return loss.sum(1) / n + 0.5 * (pen * t * t).sum((1, 2))

    f = objective(theta)
    for _ in range(max_iter):
        p = torch.softmax(Z1 @ theta.transpose(1, 2), dim=2)  # (B, N, k)
        r = (p - Y) * mask[..., None]
        g = r.transpose(1, 2) @ Z1 / n[:, None, None] + pen * theta  # (B, k, F1)
        if float(g.abs().max()) < tol:
            break
        A = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]  # (B, N, k, k)
        A = A * mask[..., None, None]
        H = (A.reshape(B, N, k * k).transpose(1, 2) @ ZZ).reshape(B, k, k, F1, F1)
        H = H.permute(0, 1, 3, 2, 4).reshape(B, k * F1, k * F1) / n[:, None, None]
        H = H + torch.diag(pen.repeat(k))
        step = (torch.linalg.pinv(H, hermitian=True) @ g.reshape(B, k * F1, 1)).reshape(B, k, F1)
        theta, f = _backtrack(objective, theta, step, f)
    if fit_intercept:
        return theta[..., :-1], theta[..., -1]
    return theta, Z.new_zeros(B, k)


def _backtrack(
    objective: Callable[[Tensor], Tensor], theta: Tensor, step: Tensor, f: Tensor
) -> tuple[Tensor, Tensor]:
    """theta - t * step with t = 1, halved (per entity) while the objective would rise."""
    shape = (-1,) + (1,) * (theta.dim() - 1)
    t = torch.ones_like(f)
    for _ in range(40):
        cand = theta - t.reshape(shape) * step
        fc = objective(cand)
        worse = fc > f + 1e-15 * f.abs().clamp(min=1)
        if not bool(worse.any()):
            return cand, fc
        t = torch.where(worse, t / 2, t)
    keep = worse.reshape(shape)
    return torch.where(keep, theta, cand), torch.where(worse, f, fc)
