"""nstlib.selfcheck_transfer: notebook 4's total-loss check passes a correct function and names
each typical mistake in its one line; a wrong answer never raises."""

from __future__ import annotations

import pytest
import torch

from nstlib import losses, selfcheck, selfcheck_transfer


def verdict(capsys, fn) -> tuple[bool, str]:
    ok = selfcheck_transfer.check_total_loss(fn)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, f"a check prints exactly one line, got {lines}"
    assert lines[0].startswith(selfcheck.PASS if ok else selfcheck.FAIL), lines[0]
    return ok, lines[0]


def solution(F, P, G, A, alpha, beta):
    content = 0.5 * ((F - P) ** 2).sum()
    style = sum(((g - a) ** 2).sum() / (4 * g.shape[0] ** 2) for g, a in zip(G, A)) / len(G)
    return alpha * content + beta * style


def test_the_solution_and_the_reference_pass(capsys):
    for fn in (solution, selfcheck_transfer.library_total_loss):
        ok, line = verdict(capsys, fn)
        assert ok and "on 3 test inputs" in line, line


def test_the_reference_is_the_library_losses_on_gram_matrices_over_m():
    """With G = F F^T / M per layer, the reference is alpha * losses.content_loss + beta * the mean of losses.style_loss."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.rand(1, n, 5, 4, generator=gen) for n in (3, 6)]
    paint = [torch.rand(1, n, 6, 3, generator=gen) for n in (3, 6)]
    F, P = torch.rand(1, 4, 3, 3, generator=gen), torch.rand(1, 4, 3, 3, generator=gen)
    G = [losses.gram_matrix(f, normalize=True)[0] for f in feats]
    A = [losses.gram_matrix(a, normalize=True)[0] for a in paint]
    got = selfcheck_transfer.library_total_loss(F, P, G, A, 0.5, 2.0)
    style = sum(losses.style_loss(f, losses.gram_matrix(a, normalize=True)).sum() for f, a in zip(feats, paint)) / 2
    assert torch.allclose(got, 0.5 * losses.content_loss(F, P).sum() + 2.0 * style, rtol=1e-5)


@pytest.mark.parametrize("mistake, words", [
    (lambda F, P, G, A, al, be: solution(F, P, G, A, be, al), "swapped"),
    (lambda F, P, G, A, al, be: solution(F, P, G, A, 2 * al, be), "1/2 of the content loss"),
    (lambda F, P, G, A, al, be: solution(F, P, G, A, al, be * len(G)), "w_l = 1 / (number of layers)"),
    (lambda F, P, G, A, al, be: al * 0.5 * ((F - P) ** 2).sum() + be * sum(((g - a) ** 2).sum() for g, a in zip(G, A)) / len(G),
     "misses its 1 / (4 N_l^2)"),
    (lambda F, P, G, A, al, be: al * 0.5 * ((F - P) ** 2).sum() + be * sum(((g - a) ** 2).sum() / (4 * g.shape[0]) for g, a in zip(G, A)) / len(G),
     "not by 4 N_l^2"),
], ids=["swapped", "no-half", "summed-layers", "no-4N2", "4N"])
def test_a_mistake_gets_its_hint(capsys, mistake, words):
    ok, line = verdict(capsys, mistake)
    assert not ok and words in line, line


def test_a_stub_an_error_a_float_and_a_detached_loss(capsys):
    def stub(*args):
        raise NotImplementedError
    assert "not written yet" in verdict(capsys, stub)[1]
    assert "raised KeyError" in verdict(capsys, lambda *a: {}["x"])[1]
    assert "returned float" in verdict(capsys, lambda *a: solution(*a).item())[1]
    assert "not differentiable" in verdict(capsys, lambda *a: solution(*a).detach())[1]
    assert "non-scalar" in verdict(capsys, lambda F, P, G, A, al, be: al * 0.5 * ((F - P) ** 2))[1]
    ok, line = verdict(capsys, lambda *a: solution(*a) * 1.5)
    assert not ok and "yours" in line and "the reference's" in line, line
