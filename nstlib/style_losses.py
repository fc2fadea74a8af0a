"""Style as a distribution of feature vectors: four ways besides the Gram matrix to compare them.

Li et al. (2017, "Demystifying Neural Style Transfer") read a layer's features (C, H, W) as
M = H * W samples, one C-vector per position, and showed that the Gatys (Gram) loss is the
squared maximum mean discrepancy between the two images' samples with the kernel
k(x, y) = (x^T y)^2. Any other distance between the two sets of samples forgets positions too,
and transfers style. Besides "gram" (`nstlib.losses.style_loss`), `style_loss=` chooses:

- "mean-std": per-channel mean and standard deviation (the statistics batch normalization and
  AdaIN use; Li et al. 2017): mean_c (mu_c - mu'_c)^2 + (sigma_c - sigma'_c)^2. It ignores how
  the channels vary together (their correlations).
- "mmd-gaussian": MMD^2 with the Gaussian kernel exp(-||x - y||^2 / (2 s^2)) over all pairs of
  positions: the squared distance between the two images' mean embeddings, the form Li et al.
  write the Gram loss in, never negative. Every position counts, in time linear in their number:
  random Fourier features (Rahimi & Recht, NIPS 2007) make the embedding explicit,
  phi(x) = sqrt(2/D) cos(W^T x + b) with W ~ N(0, I / s^2) (C, D) and b ~ U[0, 2 pi) (D,) drawn
  once per target (seed 0), E[phi(x) . phi(y)] = k(x, y); the loss is ||mean phi(x_m) -
  mean phi(s_m)||^2, the style's mean computed once. (A sample of positions covers a shrinking
  share of a large image's, and the unbiased estimate, pairs i != j only, goes below 0 where
  the two sets are close, where an optimizer drives it.) Bandwidth: s^2 = the mean squared
  distance between two of the style image's feature vectors, 2 tr(Cov) (`mmd_bandwidth2`).
- "w2": the squared Wasserstein-2 distance between Gaussian fits (mean mu, covariance S):
  ||mu - mu'||^2 + tr(S + S' - 2 (S'^1/2 S S'^1/2)^1/2), divided by C; the matrix square root
  by coupled Newton-Schulz iterations (as crowsonkb/style-transfer-pytorch), the style's once.
  It sees means and covariances only: any two distributions with the same two moments are 0 apart.
- "sliced": the sliced Wasserstein distance (Heitz et al., CVPR 2021): project the samples on
  C random unit directions, sort each projection, compare the sorted values whole (mean squared
  difference; the style's quantiles interpolated when it has another number of positions).
  Fresh directions every evaluation, drawn from the objective's seeded generator (Adam; an
  L-BFGS run keeps its draws while its line search works, `nstlib.loop`).

Each `StyleTarget` is computed once from the style image's features (statistics, not a Gram)
and evaluates its loss on a batch: features (B, C, H, W) -> (B,). `energy()` is the loss of an
all-zero feature map against the target: the Gram loss's is ||A||^2, so dividing by it is Choi &
Kim's normalization, and the same rule normalizes the other four. The gatys variant puts them on
the Gram loss's scale instead (`nstlib.losses.gram_energy`), times `GATYS_GAIN`, so that one
alpha/beta gives a transfer of comparable strength whichever loss compares the styles.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from nstlib._gram import _Gram

STYLE_LOSSES = ("gram", "mean-std", "mmd-gaussian", "w2", "sliced")
#: random Fourier features of the Gaussian-kernel MMD: D = this x C per layer of C channels (M C D
#: work for M positions), at least MMD_MIN_FEATURES. Fewer leave the deep layers weakly matched.
MMD_FEATURES = 4
MMD_MIN_FEATURES = 128
#: coupled Newton-Schulz iterations for the matrix square roots of "w2".
NS_ITERS = 15
#: added to both covariances of "w2" (times the style's mean variance), as style-transfer-pytorch does.
W2_EPS = 1e-3
#: added to the variance before its square root in "mean-std" (a constant channel has sigma = 3e-3).
STD_EPS = 1e-5
#: what the gatys variant multiplies a loss by, on top of the Gram loss's scale. Equal values at
#: the zero map do not make an equal pull near the style: a Gaussian kernel as wide as the style's
#: spread compares mostly the features' means, so at the Gram loss's scale its transfers move
#: the Gram statistics (`metrics.style_strength`) much less than a Gram transfer does. The gain
#: brings its transfers at the CLI's weights within a factor 2 of the Gram loss's
#: (tests/test_pretrained_style_losses.py); a larger one stalls L-BFGS on small images. The
#: normalized variant keeps every loss over its own energy, with no gain: there each loss needs
#: its own lambda_os (notebook 8).
GATYS_GAIN = {"mmd-gaussian": 2.0}


def positions(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, M): the M = H * W feature vectors as columns, float32 (or float64 kept)."""
    if features.ndim != 4:
        raise ValueError(f"style losses expect features (B, C, H, W), got shape {tuple(features.shape)}.")
    x = features.flatten(2)
    return x if x.dtype == torch.float64 else x.float()


# -- the pieces -------------------------------------------------------------------------------

def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, M) -> per-channel mean (B, C) and standard deviation sqrt(var + STD_EPS) (B, C)."""
    mu = x.mean(2)
    var = (x - mu[..., None]).pow(2).mean(2)
    return mu, (var + STD_EPS).sqrt()


def mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, M) -> mean (B, C) and covariance (B, C, C) over the M positions (divided by M).

    Computed as X X^T / M - mu mu^T with the Gram's symmetric backward (`nstlib.losses`): one
    (C, M) product each way instead of centering the M samples first.
    """
    mu = x.mean(2)
    return mu, _Gram.apply(x) / x.shape[2] - mu[:, :, None] * mu[:, None, :]


def sqrtm_newton_schulz(a: torch.Tensor, iters: int = NS_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric positive definite (B, C, C) -> (A^1/2, A^-1/2) by coupled Newton-Schulz iterations.

    A is scaled by its Frobenius norm so that every eigenvalue is in (0, 1], where the iteration
    Y <- Y T, Z <- T Z, T = (3 I - Z Y) / 2 converges (Higham 2008, eq. 6.35). Eigenvalues far
    below the largest converge last: after k iterations those under about 1.5^(-2k) of it are
    still too small, which underestimates their square roots.
    Denormal floats are flushed to zero meanwhile: the products of a nearly singular A (a deep
    layer of a small image has fewer positions than channels) underflow, and denormal
    arithmetic made these products 5x slower on a CPU (relu5_1 at 96 px: 0.99 s -> 0.19 s).
    """
    norm = torch.linalg.matrix_norm(a).clamp_min(1e-30)[:, None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a / norm, eye
    with _flush_denormals():
        for _ in range(iters):
            t = 0.5 * (3.0 * eye - torch.bmm(z, y))
            y, z = torch.bmm(y, t), torch.bmm(t, z)
    return y * norm.sqrt(), z / norm.sqrt()


@contextlib.contextmanager
def _flush_denormals() -> Iterator[None]:
    """CPU denormals read as zero inside (torch's default, off, is restored after)."""
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


class _TraceSqrtm(torch.autograd.Function):
    """tr(A^1/2) of symmetric positive definite A (B, C, C) -> (B,); d tr(A^1/2) / dA = A^-1/2 / 2.

    Newton-Schulz gives A^-1/2 alongside A^1/2, so the backward is one scaling, not a
    Lyapunov solve (style-transfer-pytorch differentiates the full square root instead).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, iters: int) -> torch.Tensor:
        root, inv_root = sqrtm_newton_schulz(a, iters)
        ctx.save_for_backward(inv_root)
        return root.diagonal(dim1=1, dim2=2).sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inv_root,) = ctx.saved_tensors
        g = 0.5 * (inv_root + inv_root.transpose(1, 2))  # symmetric: the iteration's rounding is not
        return 0.5 * grad[:, None, None] * g, None


def trace_sqrtm(a: torch.Tensor, iters: int = NS_ITERS) -> torch.Tensor:
    """tr(A^1/2) for symmetric positive definite A (B, C, C) -> (B,), differentiable (Newton-Schulz)."""
    return _TraceSqrtm.apply(a, iters)


def sorted_projections(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(B, C, M) samples on (C, P) unit directions, each projection sorted: -> (B, P, M), differentiable.

    On the CPU the order comes from NumPy's argsort, several times faster than torch.sort there
    (which also sorts the values it returns); the values are gathered so that autograd sees them.
    """
    proj = torch.matmul(directions.t().to(x.dtype), x)                     # (B, P, M)
    if proj.device.type != "cpu":
        return proj.sort(dim=2).values
    if not proj.requires_grad:
        return torch.from_numpy(np.sort(proj.numpy(), axis=2))
    order = torch.from_numpy(np.argsort(proj.detach().numpy(), axis=2))
    return torch.gather(proj, 2, order)


def random_directions(c: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """C random unit vectors in R^C (uniform on the sphere), as the columns of a (C, C) matrix."""
    d = torch.randn(c, c, generator=generator, dtype=torch.float64)
    return (d / d.norm(dim=0, keepdim=True)).to(dtype)


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth2: torch.Tensor) -> torch.Tensor:
    """MMD^2 of samples x (B, n, C) and y (1 or B, n', C) over all pairs, exactly (n n' C work). -> (B,)

    mean k(x_i, x_j) + mean k(y_i, y_j) - 2 mean k(x_i, y_j), k(a, b) = exp(-||a - b||^2 / (2 bandwidth2)):
    the squared distance between the two samples' mean embeddings, >= 0, and 0 when x and y are
    the same set of samples. The "mmd-gaussian" loss estimates it with `mean_fourier_features`.
    """
    def kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # mean over i, j of k(a_i, b_j)
        d2 = (a.pow(2).sum(2)[:, :, None] + b.pow(2).sum(2)[:, None, :] - 2 * torch.matmul(a, b.transpose(1, 2)))
        return torch.exp(-d2.clamp_min(0) / (2 * bandwidth2)).mean((1, 2))

    # Rounding can leave a tiny negative where the sets are nearly the same.
    return (kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)).clamp_min(0)


def mmd_bandwidth2(x: torch.Tensor) -> torch.Tensor:
    """(1, C, M) -> (): the mean squared distance between two of the M feature vectors, 2 tr(Cov)."""
    return 2 * mean_cov(x)[1].diagonal(dim1=1, dim2=2).sum().clamp_min(1e-12)


def fourier_features(c: int, bandwidth2: torch.Tensor | float, d: int | None = None,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequencies W (C, D) ~ N(0, I / bandwidth2) and phases b (D,) ~ U[0, 2 pi), from `seed`:
    phi(x) = sqrt(2/D) cos(W^T x + b) has E[phi(x) . phi(y)] = exp(-||x - y||^2 / (2 bandwidth2))."""
    d = max(MMD_FEATURES * c, MMD_MIN_FEATURES) if d is None else d
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g, dtype=torch.float64) / torch.as_tensor(bandwidth2, dtype=torch.float64).sqrt()
    return w, torch.rand(d, generator=g, dtype=torch.float64) * (2 * math.pi)


def mean_fourier_features(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, M) samples, W (C, D), b (D,) -> (B, D): the mean of phi(x_m) over the M positions."""
    z = torch.matmul(w.t().to(x.dtype), x) + b.to(x.dtype)[:, None]                    # (B, D, M)
    return torch.cos(z).mean(2) * math.sqrt(2.0 / w.shape[1])


# -- the targets: computed once from the style image, a loss per evaluation --------------------

@dataclass
class StyleTarget:
    """One layer's style statistics for `kind`, and its loss. Build with `style_target`.

    stats: mean-std {"mean" (1, C), "std" (1, C)}; w2 {"mean" (1, C), "cov" (1, C, C),
    "root" (1, C, C): (cov + eps I)^1/2, "eps" ()}; sliced {"samples" (1, C, M'): the style
    image's feature vectors}; mmd-gaussian {"freqs" (C, D), "phases" (D,), "embedding" (1, D):
    the style's mean Fourier features}.
    """

    kind: str
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    def loss(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss of features (B, C, H, W) against this target -> (B,). `generator` draws the
        directions of "sliced"; None: a fixed one (seed 0)."""
        x = positions(features)
        c = self.stats["freqs"].shape[0] if self.kind == "mmd-gaussian" else self.stats[next(iter(self.stats))].shape[1]
        if x.shape[1] != c:
            raise ValueError(f"{self.kind} style loss: features have {x.shape[1]} channels, the target {c}.")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        s = {k: v.to(x.device, x.dtype) for k, v in self.stats.items()}
        if self.kind == "mean-std":
            mu, sd = mean_std(x)
            return ((mu - s["mean"]).pow(2) + (sd - s["std"]).pow(2)).mean(1)
        if self.kind == "w2":
            return _w2_loss(x, s)
        if self.kind == "mmd-gaussian":
            return (mean_fourier_features(x, s["freqs"], s["phases"]) - s["embedding"]).pow(2).sum(1)
        if self.kind == "sliced":
            return _sliced_loss(x, s, generator)
        raise ValueError(f"unknown style loss {self.kind!r}")

    def energy(self) -> torch.Tensor:
        """The loss of an all-zero feature map against the target, (1,): what the normalized
        variant (Choi & Kim) divides by. gram ||A||^2; mean-std mean(mu^2 + sigma^2);
        w2 (||mu||^2 + tr S) / C; sliced E||s||^2 / C (its expected value over directions);
        mmd-gaussian ||phi(0) - mean phi(s_m)||^2, phi(0) = sqrt(2/D) cos(b)."""
        s = self.stats
        if self.kind == "mean-std":
            return (s["mean"].pow(2) + s["std"].pow(2)).mean(1)
        if self.kind == "w2":
            c = s["mean"].shape[1]
            return (s["mean"].pow(2).sum(1) + s["cov"].diagonal(dim1=1, dim2=2).sum(1)) / c
        if self.kind == "sliced":
            return s["samples"].pow(2).mean((1, 2))
        at_zero = torch.cos(s["phases"]) * math.sqrt(2.0 / s["phases"].shape[0])
        return (at_zero - s["embedding"]).pow(2).sum(1)


@torch.no_grad()
def style_target(kind: str, features: torch.Tensor, bandwidth2: float | None = None) -> StyleTarget:
    """The statistics of one style image's features (1, C, H, W) that the `kind` loss compares with.
    bandwidth2: the Gaussian kernel's s^2 for "mmd-gaussian" (None: `mmd_bandwidth2` of the style)."""
    if kind not in STYLE_LOSSES or kind == "gram":
        raise ValueError(f"style_target makes the targets of {', '.join(map(repr, STYLE_LOSSES[1:]))} "
                         f"(the Gram loss's is nstlib.losses.gram_matrix), got {kind!r}.")
    if bandwidth2 is not None and (kind != "mmd-gaussian" or not float(bandwidth2) > 0):
        raise ValueError(f"bandwidth2 is the Gaussian kernel's s^2 of 'mmd-gaussian', a positive number; "
                         f"got {bandwidth2!r} for {kind!r}.")
    x = positions(features.detach())
    if x.shape[0] != 1:
        raise ValueError(f"style_target takes the features of one style image (1, C, H, W), got {tuple(features.shape)}.")
    if kind == "mean-std":
        mu, sd = mean_std(x)
        return StyleTarget(kind, {"mean": mu, "std": sd})
    if kind == "w2":
        mu, cov = mean_cov(x)
        eps = W2_EPS * cov.diagonal(dim1=1, dim2=2).mean().clamp_min(1e-12)
        evals, evecs = torch.linalg.eigh((cov + eps * torch.eye(cov.shape[1], dtype=cov.dtype)).double())
        root = (evecs * evals.clamp_min(0).sqrt()[:, None, :]) @ evecs.transpose(1, 2)
        return StyleTarget(kind, {"mean": mu, "cov": cov, "root": root.to(cov.dtype), "eps": eps})
    if kind == "sliced":
        return StyleTarget(kind, {"samples": x.contiguous()})
    w, b = fourier_features(x.shape[1], mmd_bandwidth2(x) if bandwidth2 is None else bandwidth2)
    w, b = w.to(x.dtype), b.to(x.dtype)
    return StyleTarget(kind, {"freqs": w, "phases": b, "embedding": mean_fourier_features(x, w, b)})


def _w2_loss(x: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
    """(||mu - mu_s||^2 + tr S + tr S_s - 2 tr (R S R)^1/2) / C, S with eps I added, R = (S_s + eps I)^1/2."""
    c = x.shape[1]
    mu, cov = mean_cov(x)
    eye = torch.eye(c, dtype=x.dtype, device=x.device)
    cov = cov + s["eps"] * eye
    r = s["root"].expand(x.shape[0], c, c)
    cross = trace_sqrtm(torch.bmm(torch.bmm(r, cov), r))
    tr_target = s["cov"].diagonal(dim1=1, dim2=2).sum(1) + c * s["eps"]
    out = (mu - s["mean"]).pow(2).sum(1) + cov.diagonal(dim1=1, dim2=2).sum(1) + tr_target - 2 * cross
    return out / c


def _sliced_loss(x: torch.Tensor, s: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    directions = random_directions(x.shape[1], generator).to(x.device)
    mine = sorted_projections(x, directions)                                              # (B, P, M)
    with torch.no_grad():
        theirs = sorted_projections(s["samples"], directions)                             # (1, P, M')
        if theirs.shape[2] != mine.shape[2]:  # the style's quantiles at the image's M positions
            theirs = F.interpolate(theirs, size=mine.shape[2], mode="linear", align_corners=True)
    return (mine - theirs).pow(2).mean((1, 2))


__all__ = ["STYLE_LOSSES", "GATYS_GAIN", "StyleTarget", "style_target", "mean_std", "mean_cov", "sqrtm_newton_schulz", "trace_sqrtm",
           "sorted_projections", "random_directions", "gaussian_mmd2", "mmd_bandwidth2",
           "fourier_features", "mean_fourier_features"]
