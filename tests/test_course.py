"""Run modes and the notebooks' checked claims (course.RunMode.check with nbval's sanitizers)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nstlib import course

SANITIZE = Path(__file__).resolve().parents[1] / "notebooks" / "sanitize.cfg"


def sanitized(text: str) -> str:
    """What nbval compares: the text after every regex of notebooks/sanitize.cfg, in order."""
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", SANITIZE.read_text(), flags=re.MULTILINE)
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    return text


@pytest.fixture(autouse=True)
def pretrained(monkeypatch):
    monkeypatch.setenv("NSTLIB_WEIGHTS", "caffe:/some/weights.pth")   # claims are judged unless a test says not


def claim_output(mode: str, holds, measured: str, capsys) -> tuple[str, bool]:
    run = course.RunMode(mode, torch.device("cpu"), "test")
    verdict = run.check("the loss fell 100x", holds=holds, measured=measured)
    return capsys.readouterr().out, verdict


def test_a_claim_that_holds_matches_the_smoke_reference(capsys):
    smoke, v_smoke = claim_output("smoke", False, "ratio 0.5", capsys)   # smoke: never judged
    cpu, v_cpu = claim_output("cpu", True, "ratio 0.004 (threshold 0.01)", capsys)
    assert v_smoke is True and v_cpu is True
    assert "not checked in smoke mode" in smoke and cpu.startswith("✓ the loss fell 100x (measured: ")
    assert smoke.count("\n") == cpu.count("\n") == 1, "one line each"
    assert sanitized(smoke) == sanitized(cpu)


@pytest.mark.parametrize("mode", ["cpu", "gpu"])
def test_a_claim_that_fails_differs_from_the_reference(mode, capsys):
    smoke, _ = claim_output("smoke", True, "x", capsys)
    out, verdict = claim_output(mode, np.bool_(False), "ratio 0.5 (threshold 0.01)", capsys)
    assert verdict is False and out.startswith("✗ the loss fell 100x")
    assert sanitized(out) != sanitized(smoke)


def test_measured_numbers_do_not_reach_the_comparison(capsys):
    a, _ = claim_output("cpu", True, "ratio 0.004\n  more", capsys)
    b, _ = claim_output("cpu", True, "ratio 0.007", capsys)
    assert a != b and sanitized(a) == sanitized(b)
    assert "(measured: ratio 0.004 more)" in a   # one line, whatever the notebook passed


def test_holds_must_be_a_verdict_not_a_number(capsys):
    run = course.RunMode("cpu", torch.device("cpu"), "test")
    with pytest.raises(TypeError, match="holds must be a bool"):
        run.check("x", holds=0.3, measured="")
    with pytest.raises(TypeError, match="holds=bool"):
        run.check("x", holds=torch.tensor(True), measured="")


def test_random_weights_do_not_judge_claims(monkeypatch, capsys):
    monkeypatch.setenv("NSTLIB_WEIGHTS", "random:vgg16:0")
    out, verdict = claim_output("cpu", False, "ratio 0.5", capsys)
    assert verdict is True and "not checked with random weights" in out
    smoke, _ = claim_output("smoke", True, "x", capsys)
    assert sanitized(out) == sanitized(smoke)


def test_a_claim_with_parentheses_and_numbers_is_compared_by_its_text(capsys):
    claim = "conv1_1 falls furthest (to under 2 % of its start; at least 10x further)"
    run = course.RunMode("smoke", torch.device("cpu"), "test")
    run.check(claim, holds=False, measured="a (b) c")
    smoke = capsys.readouterr().out
    run = course.RunMode("cpu", torch.device("cpu"), "test")
    run.check(claim, holds=True, measured="conv1_1 8.3e-03 (x); y")
    cpu = capsys.readouterr().out
    assert sanitized(smoke) == sanitized(cpu) == f"CHECKED {claim}\n"
