"""Self-check of notebook 4's total loss: alpha * content + beta * style, from the pieces of notebooks 2-3.

The student writes `total_loss(F, P, G, A, alpha, beta)`: F, P are the content-layer features of
the image and of the photo, (1, N, H, W); G, A are lists with one Gram matrix divided by M_l,
(N_l, N_l), per style layer, of the image and of the painting. It returns

    alpha * 1/2 sum (F - P)^2  +  beta * sum_l w_l * sum (G_l - A_l)^2 / (4 N_l^2),   w_l = 1 / L

(the paper's E_l = sum (G - A)^2 / (4 N^2 M^2) with G, A not divided by M). `check_total_loss`
prints one line, as every check of `nstlib.selfcheck` does, and names the usual mistakes.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from nstlib.selfcheck import NOT_WRITTEN, _close, _say


def library_total_loss(F: torch.Tensor, P: torch.Tensor, G: Sequence[torch.Tensor], A: Sequence[torch.Tensor],
                       alpha: float, beta: float) -> torch.Tensor:
    """The reference: F, P (1, N, H, W); G, A lists of (N_l, N_l) Gram matrices / M_l -> the total, shape ()."""
    if len(G) != len(A) or not G:
        raise ValueError(f"G and A need one Gram matrix per style layer each, got {len(G)} and {len(A)}.")
    content = 0.5 * ((F - P) ** 2).sum()
    style = sum(((g - a) ** 2).sum() / (4 * g.shape[-1] ** 2) for g, a in zip(G, A)) / len(G)
    return alpha * content + beta * style


def _parts(F, P, G, A) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The content loss and each layer's E_l, as the reference computes them."""
    return 0.5 * ((F - P) ** 2).sum(), [((g - a) ** 2).sum() / (4 * g.shape[-1] ** 2) for g, a in zip(G, A)]


#: (hint, (content, [E_l], [N_l], alpha, beta) -> what that mistake returns)
MISTAKES: list[tuple[str, Callable[..., torch.Tensor]]] = [
    ("alpha and beta are swapped: alpha weighs the content loss, beta the style loss",
     lambda c, e, n, al, be: be * c + al * sum(e) / len(e)),
    ("the 1/2 of the content loss is missing (L_content = 1/2 sum (F - P)^2)",
     lambda c, e, n, al, be: al * 2 * c + be * sum(e) / len(e)),
    ("the style layers are summed: the paper weighs each E_l by w_l = 1 / (number of layers)",
     lambda c, e, n, al, be: al * c + be * sum(e)),
    ("E_l misses its 1 / (4 N_l^2) (N_l: the number of channels, G.shape[0])",
     lambda c, e, n, al, be: al * c + be * sum(x * 4 * k * k for x, k in zip(e, n)) / len(e)),
    ("E_l divides by 4 N_l, not by 4 N_l^2",
     lambda c, e, n, al, be: al * c + be * sum(x * k for x, k in zip(e, n)) / len(e)),
]


def _cases() -> list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor], float, float]]:
    """Three seeded inputs: 1, 2 and 3 style layers of different widths, three alpha/beta pairs."""
    out = []
    for seed, (n, h, w, widths, alpha, beta) in enumerate([(8, 5, 6, [4], 2e-3, 1.0), (6, 4, 4, [4, 8], 1.0, 1e3),
                                                            (5, 3, 7, [3, 6, 12], 0.3, 7.0)]):
        gen = torch.Generator().manual_seed(seed)
        F, P = torch.rand(1, n, h, w, generator=gen), torch.rand(1, n, h, w, generator=gen)
        G = [torch.rand(k, k, generator=gen) for k in widths]
        A = [torch.rand(k, k, generator=gen) for k in widths]
        out.append((F, P, G, A, alpha, beta))
    return out


def check_total_loss(fn: Callable[..., Any]) -> bool:
    """fn(F, P, G, A, alpha, beta) -> the total loss, shape (): checked on 3 inputs against library_total_loss."""
    name = "total_loss"
    for i, (F, P, G, A, alpha, beta) in enumerate(_cases(), 1):
        F = F.clone().requires_grad_(True)
        G = [g.clone().requires_grad_(True) for g in G]
        try:
            got = fn(F, P, G, A, alpha, beta)
        except NotImplementedError:
            return _say(False, name, NOT_WRITTEN)
        except Exception as error:  # noqa: BLE001 - the student's mistake becomes a hint
            return _say(False, name, f"raised {type(error).__name__}: {error} (on test input {i}, {len(G)} style layer(s))")
        if not isinstance(got, torch.Tensor):
            return _say(False, name, f"returned {type(got).__name__}, expected a torch.Tensor (keep it in torch, "
                                     f"L-BFGS needs its gradient)")
        if got.numel() != 1:
            return _say(False, name, f"returns a non-scalar of shape {tuple(got.shape)}, expected one number: sum it")
        with torch.no_grad():
            expected = library_total_loss(F, P, G, A, alpha, beta)
            content, energies = _parts(F, P, G, A)
        value = got.detach().reshape(())
        if not _close(value, expected):
            widths = [g.shape[-1] for g in G]
            for hint, mistake in MISTAKES:
                if _close(value, mistake(content, energies, widths, alpha, beta)):
                    return _say(False, name, hint)
            return _say(False, name, f"on test input {i}: yours {value.item():.6g}, the reference's {expected.item():.6g} "
                                     f"(alpha {alpha:g}, beta {beta:g}, {len(G)} style layer(s))")
        if not got.requires_grad:
            return _say(False, name, "not differentiable: no .item(), float(...), .detach() or torch.no_grad() inside")
    return _say(True, name, "matches alpha * content + beta * sum_l w_l E_l on 3 test inputs (1 to 3 style layers)")
