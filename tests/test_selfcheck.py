"""nstlib.selfcheck: every check passes on the library's function and on a hand-written correct
one, and names each kind of mistake; a check never raises for a wrong answer."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from nstlib import color, losses, selfcheck


def verdict(capsys: pytest.CaptureFixture[str], check: Callable[..., bool], fn: Callable) -> tuple[bool, str]:
    """Run a check; returns its verdict and the one line it printed."""
    ok = check(fn)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, f"a check prints exactly one line, got {lines}"
    assert lines[0].startswith(selfcheck.PASS if ok else selfcheck.FAIL), lines[0]
    return ok, lines[0]


def fails_with(capsys: pytest.CaptureFixture[str], check: Callable[..., bool], fn: Callable, *words: str) -> None:
    ok, line = verdict(capsys, check, fn)
    assert not ok, f"a wrong function passed: {line}"
    for word in words:
        assert word in line, f"expected {word!r} in the hint: {line}"


def passes(capsys: pytest.CaptureFixture[str], check: Callable[..., bool], fn: Callable, library: str) -> None:
    ok, line = verdict(capsys, check, fn)
    assert ok, line
    assert f"matches {library} on 3 test inputs" in line or "same 5-step" in line, line


def not_written(*args: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


ALL_CHECKS = [selfcheck.check_content_loss, selfcheck.check_gram_matrix, selfcheck.check_style_loss,
              selfcheck.check_normalized_style_loss, selfcheck.check_rgb_to_yiq, selfcheck.check_loss_and_grad]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_a_stub_is_not_written_yet(capsys, check):
    fails_with(capsys, check, not_written, "not written yet (NotImplementedError)", "write your code in the cell above")


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_an_error_becomes_a_hint_not_an_exception(capsys, check):
    def broken(*args):
        raise KeyError("oops")
    fails_with(capsys, check, broken, "raised KeyError")


# -- content loss (notebook 2) ------------------------------------------------------------------

def hand_content_loss(F, P):
    return 0.5 * ((F - P) ** 2).sum(dim=(1, 2, 3))


def test_content_loss_passes(capsys):
    passes(capsys, selfcheck.check_content_loss, losses.content_loss, "nstlib.losses.content_loss")
    passes(capsys, selfcheck.check_content_loss, hand_content_loss, "nstlib.losses.content_loss")


def test_content_loss_missing_half(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: 2 * hand_content_loss(F, P), "factor 2", "1/2 is missing")


def test_content_loss_mean_instead_of_sum(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: ((F - P) ** 2).flatten(1).mean(1), "mean")


def test_content_loss_one_number_for_the_batch(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: 0.5 * ((F - P) ** 2).sum(), "keep the batch", "(B,)")


def test_content_loss_wrong_shape(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: 0.5 * ((F - P) ** 2).sum(dim=(2, 3)),
               "wrong shape", "expected (1,)", "got (1, 4)")


def test_content_loss_not_differentiable(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: hand_content_loss(F, P).detach(), "not differentiable")


def test_content_loss_not_a_tensor(capsys):
    fails_with(capsys, selfcheck.check_content_loss, lambda F, P: hand_content_loss(F, P).tolist(), "returned list")


# -- Gram matrix (notebook 3) -------------------------------------------------------------------

def hand_gram(F):
    b, c, h, w = F.shape
    f = F.view(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2))


def test_gram_passes(capsys):
    passes(capsys, selfcheck.check_gram_matrix, losses.gram_matrix, "nstlib.losses.gram_matrix")
    passes(capsys, selfcheck.check_gram_matrix, hand_gram, "nstlib.losses.gram_matrix")
    passes(capsys, selfcheck.check_gram_matrix, lambda F: torch.einsum("bihw,bjhw->bij", F, F), "nstlib.losses.gram_matrix")


def test_gram_normalized_by_positions(capsys):
    fails_with(capsys, selfcheck.check_gram_matrix, lambda F: losses.gram_matrix(F, normalize=True), "divided by M = H·W")


def test_gram_normalized_by_c_h_w(capsys):
    fails_with(capsys, selfcheck.check_gram_matrix, lambda F: hand_gram(F) / F[0].numel(), "divided by C·H·W")


def test_gram_batch_mixed(capsys):
    def mixed(F):
        f = F.permute(1, 0, 2, 3).reshape(F.shape[1], -1)
        return f @ f.T
    fails_with(capsys, selfcheck.check_gram_matrix, mixed, "mixes the images of the batch")


def test_gram_positions_by_positions(capsys):
    fails_with(capsys, selfcheck.check_gram_matrix, lambda F: F.flatten(2).transpose(1, 2) @ F.flatten(2), "F^T F")


def test_gram_wrong_shape(capsys):
    fails_with(capsys, selfcheck.check_gram_matrix, lambda F: hand_gram(F)[0], "wrong shape", "expected (2, 3, 3)", "got (3, 3)")


def test_gram_transposed(capsys):
    # A Gram matrix is symmetric, so only an asymmetric result can be transposed: G plus a skew part.
    def skewed(F):
        g = hand_gram(F)
        return g + torch.triu(torch.ones_like(g), 1) - torch.tril(torch.ones_like(g), -1)

    def skewed_transposed(F):
        return skewed(F).transpose(1, 2)

    # The check compares with the library, which is symmetric: use it as the "library" for this one.
    spec_cases = [selfcheck.Case((f,), skewed(f)) for f in (torch.rand(1, 3, 2, 2), torch.rand(2, 4, 3, 3))]
    ok = selfcheck._check(skewed_transposed, selfcheck.Spec("gram_matrix", "lib", spec_cases))
    assert not ok and "transposed" in capsys.readouterr().out


def test_gram_loops_are_differentiable_too(capsys):
    def loops(F):
        b, c = F.shape[:2]
        f = F.reshape(b, c, -1)
        return torch.stack([torch.stack([torch.stack([(f[k, i] * f[k, j]).sum() for j in range(c)])
                                         for i in range(c)]) for k in range(b)])
    passes(capsys, selfcheck.check_gram_matrix, loops, "nstlib.losses.gram_matrix")


def test_gram_no_grad(capsys):
    fails_with(capsys, selfcheck.check_gram_matrix, lambda F: torch.tensor(hand_gram(F).tolist()), "not differentiable")


# -- Gatys style loss (notebook 3) --------------------------------------------------------------

def paper_style_loss(F, S, factor=1.0):
    N, M = F.shape[1], F.shape[2] * F.shape[3]
    G, A = hand_gram(F)[0], hand_gram(S)[0]
    return factor * ((G - A) ** 2).sum() / (4 * N**2 * M**2)


def test_style_loss_passes(capsys):
    passes(capsys, selfcheck.check_style_loss, lambda F, S: losses.style_loss(F, losses.gram_matrix(S, normalize=True)),
           "nstlib.losses.style_loss")
    passes(capsys, selfcheck.check_style_loss, paper_style_loss, "nstlib.losses.style_loss")


def test_style_loss_per_position_form_passes(capsys):
    def per_position(F, S):
        N = F.shape[1]
        G, A = losses.gram_matrix(F, normalize=True), losses.gram_matrix(S, normalize=True)
        return ((G - A) ** 2).sum() / (4 * N**2)
    passes(capsys, selfcheck.check_style_loss, per_position, "nstlib.losses.style_loss")


@pytest.mark.parametrize("scale, words", [
    (lambda N, M: 4 * N**2 * M**2, ["4 N² M²", "no normalization"]),
    (lambda N, M: M**2, ["off by M²", "1/M²"]),
    (lambda N, M: M, ["off by M ", "not M"]),
    (lambda N, M: 1 / M**2, ["twice"]),
    (lambda N, M: N**2, ["off by N²", "1/N²"]),
    (lambda N, M: 4 * N**2, ["off by 4 N²"]),
    (lambda N, M: 4.0, ["factor 4", "1/4"]),
    (lambda N, M: 0.5, ["1/2", "1/4"]),
], ids=["no-normalization", "M2", "M", "M2-twice", "N2", "4N2", "quarter", "half"])
def test_style_loss_names_the_missing_normalization(capsys, scale, words):
    def wrong(F, S):
        return paper_style_loss(F, S, scale(F.shape[1], F.shape[2] * F.shape[3]))
    fails_with(capsys, selfcheck.check_style_loss, wrong, *words)


def test_style_loss_non_scalar(capsys):
    def per_entry(F, S):
        N, M = F.shape[1], F.shape[2] * F.shape[3]
        return (hand_gram(F)[0] - hand_gram(S)[0]) ** 2 / (4 * N**2 * M**2)
    fails_with(capsys, selfcheck.check_style_loss, per_entry, "non-scalar", "forget to sum")


def test_style_loss_unknown_constant_factor(capsys):
    fails_with(capsys, selfcheck.check_style_loss, lambda F, S: paper_style_loss(F, S, 3.0), "constant factor 3")


def test_style_loss_other_difference(capsys):
    fails_with(capsys, selfcheck.check_style_loss, lambda F, S: paper_style_loss(F, S) + 1.0, "differs from", "test input 1")


# -- Choi & Kim's normalized style loss (notebook 5) ------------------------------------------

def hand_normalized(F, A):
    M = F.shape[2] * F.shape[3]
    G = hand_gram(F) / M
    return ((G - A) ** 2).sum() / (A ** 2).sum()


def test_normalized_style_loss_passes(capsys):
    passes(capsys, selfcheck.check_normalized_style_loss, losses.normalized_style_loss, "nstlib.losses.normalized_style_loss")
    passes(capsys, selfcheck.check_normalized_style_loss, hand_normalized, "nstlib.losses.normalized_style_loss")


def test_normalized_style_loss_gram_not_per_position(capsys):
    fails_with(capsys, selfcheck.check_normalized_style_loss,
               lambda F, A: ((hand_gram(F) - A) ** 2).sum() / (A ** 2).sum(), "not per position", "normalize=True")


def test_normalized_style_loss_not_divided(capsys):
    fails_with(capsys, selfcheck.check_normalized_style_loss,
               lambda F, A: ((losses.gram_matrix(F, normalize=True) - A) ** 2).sum(), "not divided by the target's energy")


def test_normalized_style_loss_divided_by_own_energy(capsys):
    def own(F, A):
        G = losses.gram_matrix(F, normalize=True)
        return ((G - A) ** 2).sum() / (G ** 2).sum()
    fails_with(capsys, selfcheck.check_normalized_style_loss, own, "energy of G")


def test_normalized_style_loss_norms_not_squared(capsys):
    fails_with(capsys, selfcheck.check_normalized_style_loss,
               lambda F, A: (losses.gram_matrix(F, normalize=True) - A).norm() / A.norm(), "not squared")


def test_normalized_style_loss_gatys_normalization(capsys):
    def gatys(F, A):
        return losses.style_loss(F, A).sum()
    fails_with(capsys, selfcheck.check_normalized_style_loss, gatys, "Gatys' normalization")


# -- RGB to YIQ (notebook 7) --------------------------------------------------------------------

YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def hand_yiq(img):
    b, _, h, w = img.shape
    return (YIQ @ img.reshape(b, 3, h * w)).reshape(b, 3, h, w)


def test_yiq_passes(capsys):
    passes(capsys, selfcheck.check_rgb_to_yiq, color.rgb_to_yiq, "nstlib.color.rgb_to_yiq")
    passes(capsys, selfcheck.check_rgb_to_yiq, hand_yiq, "nstlib.color.rgb_to_yiq")


def test_yiq_transposed_matrix(capsys):
    fails_with(capsys, selfcheck.check_rgb_to_yiq, lambda img: torch.einsum("ck,bchw->bkhw", YIQ, img), "transposed")


def test_yiq_channels_last(capsys):
    fails_with(capsys, selfcheck.check_rgb_to_yiq, lambda img: hand_yiq(img).permute(0, 2, 3, 1), "channels last")


def test_yiq_0_255(capsys):
    fails_with(capsys, selfcheck.check_rgb_to_yiq, lambda img: 255 * hand_yiq(img), "255")


def test_yiq_wrong_shape(capsys):
    fails_with(capsys, selfcheck.check_rgb_to_yiq, lambda img: hand_yiq(img)[:, :1], "wrong shape", "expected (1, 3, 4, 5)")


# -- the loss and its gradient for the optimization loop (notebook 2) ----------------------------

def hand_loss_and_grad(net, layer, x, target):
    loss = 0.5 * ((net.extract(x, [layer])[layer] - target) ** 2).sum()
    loss.backward()
    return loss


def test_loss_and_grad_passes(capsys, one_thread):
    ok, line = verdict(capsys, selfcheck.check_loss_and_grad, hand_loss_and_grad)
    assert ok and "same 5-step L-BFGS loss curve as nstlib.stylize.stylize" in line, line

    def with_library(net, layer, x, target):
        loss = losses.content_loss(net.extract(x, [layer])[layer], target).sum()
        loss.backward()
        return loss
    assert verdict(capsys, selfcheck.check_loss_and_grad, with_library)[0]


def test_loss_and_grad_without_backward(capsys, one_thread):
    def no_backward(net, layer, x, target):
        return 0.5 * ((net.extract(x, [layer])[layer] - target) ** 2).sum()
    fails_with(capsys, selfcheck.check_loss_and_grad, no_backward, "no gradient reached the pixels", "backward")


def test_loss_and_grad_of_a_detached_image(capsys, one_thread):
    def detached(net, layer, x, target):
        loss = 0.5 * ((net.extract(x.detach(), [layer])[layer] - target) ** 2).sum()
        return loss
    fails_with(capsys, selfcheck.check_loss_and_grad, detached, "no gradient reached the pixels")


def test_loss_and_grad_returns_nothing(capsys, one_thread):
    def no_return(net, layer, x, target):
        hand_loss_and_grad(net, layer, x, target)
    fails_with(capsys, selfcheck.check_loss_and_grad, no_return, "returns None")


def test_loss_and_grad_missing_half(capsys, one_thread):
    def doubled(net, layer, x, target):
        loss = ((net.extract(x, [layer])[layer] - target) ** 2).sum()
        loss.backward()
        return loss
    fails_with(capsys, selfcheck.check_loss_and_grad, doubled, "factor 2", "1/2 is missing")


def test_loss_and_grad_non_scalar(capsys, one_thread):
    def per_channel(net, layer, x, target):
        loss = 0.5 * ((net.extract(x, [layer])[layer] - target) ** 2).sum(dim=(0, 2, 3))
        loss.sum().backward()
        return loss
    fails_with(capsys, selfcheck.check_loss_and_grad, per_channel, "non-scalar")


def test_loss_and_grad_returns_a_float(capsys, one_thread):
    fails_with(capsys, selfcheck.check_loss_and_grad, lambda *a: hand_loss_and_grad(*a).item(), "returned float")


def test_loss_and_grad_gradient_of_another_loss(capsys, one_thread):
    def other(net, layer, x, target):
        loss = 0.5 * ((net.extract(x, [layer])[layer] - target) ** 2).sum()
        (3 * loss).backward()
        return loss
    fails_with(capsys, selfcheck.check_loss_and_grad, other, "not the gradient of the loss you return")


# -- what a student trying the exercises met (issue 29, item 6) ----------------------------------

def test_gram_with_T_on_a_batch_points_to_mT(capsys):
    def with_T(F):
        F = F.flatten(2)
        return F @ F.T  # reverses all three dimensions: a raw shape error from torch
    fails_with(capsys, selfcheck.check_gram_matrix, with_T, ".mT", "transpose(1, 2)")


def test_gram_with_mT_passes(capsys):
    assert verdict(capsys, selfcheck.check_gram_matrix, lambda F: F.flatten(2) @ F.flatten(2).mT)[0]


def test_gram_of_a_channels_last_reshape(capsys):
    def channels_last(F):
        B, C, H, W = F.shape
        G = F.reshape(B, H * W, C)
        return G.transpose(1, 2) @ G
    fails_with(capsys, selfcheck.check_gram_matrix, channels_last, "reshape does not move the channels", "flatten(2)")


def test_yiq_of_a_channels_last_reshape(capsys):
    M = color._RGB_TO_YIQ.float()
    fails_with(capsys, selfcheck.check_rgb_to_yiq, lambda img: (img.reshape(-1, 3) @ M.T).reshape(img.shape),
               "reshape does not move the channels", "permute")


def test_style_loss_off_by_N(capsys):
    def by_N(F, S):
        N, M = F.shape[1], F.shape[2] * F.shape[3]
        G, A = (F.flatten(2) @ F.flatten(2).mT)[0], (S.flatten(2) @ S.flatten(2).mT)[0]
        return ((G - A) ** 2).sum() / (4 * N * M ** 2)
    fails_with(capsys, selfcheck.check_style_loss, by_N, "off by N", "not N")


def test_normalized_style_loss_with_a_gram_over_N_M(capsys):
    def over_NM(F, A):
        G = (F.flatten(2) @ F.flatten(2).mT) / (F.shape[1] * F.shape[2] * F.shape[3])
        return ((G - A) ** 2).sum() / (A ** 2).sum()
    fails_with(capsys, selfcheck.check_normalized_style_loss, over_NM, "N·M", "M = H·W only")


def test_loss_and_grad_with_a_mean(capsys, one_thread):
    def mean(net, layer, x, target):
        loss = 0.5 * ((net.extract(x, [layer])[layer] - target) ** 2).mean()
        loss.backward()
        return loss
    fails_with(capsys, selfcheck.check_loss_and_grad, mean, "you took the mean")


def test_yours_or_library_says_which_the_cells_below_use(capsys):
    def your_f(x):
        return x + 1

    def library_f(x):
        return x + 2

    assert selfcheck.yours_or_library(your_f, True, library_f) is your_f
    assert "use your_f, yours" in capsys.readouterr().out
    assert selfcheck.yours_or_library(your_f, False, library_f) is library_f
    assert "the library's version until your_f passes its check" in capsys.readouterr().out
    with pytest.raises(TypeError, match="passed = selfcheck.check_"):
        selfcheck.yours_or_library(your_f, None, library_f)


def test_the_library_loss_and_grad_passes_notebook_2s_check(capsys, one_thread):
    assert selfcheck.check_loss_and_grad(selfcheck.library_loss_and_grad)
    assert "✓" in capsys.readouterr().out
