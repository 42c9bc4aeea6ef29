"""Tests of intradist.losses, the loss math of intra-distillation (Xu, Koehn and Murray, EMNLP 2022).

Every expected value here is derived independently of the code under test: a number worked
out by hand, a float64 reference written as explicit Python loops over passes, positions and
vocabulary (``math`` only, no torch softmax), torch.distributions, fairseq's own function, or
a mathematical property of the quantity.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from intradist import losses
from intradist.losses import (
    adaptive_alpha,
    intra_distillation_loss,
    kd_loss,
    label_smoothed_nll_loss,
    mix_with_distillation,
)

LN = math.log

# ---------------------------------------------------------------------------------------------
# float64 reference implementations with explicit loops (no torch arithmetic)
# ---------------------------------------------------------------------------------------------


def _ref_log_softmax(row):
    """log softmax of one list of floats, via a max-shifted log-sum-exp written out by hand."""
    top = max(row)
    log_z = top + LN(sum(math.exp(x - top) for x in row))
    return [x - log_z for x in row]


def _ref_log_mean_exp(values):
    """log((1/K) sum_k exp(values[k])) for a list of floats, stable for very negative values."""
    top = max(values)
    return top + LN(sum(math.exp(v - top) for v in values)) - LN(len(values))


def _ref_kl(log_a, log_b):
    """KL(a || b) = sum_v a_v (log a_v - log b_v) for two lists of log-probabilities."""
    total = 0.0
    for la, lb in zip(log_a, log_b):
        pa = math.exp(la)
        if pa > 0.0:
            total += pa * (la - lb)
    return total


def _positions(shape):
    """All index tuples of a leading (non-vocabulary) shape."""
    return list(itertools.product(*(range(n) for n in shape)))


def _at(nested, index):
    for i in index:
        nested = nested[i]
    return nested


def _ref_intra(logits, divergence):
    """Per-position divergence by the paper's definition, float64 loops.

    X  = (1/K) sum_i [KL(p_i || m) + KL(m || p_i)]
    JS = (1/K) sum_i  KL(p_i || m)
    with m = (1/K) sum_i p_i.
    """
    lists = [x.detach().double().tolist() for x in logits]
    lead = tuple(logits[0].shape[:-1])
    out = torch.zeros(lead, dtype=torch.float64)
    num_passes = len(lists)
    for index in _positions(lead):
        log_ps = [_ref_log_softmax(_at(lst, index)) for lst in lists]
        vocab = len(log_ps[0])
        log_m = [_ref_log_mean_exp([log_ps[i][v] for i in range(num_passes)]) for v in range(vocab)]
        total = 0.0
        for i in range(num_passes):
            total += _ref_kl(log_ps[i], log_m)
            if divergence == "x":
                total += _ref_kl(log_m, log_ps[i])
        out[index] = total / num_passes
    return out


def _ref_kd(student, teachers, temperature):
    """Per-position tau^2 * KL(mean_j softmax(t_j/tau) || softmax(s/tau)), float64 loops."""
    s_list = student.detach().double().tolist()
    t_lists = [t.detach().double().tolist() for t in teachers]
    lead = tuple(student.shape[:-1])
    out = torch.zeros(lead, dtype=torch.float64)
    for index in _positions(lead):
        log_p = _ref_log_softmax([x / temperature for x in _at(s_list, index)])
        member_logs = [_ref_log_softmax([x / temperature for x in _at(t, index)]) for t in t_lists]
        vocab = len(log_p)
        log_q = [_ref_log_mean_exp([m[v] for m in member_logs]) for v in range(vocab)]
        out[index] = temperature**2 * _ref_kl(log_q, log_p)
    return out


def _ref_reduce(per_position, mask, reduction):
    """Reduce a float64 per-position tensor with explicit loops over the positions."""
    flat_values = per_position.flatten().tolist()
    if mask is None:
        flat_mask = [True] * len(flat_values)
    else:
        flat_mask = [bool(b) for b in mask.flatten().tolist()]
    if reduction == "none":
        kept = [v if keep else 0.0 for v, keep in zip(flat_values, flat_mask)]
        return torch.tensor(kept, dtype=torch.float64).reshape(per_position.shape)
    total = 0.0
    count = 0
    for v, keep in zip(flat_values, flat_mask):
        if keep:
            total += v
            count += 1
    if reduction == "sum":
        return torch.tensor(total, dtype=torch.float64)
    return torch.tensor(total / max(count, 1), dtype=torch.float64)


def _random_logits(num, shape, seed, scale=3.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype) for _ in range(num)]


# 2 x 3 positions, 3 of them counted.
MASK = torch.tensor([[True, True, False], [True, False, False]])
SHAPE = (2, 3, 5)


def _assert_close_to_ref(actual, expected, rtol=1e-5, atol=1e-6):
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# intra_distillation_loss: values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("num_passes", [2, 3])
@pytest.mark.parametrize("divergence", ["x", "js"])
def test_intra_distillation_matches_float64_loop_reference(divergence, num_passes, reduction, use_mask):
    logits = _random_logits(num_passes, SHAPE, seed=100 + num_passes)
    mask = MASK if use_mask else None
    actual = intra_distillation_loss(logits, divergence=divergence, mask=mask, reduction=reduction)
    expected = _ref_reduce(_ref_intra(logits, divergence), mask, reduction)
    assert actual.shape == expected.shape
    _assert_close_to_ref(actual, expected)


def test_intra_distillation_default_is_x_divergence_summed_over_positions():
    logits = _random_logits(2, SHAPE, seed=7)
    expected = _ref_reduce(_ref_intra(logits, "x"), None, "sum")
    _assert_close_to_ref(intra_distillation_loss(logits), expected)


def test_intra_distillation_hand_computed_two_passes_two_classes():
    # p1 = softmax([0, 0]) = (1/2, 1/2); p2 = softmax([ln 3, 0]) = (3/4, 1/4); m = (5/8, 3/8).
    p1 = torch.tensor([[0.0, 0.0]])
    p2 = torch.tensor([[LN(3.0), 0.0]])
    kl_p1_m = 0.5 * LN(0.5 / 0.625) + 0.5 * LN(0.5 / 0.375)
    kl_p2_m = 0.75 * LN(0.75 / 0.625) + 0.25 * LN(0.25 / 0.375)
    kl_m_p1 = 0.625 * LN(0.625 / 0.5) + 0.375 * LN(0.375 / 0.5)
    kl_m_p2 = 0.625 * LN(0.625 / 0.75) + 0.375 * LN(0.375 / 0.25)
    x_expected = (kl_p1_m + kl_m_p1 + kl_p2_m + kl_m_p2) / 2  # = 0.068663...
    js_expected = (kl_p1_m + kl_p2_m) / 2  # = 0.033822...
    assert x_expected == pytest.approx(0.0686632680, abs=1e-9)
    assert js_expected == pytest.approx(0.0338220756, abs=1e-9)
    assert intra_distillation_loss([p1, p2], "x").item() == pytest.approx(x_expected, rel=1e-6)
    assert intra_distillation_loss([p1, p2], "js").item() == pytest.approx(js_expected, rel=1e-6)


def test_intra_distillation_mask_zeroes_padding_in_none_and_mean_divides_by_counted_positions():
    logits = _random_logits(3, SHAPE, seed=11)
    per_position = intra_distillation_loss(logits, mask=MASK, reduction="none")
    assert per_position.shape == MASK.shape
    assert torch.all(per_position[~MASK] == 0.0)
    unmasked = intra_distillation_loss(logits, reduction="none")
    assert torch.equal(per_position[MASK], unmasked[MASK])
    total = intra_distillation_loss(logits, mask=MASK, reduction="sum")
    mean = intra_distillation_loss(logits, mask=MASK, reduction="mean")
    counted = int(MASK.sum())  # 3, not 6
    assert counted == 3
    assert mean.item() == pytest.approx(total.item() / counted, rel=1e-6)


def test_intra_distillation_padding_values_do_not_affect_masked_loss():
    logits = _random_logits(2, SHAPE, seed=12)
    changed = [x.clone() for x in logits]
    gen = torch.Generator().manual_seed(120)
    changed[0][~MASK] = 1e3 * torch.randn(int((~MASK).sum()), SHAPE[-1], generator=gen)
    for reduction in ("sum", "mean", "none"):
        a = intra_distillation_loss(logits, mask=MASK, reduction=reduction)
        b = intra_distillation_loss(changed, mask=MASK, reduction=reduction)
        assert torch.equal(a, b)


def test_intra_distillation_integer_mask_behaves_like_boolean_mask():
    logits = _random_logits(2, SHAPE, seed=13)
    for reduction in ("sum", "mean", "none"):
        a = intra_distillation_loss(logits, mask=MASK, reduction=reduction)
        b = intra_distillation_loss(logits, mask=MASK.long(), reduction=reduction)
        assert torch.equal(a, b)


def test_intra_distillation_mean_with_every_position_masked_is_zero_not_nan():
    logits = _random_logits(2, SHAPE, seed=14)
    empty = torch.zeros(SHAPE[:-1], dtype=torch.bool)
    assert intra_distillation_loss(logits, mask=empty, reduction="mean").item() == 0.0
    assert intra_distillation_loss(logits, mask=empty, reduction="sum").item() == 0.0


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 2, 2, 5)], ids=["single", "flat", "3d"])
def test_intra_distillation_accepts_any_leading_shape(shape):
    logits = _random_logits(2, shape, seed=15)
    expected = _ref_intra(logits, "x")
    actual = intra_distillation_loss(logits, reduction="none")
    assert actual.shape == shape[:-1]
    _assert_close_to_ref(actual, expected)
    _assert_close_to_ref(intra_distillation_loss(logits, reduction="sum"), expected.sum())


# ---------------------------------------------------------------------------------------------
# intra_distillation_loss: mathematical properties
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_passes", [2, 3, 4])
def test_x_divergence_equals_mean_of_forward_plus_reverse_kl_to_mean_distribution(num_passes):
    logits = _random_logits(num_passes, SHAPE, seed=20 + num_passes, dtype=torch.float64)
    dists = [torch.distributions.Categorical(logits=x) for x in logits]
    mean_probs = torch.stack([d.probs for d in dists]).mean(dim=0)
    m = torch.distributions.Categorical(probs=mean_probs)
    kl = torch.distributions.kl_divergence
    expected_x = sum(kl(d, m) + kl(m, d) for d in dists) / num_passes
    expected_js = sum(kl(d, m) for d in dists) / num_passes
    actual_x = intra_distillation_loss([x.float() for x in logits], "x", reduction="none")
    actual_js = intra_distillation_loss([x.float() for x in logits], "js", reduction="none")
    torch.testing.assert_close(actual_x.double(), expected_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actual_js.double(), expected_js, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("divergence", ["x", "js"])
@pytest.mark.parametrize("num_passes", [2, 3])
def test_intra_distillation_is_zero_when_all_passes_are_identical(divergence, num_passes):
    (base,) = _random_logits(1, SHAPE, seed=30)
    logits = [base.clone() for _ in range(num_passes)]
    out = intra_distillation_loss(logits, divergence, reduction="none")
    torch.testing.assert_close(out, torch.zeros(SHAPE[:-1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("divergence", ["x", "js"])
def test_intra_distillation_is_zero_when_passes_differ_by_a_constant_shift_per_position(divergence):
    # softmax(x + c) == softmax(x) for any constant c per position, so the passes agree.
    (base,) = _random_logits(1, SHAPE, seed=31)
    gen = torch.Generator().manual_seed(32)
    logits = [base + 10.0 * torch.randn(SHAPE[:-1] + (1,), generator=gen) for _ in range(3)]
    out = intra_distillation_loss(logits, divergence, reduction="none")
    torch.testing.assert_close(out, torch.zeros(SHAPE[:-1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(10))
def test_intra_distillation_is_non_negative_and_js_never_exceeds_x(seed):
    num_passes = 2 + seed % 3
    logits = _random_logits(num_passes, (4, 7, 9), seed=40 + seed, scale=0.5 + seed)
    x = intra_distillation_loss(logits, "x", reduction="none")
    js = intra_distillation_loss(logits, "js", reduction="none")
    assert torch.all(x >= -1e-6)
    assert torch.all(js >= -1e-6)
    # X = JS + mean_i KL(m || p_i) and KL >= 0.
    assert torch.all(js <= x + 1e-6)


# ---------------------------------------------------------------------------------------------
# intra_distillation_loss: gradients, precision, low-precision inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("divergence", ["x", "js"])
def test_intra_distillation_gradcheck_float64(divergence):
    logits = [x.requires_grad_() for x in _random_logits(3, (2, 3, 5), seed=50, scale=1.0, dtype=torch.float64)]
    mask = MASK

    def fn(*xs):
        return intra_distillation_loss(list(xs), divergence, mask=mask, reduction="none")

    assert torch.autograd.gradcheck(fn, tuple(logits), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("divergence", ["x", "js"])
def test_intra_distillation_float64_inputs_are_not_downcast_to_float32(divergence):
    # Passes that nearly agree: the divergence is ~1e-9, so a float32 computation loses
    # most of its significant digits, while a float64 one matches the reference closely.
    (base,) = _random_logits(1, SHAPE, seed=51, dtype=torch.float64)
    gen = torch.Generator().manual_seed(52)
    logits = [base + 1e-4 * torch.randn(SHAPE, generator=gen, dtype=torch.float64) for _ in range(2)]
    expected = _ref_intra(logits, divergence)
    actual = intra_distillation_loss(logits, divergence, reduction="none")
    torch.testing.assert_close(actual.double(), expected, rtol=1e-7, atol=1e-15)


def _extreme_logits(dtype):
    # +-1e4 and zeros: softmax probabilities underflow to exactly 0 for many entries.
    a = torch.tensor(
        [
            [[1e4, -1e4, 0.0, 5.0, -3.0], [0.0, 0.0, 0.0, 0.0, 0.0], [-1e4, -1e4, 1e4, 1e4, 0.0]],
            [[1e4, 1e4, 1e4, -1e4, -1e4], [3.0, -1e4, 2.0, -1e4, 1.0], [-1e4, 0.0, 1e4, 2.0, 1.0]],
        ]
    )
    b = torch.tensor(
        [
            [[-1e4, 1e4, 0.0, 5.0, -3.0], [1e4, 0.0, 0.0, 0.0, -1e4], [-1e4, -1e4, 1e4, 1e4, 0.0]],
            [[-1e4, 1e4, 0.0, -1e4, 1e4], [3.0, 1e4, 2.0, -1e4, 1.0], [1e4, 0.0, -1e4, 2.0, 1.0]],
        ]
    )
    return [a.to(dtype), b.to(dtype)]


@pytest.mark.parametrize("divergence", ["x", "js"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_intra_distillation_low_precision_extreme_logits_give_finite_float32_matching_float32(dtype, divergence):
    logits = _extreme_logits(dtype)
    out = intra_distillation_loss(logits, divergence, reduction="none")
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    same_values_fp32 = [x.float() for x in logits]
    torch.testing.assert_close(out, intra_distillation_loss(same_values_fp32, divergence, reduction="none"))
    # ... and both match the float64 loop reference on those exact values.
    _assert_close_to_ref(out, _ref_intra(same_values_fp32, divergence), rtol=1e-5, atol=1e-3)
    total = intra_distillation_loss(logits, divergence, reduction="sum")
    assert total.dtype == torch.float32 and torch.isfinite(total)
    if divergence == "x":
        # KL(m || p_i) with p_i ~ exp(-2e4) where m ~ 1/2: X is of order 1e4, not inf/nan.
        assert out.max().item() > 1e3
    else:
        # JS with K passes is bounded by ln K; disjoint one-hot passes reach it.
        assert out.max().item() == pytest.approx(LN(2), rel=1e-5)
        assert torch.all(out <= LN(2) + 1e-6)


# ---------------------------------------------------------------------------------------------
# intra_distillation_loss: errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_passes", [0, 1])
def test_intra_distillation_rejects_fewer_than_two_passes(num_passes):
    logits = _random_logits(num_passes, SHAPE, seed=60) if num_passes else []
    with pytest.raises(ValueError, match="at least 2 passes"):
        intra_distillation_loss(logits)


def test_intra_distillation_rejects_unknown_divergence():
    with pytest.raises(ValueError, match="'kl'"):
        intra_distillation_loss(_random_logits(2, SHAPE, seed=61), divergence="kl")


def test_intra_distillation_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="'avg'"):
        intra_distillation_loss(_random_logits(2, SHAPE, seed=62), reduction="avg")


@pytest.mark.parametrize("mask_shape", [(3, 2), (2, 3, 5), (6,), (2, 4)])
def test_intra_distillation_rejects_mask_of_wrong_shape(mask_shape):
    with pytest.raises(ValueError, match="mask shape"):
        intra_distillation_loss(_random_logits(2, SHAPE, seed=63), mask=torch.ones(mask_shape, dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# adaptive_alpha
# ---------------------------------------------------------------------------------------------

SCHEDULES = [(30, 5, 10, 5.0), (1000, 2, 7, 10.0), (12345, 1.5, 4, 2.0), (50, 0.5, 3, 3.0)]


@pytest.mark.parametrize("max_step,p,q,alpha", SCHEDULES)
def test_adaptive_alpha_is_one_at_n_over_q_and_alpha_at_n_over_p(max_step, p, q, alpha):
    assert adaptive_alpha(max_step / q, max_step, alpha, p, q) == pytest.approx(1.0)
    assert adaptive_alpha(max_step / p, max_step, alpha, p, q) == pytest.approx(alpha)
    # continuous from the left at N/p
    assert adaptive_alpha(max_step / p * (1 - 1e-9), max_step, alpha, p, q) == pytest.approx(alpha, rel=1e-6)


@pytest.mark.parametrize("max_step,p,q,alpha", SCHEDULES)
def test_adaptive_alpha_is_zero_at_step_zero(max_step, p, q, alpha):
    assert adaptive_alpha(0, max_step, alpha, p, q) == 0.0


@pytest.mark.parametrize("max_step,p,q,alpha", SCHEDULES)
def test_adaptive_alpha_is_constant_alpha_from_n_over_p_on(max_step, p, q, alpha):
    for step in (max_step / p, max_step / p + 1, 2 * max_step / p, 10 * max_step / p):
        assert adaptive_alpha(step, max_step, alpha, p, q) == pytest.approx(alpha)


@pytest.mark.parametrize("max_step,p,q,alpha", SCHEDULES)
def test_adaptive_alpha_strictly_increases_between_zero_and_n_over_p(max_step, p, q, alpha):
    end = max_step / p
    steps = [end * k / 200 for k in range(200)]  # 0 .. just below N/p
    values = [adaptive_alpha(t, max_step, alpha, p, q) for t in steps]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[-1] < alpha


def test_adaptive_alpha_hand_computed_value():
    # N=30, p=5, q=10, alpha=5, t=1: gamma = ln(1/5)/ln(1/2) = 2.3219...; alpha * (5*1/30)**gamma.
    gamma = LN(1 / 5) / LN(1 / 2)
    expected = 5 * (1 / 6) ** gamma
    assert expected == pytest.approx(0.0780115, abs=1e-7)
    assert adaptive_alpha(1, 30, 5, 5, 10) == pytest.approx(expected, rel=1e-12)
    # and at t = N/q = 3: 5 * (1/2)**gamma = 5 * 1/5 = 1
    assert adaptive_alpha(3, 30, 5, 5, 10) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_adaptive_alpha_returns_alpha_unchanged_when_alpha_at_most_one(alpha):
    for step in (0, 1, 3, 6, 100):
        value = adaptive_alpha(step, 30, alpha, 5, 10)
        assert value == alpha
        assert isinstance(value, float)


def test_adaptive_alpha_returns_python_float():
    assert isinstance(adaptive_alpha(1, 30, 5, 5, 10), float)
    assert isinstance(adaptive_alpha(100, 30, 5, 5, 10), float)


@pytest.mark.parametrize("p,q", [(10, 5), (5, 5), (0, 10), (-1, 10)])
def test_adaptive_alpha_rejects_bad_p_q_naming_the_values(p, q):
    with pytest.raises(ValueError, match=re.escape(f"p={p}, q={q}")):
        adaptive_alpha(1, 30, 5.0, p, q)


@pytest.mark.parametrize("max_step", [0, -30])
def test_adaptive_alpha_rejects_non_positive_max_step_naming_the_value(max_step):
    with pytest.raises(ValueError, match=re.escape(f"N={max_step}")):
        adaptive_alpha(1, max_step, 5.0, 5, 10)


# ---------------------------------------------------------------------------------------------
# kd_loss
# ---------------------------------------------------------------------------------------------


def test_kd_hand_computed_two_classes():
    # teacher q = softmax([0, ln 3]) = (1/4, 3/4); student p = softmax([0, 0]) = (1/2, 1/2)
    # KL(q || p) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...
    teacher = torch.tensor([[0.0, LN(3.0)]])
    student = torch.tensor([[0.0, 0.0]])
    expected = 0.25 * LN(0.5) + 0.75 * LN(1.5)
    assert expected == pytest.approx(0.1308120359, abs=1e-9)
    assert kd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_kd_temperature_scales_by_tau_squared_hand_computed():
    # At tau = 2, teacher [0, 2 ln 3] / 2 = [0, ln 3] -> (1/4, 3/4); student [0, 0] -> (1/2, 1/2).
    # The loss is tau^2 = 4 times the KL above.
    teacher = torch.tensor([[0.0, 2 * LN(3.0)]])
    student = torch.tensor([[0.0, 0.0]])
    kl = 0.25 * LN(0.5) + 0.75 * LN(1.5)
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(4 * kl, rel=1e-6)
    # tau = 0.5: teacher [0, ln(3)/2] / 0.5 = [0, ln 3]; student [0, ln(2)/2] / 0.5 = [0, ln 2] -> (1/3, 2/3)
    teacher = torch.tensor([[0.0, LN(3.0) / 2]])
    student = torch.tensor([[0.0, LN(2.0) / 2]])
    kl = 0.25 * LN(0.25 / (1 / 3)) + 0.75 * LN(0.75 / (2 / 3))
    assert kd_loss(student, teacher, temperature=0.5).item() == pytest.approx(0.25 * kl, rel=1e-5)


@pytest.mark.parametrize("use_mask", [False, True], ids=["no_mask", "mask"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("num_teachers", [1, 3])
def test_kd_matches_float64_loop_reference(num_teachers, temperature, reduction, use_mask):
    student, *teachers = _random_logits(1 + num_teachers, SHAPE, seed=70 + num_teachers)
    mask = MASK if use_mask else None
    teacher_arg = teachers[0] if num_teachers == 1 else teachers
    actual = kd_loss(student, teacher_arg, temperature=temperature, mask=mask, reduction=reduction)
    expected = _ref_reduce(_ref_kd(student, teachers, temperature), mask, reduction)
    assert actual.shape == expected.shape
    _assert_close_to_ref(actual, expected)


def test_kd_single_teacher_in_a_list_equals_bare_tensor():
    student, teacher = _random_logits(2, SHAPE, seed=75)
    assert torch.equal(kd_loss(student, [teacher], reduction="none"), kd_loss(student, teacher, reduction="none"))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_ensemble_equals_kd_against_mean_of_member_softmaxes(temperature):
    student, *members = _random_logits(4, SHAPE, seed=76, dtype=torch.float64)
    # mean of the members' softmax(t_j / tau), computed independently in float64
    mean_probs = torch.stack([torch.softmax(t / temperature, dim=-1) for t in members]).mean(dim=0)
    # a single teacher whose softmax(. / tau) is exactly that mean: tau * log(mean)
    single_teacher = temperature * torch.log(mean_probs)
    ensemble = kd_loss(student.float(), [t.float() for t in members], temperature=temperature, reduction="none")
    single = kd_loss(student.float(), single_teacher.float(), temperature=temperature, reduction="none")
    torch.testing.assert_close(ensemble, single, rtol=1e-5, atol=1e-6)
    # and explicitly: tau^2 * sum_v q_v (log q_v - log softmax(s/tau)_v)
    log_p = torch.log_softmax(student / temperature, dim=-1)
    explicit = temperature**2 * (mean_probs * (torch.log(mean_probs) - log_p)).sum(-1)
    torch.testing.assert_close(ensemble.double(), explicit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_is_zero_when_student_equals_teacher(temperature):
    (logits,) = _random_logits(1, SHAPE, seed=77)
    out = kd_loss(logits, logits.clone(), temperature=temperature, reduction="none")
    torch.testing.assert_close(out, torch.zeros(SHAPE[:-1]), rtol=0, atol=1e-6)
    # an ensemble of identical copies of the student, too
    out = kd_loss(logits, [logits.clone(), logits + 5.0], temperature=temperature, reduction="none")
    torch.testing.assert_close(out, torch.zeros(SHAPE[:-1]), rtol=0, atol=1e-5)


def test_kd_teacher_gets_no_gradient_and_student_does():
    student, t1, t2 = [x.requires_grad_() for x in _random_logits(3, SHAPE, seed=78)]
    kd_loss(student, t1, temperature=2.0).backward()
    assert t1.grad is None
    assert student.grad is not None and torch.count_nonzero(student.grad) > 0
    student.grad = None
    out = kd_loss(student, [t1, t2])
    out.backward()
    assert t1.grad is None and t2.grad is None
    assert student.grad is not None


def test_kd_mask_zeroes_padding_and_mean_divides_by_counted_positions():
    student, teacher = _random_logits(2, SHAPE, seed=79)
    per_position = kd_loss(student, teacher, mask=MASK, reduction="none")
    assert torch.all(per_position[~MASK] == 0.0)
    assert torch.equal(per_position[MASK], kd_loss(student, teacher, reduction="none")[MASK])
    total = kd_loss(student, teacher, mask=MASK, reduction="sum")
    mean = kd_loss(student, teacher, mask=MASK, reduction="mean")
    assert mean.item() == pytest.approx(total.item() / 3, rel=1e-6)
    assert torch.all(per_position >= -1e-6)


def test_kd_gradcheck_float64_student_side():
    student, t1, t2 = _random_logits(3, (2, 3, 5), seed=80, scale=1.0, dtype=torch.float64)
    student.requires_grad_()

    def fn(s):
        return kd_loss(s, [t1, t2], temperature=2.0, mask=MASK, reduction="none")

    assert torch.autograd.gradcheck(fn, (student,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_kd_low_precision_extreme_logits_give_finite_float32_matching_float32(dtype):
    student, teacher = _extreme_logits(dtype)
    out = kd_loss(student, teacher, temperature=1.0, reduction="none")
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, kd_loss(student.float(), teacher.float(), reduction="none"))
    _assert_close_to_ref(out, _ref_kd(student.float(), [teacher.float()], 1.0), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_kd_rejects_non_positive_temperature(temperature):
    student, teacher = _random_logits(2, SHAPE, seed=81)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(student, teacher, temperature=temperature)


def test_kd_rejects_empty_teacher_list():
    (student,) = _random_logits(1, SHAPE, seed=82)
    with pytest.raises(ValueError, match="teacher"):
        kd_loss(student, [])


def test_kd_rejects_mask_of_wrong_shape_and_unknown_reduction():
    student, teacher = _random_logits(2, SHAPE, seed=83)
    with pytest.raises(ValueError, match="mask shape"):
        kd_loss(student, teacher, mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="'avg'"):
        kd_loss(student, teacher, reduction="avg")


# ---------------------------------------------------------------------------------------------
# label_smoothed_nll_loss
# ---------------------------------------------------------------------------------------------

PAD = 1


def _lprobs_and_target(n=9, vocab=11, seed=90):
    gen = torch.Generator().manual_seed(seed)
    lprobs = torch.log_softmax(3 * torch.randn(n, vocab, generator=gen), dim=-1)
    target = torch.randint(0, vocab, (n,), generator=gen)
    target[[2, 5, 6]] = PAD
    return lprobs, target


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_label_smoothed_equals_fairseq_exactly_reduce_sum_with_ignore_index(epsilon):
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss as fairseq_ls

    lprobs, target = _lprobs_and_target()
    ref_loss, ref_nll = fairseq_ls(lprobs.clone(), target.unsqueeze(-1), epsilon, ignore_index=PAD, reduce=True)
    loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=PAD, reduction="sum")
    assert torch.equal(loss, ref_loss)
    assert torch.equal(nll, ref_nll)
    # the [N, 1] target shape fairseq criterions pass is accepted too
    loss2, nll2 = label_smoothed_nll_loss(lprobs, target.unsqueeze(-1), epsilon, ignore_index=PAD)
    assert torch.equal(loss2, ref_loss) and torch.equal(nll2, ref_nll)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_label_smoothed_equals_fairseq_exactly_without_ignore_index(epsilon):
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss as fairseq_ls

    lprobs, target = _lprobs_and_target(seed=91)
    ref_loss, ref_nll = fairseq_ls(lprobs.clone(), target, epsilon, ignore_index=None, reduce=True)
    loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon, reduction="sum")
    assert torch.equal(loss, ref_loss) and torch.equal(nll, ref_nll)
    ref_loss, ref_nll = fairseq_ls(lprobs.clone(), target, epsilon, ignore_index=None, reduce=False)
    loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon, reduction="none")
    assert loss.shape == ref_loss.shape == target.shape
    assert torch.equal(loss, ref_loss) and torch.equal(nll, ref_nll)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_label_smoothed_none_equals_fairseq_per_position_with_ignore_index(epsilon):
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss as fairseq_ls

    lprobs, target = _lprobs_and_target(seed=92)
    ref_loss, ref_nll = fairseq_ls(lprobs.clone(), target, epsilon, ignore_index=PAD, reduce=False)
    assert ref_loss.shape == (len(target), 1)  # fairseq keeps the trailing dim here
    loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=PAD, reduction="none")
    assert loss.shape == target.shape
    assert torch.equal(loss, ref_loss.squeeze(-1))
    assert torch.equal(nll, ref_nll.squeeze(-1))
    assert torch.all(loss[target == PAD] == 0.0) and torch.all(nll[target == PAD] == 0.0)


def test_label_smoothed_hand_computed_v3_epsilon_0_1():
    # V = 3, epsilon = 0.1 -> eps_i = 0.05; p = (0.5, 0.3, 0.2), target 0:
    # loss = (1 - 0.1 - 0.05) * ln 2 + 0.05 * (ln 2 + ln(10/3) + ln 5) = 0.764503...
    # Second position: p = (0.1, 0.6, 0.3), target 1:
    # loss = 0.85 * ln(1/0.6) + 0.05 * (ln 10 + ln(1/0.6) + ln(1/0.3))
    lprobs = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]))
    target = torch.tensor([0, 1, 2])
    loss0 = 0.85 * LN(2) + 0.05 * (LN(2) + LN(10 / 3) + LN(5))
    loss1 = 0.85 * LN(1 / 0.6) + 0.05 * (LN(10) + LN(1 / 0.6) + LN(1 / 0.3))
    assert loss0 == pytest.approx(0.7645029983, abs=1e-9)
    nll0, nll1 = LN(2), LN(1 / 0.6)

    loss, nll = label_smoothed_nll_loss(lprobs[:1], target[:1], 0.1)
    assert loss.item() == pytest.approx(loss0, rel=1e-6)
    assert nll.item() == pytest.approx(nll0, rel=1e-6)

    # the third position is ignored (its target equals ignore_index 2)
    loss, nll = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=2, reduction="none")
    assert loss.tolist() == pytest.approx([loss0, loss1, 0.0], rel=1e-6)
    assert nll.tolist() == pytest.approx([nll0, nll1, 0.0], rel=1e-6)
    loss, nll = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=2, reduction="sum")
    assert loss.item() == pytest.approx(loss0 + loss1, rel=1e-6)
    assert nll.item() == pytest.approx(nll0 + nll1, rel=1e-6)
    loss, nll = label_smoothed_nll_loss(lprobs, target, 0.1, ignore_index=2, reduction="mean")
    assert loss.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-6)
    assert nll.item() == pytest.approx((nll0 + nll1) / 2, rel=1e-6)


def test_label_smoothed_epsilon_zero_is_plain_nll():
    lprobs, target = _lprobs_and_target(seed=93)
    loss, nll = label_smoothed_nll_loss(lprobs, target, 0.0, ignore_index=PAD, reduction="none")
    expected = [0.0 if t == PAD else -lprobs[i, t].item() for i, t in enumerate(target.tolist())]
    assert nll.tolist() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(loss, nll)


def test_label_smoothed_rejects_unknown_reduction():
    lprobs, target = _lprobs_and_target(seed=94)
    with pytest.raises(ValueError, match="'avg'"):
        label_smoothed_nll_loss(lprobs, target, 0.1, reduction="avg")


@pytest.mark.parametrize("divergence", ["x", "js"])
def test_intra_distillation_accepts_log_probabilities_and_gives_the_same_value_and_gradient(divergence):
    torch.manual_seed(3)
    logits = [torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    from_logits = intra_distillation_loss(logits, divergence)
    (grads_from_logits,) = [torch.autograd.grad(from_logits, logits)]
    from_log_probs = intra_distillation_loss(
        [torch.log_softmax(x, -1) for x in logits], divergence, inputs_are_log_probs=True
    )
    (grads_from_log_probs,) = [torch.autograd.grad(from_log_probs, logits)]
    assert from_log_probs.item() == pytest.approx(from_logits.item(), rel=1e-12)
    for a, b in zip(grads_from_logits, grads_from_log_probs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_mix_with_distillation_weights_the_two_terms_and_checks_beta():
    supervised, distillation = torch.tensor(2.0), torch.tensor(10.0)
    assert mix_with_distillation(supervised, distillation, 0.0).item() == 2.0
    assert mix_with_distillation(supervised, distillation, 0.25).item() == pytest.approx(0.75 * 2 + 0.25 * 10)
    assert mix_with_distillation(supervised, distillation, 1.0).item() == 10.0
    with pytest.raises(ValueError, match="kd weight must lie in \\[0, 1\\], got 1.5"):
        mix_with_distillation(supervised, distillation, 1.5)


# --- The objective every trainer composes -----------------------------------------------------


def test_combine_pass_losses_by_hand():
    ce = [torch.tensor(2.0), torch.tensor(4.0)]
    kd = [torch.tensor(1.0), torch.tensor(3.0)]
    # (1/2)[(0.75*2 + 0.25*1) + (0.75*4 + 0.25*3)] + 0.5 * 0.2 = (1.75 + 3.75)/2 + 0.1 = 2.85
    assert losses.combine_pass_losses(ce, kd, kd_weight=0.25, intra=torch.tensor(0.2), alpha=0.5).item() == pytest.approx(2.85)
    assert losses.combine_pass_losses(ce).item() == pytest.approx(3.0)


def test_regression_pass_divergence_is_the_variance_of_the_passes():
    passes = [torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])]
    # example 1: mean 2, ((1-2)^2 + (3-2)^2)/2 = 1; example 2: 0
    assert losses.regression_pass_divergence(passes, reduction="none").tolist() == [1.0, 0.0]
    assert losses.regression_pass_divergence(passes, reduction="mean").item() == 0.5


def test_classification_objective_matches_its_parts_computed_by_hand():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    target = torch.tensor([0, 2, 1, 2])
    teacher = torch.randn(4, 3)
    terms = losses.classification_objective([a, b], target, label_smoothing=0.1, alpha=2.0, teacher_logits=teacher,
                                            kd_weight=0.5, kd_temperature=2.0)  # fmt: skip

    def smoothed_ce(logits):  # fairseq's form: (1 - eps - eps_i) nll + eps_i * sum_v(-log p_v), eps_i = eps / (V - 1)
        lp = torch.log_softmax(logits, -1)
        nll = -lp[torch.arange(4), target]
        return ((1 - 0.1 - 0.05) * nll + 0.05 * -lp.sum(-1)).mean()

    def kd(logits):
        t = torch.softmax(teacher / 2, -1)
        return (4 * (t * (t.log() - torch.log_softmax(logits / 2, -1))).sum(-1)).mean()

    m = (torch.softmax(a, -1) + torch.softmax(b, -1)) / 2
    x_div = sum(((torch.softmax(z, -1) - m) * (torch.log_softmax(z, -1) - m.log())).sum(-1) for z in (a, b)) / 2
    expected = (0.5 * smoothed_ce(a) + 0.5 * kd(a) + 0.5 * smoothed_ce(b) + 0.5 * kd(b)) / 2 + 2.0 * x_div.mean()
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["intra"].item() == pytest.approx(x_div.mean().item(), rel=1e-5)


def test_classification_objective_ignores_padded_tokens_and_handles_regression():
    logits = torch.randn(2, 3, 5)
    target = torch.tensor([[1, -100, 2], [0, 4, -100]])
    with_padding = losses.classification_objective([logits], target, ignore_index=-100)["loss"]
    kept = target.ne(-100)
    by_hand = torch.nn.functional.cross_entropy(logits[kept], target[kept])
    assert with_padding.item() == pytest.approx(by_hand.item(), rel=1e-6)

    predictions = [torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [2.0]])]
    terms = losses.classification_objective(predictions, torch.tensor([2.0, 2.0]), alpha=1.0, regression=True)
    # MSE per pass: (1 + 0)/2 = 0.5 and (1 + 0)/2 = 0.5; variance of passes: (1 + 0)/2 = 0.5
    assert terms["supervised"].item() == 0.5 and terms["intra"].item() == 0.5 and terms["loss"].item() == 1.0


def test_classification_objective_intra_reduction_and_positions_by_hand():
    """Two passes over one sentence of 3 tokens: one labelled, one sub-token (-100), one padding (-100).

    Per position the X-divergence of two passes p, q is (1/2) sum_v [(p - m)(log p - log m) + (q - m)(log q - log m)]
    with p - m = (p - q) / 2 = m - q, which is (1/4) sum_v (p - q)(log p - log q): m cancels.
    """
    first = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]], dtype=torch.float64)
    second = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    target = torch.tensor([[0, -100, -100]])
    p, q = first.softmax(-1), second.softmax(-1)
    per_position = (0.25 * (p - q) * (p.log() - q.log())).sum(-1)[0]  # the X-divergence of K = 2
    cases = {("mean", "labelled"): per_position[0], ("sum", "labelled"): per_position[0],
             ("mean", "all"): per_position.mean(), ("sum", "all"): per_position.sum()}  # fmt: skip
    for (reduction, positions), expected in cases.items():
        intra = losses.classification_objective([first, second], target, alpha=1.0, ignore_index=-100,
                                                intra_reduction=reduction, intra_positions=positions)["intra"]  # fmt: skip
        assert intra.item() == pytest.approx(expected.item(), rel=1e-12), (reduction, positions)


def test_classification_objective_summed_intra_term_grows_with_the_batch_and_the_mean_does_not():
    torch.manual_seed(3)
    passes = [torch.randn(4, 5) for _ in range(3)]
    target = torch.zeros(4, dtype=torch.long)
    doubled = [torch.cat([x, x]) for x in passes]
    for reduction, factor in (("sum", 2.0), ("mean", 1.0)):
        one = losses.classification_objective(passes, target, alpha=1.0, intra_reduction=reduction)["intra"]
        two = losses.classification_objective(doubled, torch.cat([target, target]), alpha=1.0,
                                              intra_reduction=reduction)["intra"]  # fmt: skip
        assert two.item() == pytest.approx(factor * one.item(), rel=1e-6)


@pytest.mark.parametrize("name,value", [("intra_reduction", "none"), ("intra_positions", "padding")])
def test_classification_objective_rejects_unknown_intra_options(name, value):
    with pytest.raises(ValueError, match=name):
        losses.classification_objective([torch.zeros(2, 3)] * 2, torch.zeros(2, dtype=torch.long), **{name: value})
