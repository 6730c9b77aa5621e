"""The Sinkhorn clustering target: estimated marginals, planted imbalanced clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from scllm_dsc.nn import sinkhorn_target, student_t_q
from scllm_dsc.nn._losses import _mixture_proportions

SIZES = (900, 100, 20)
MEANS = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]], dtype=torch.float64)


def _planted(seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([MEANS[i] + 0.6 * torch.randn(s, 2, generator=g, dtype=torch.float64)
                   for i, s in enumerate(SIZES)])
    return z, np.repeat(np.arange(3), SIZES)


def _fit(z, mu, marginals: str, n_steps: int = 100, **kwargs):
    """Self-training loop of the clustering head with the latent fixed: target from Q,
    centres moved to the target-weighted means (the minimiser of KL(P || Q) in the centres
    for a Gaussian kernel; a proxy of the gradient steps the model takes)."""
    mu = mu.clone()
    for _ in range(n_steps):
        p = sinkhorn_target(student_t_q(z, mu), marginals=marginals, **kwargs)
        mu = (p.T @ z) / p.sum(0)[:, None]
    return student_t_q(z, mu).argmax(1).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_900_100_20_recovered_from_a_split_start(seed):
    z, y = _planted(seed)
    # deliberately wrong start: two centres split the 900-cell cluster, the third one sits
    # between the 100- and 20-cell clusters
    mu = torch.tensor([[-0.5, 0.0], [0.5, 0.0], [4.0, 1.5]], dtype=torch.float64)
    start = student_t_q(z, mu).argmax(1).numpy()
    assert np.bincount(start[y == 0], minlength=3).max() < 600  # the big type is split
    labels = _fit(z, mu, "estimated", proportion_power=1.5)
    assert adjusted_rand_score(y, labels) >= 0.95
    assert np.bincount(labels[y == 0]).max() >= 895  # the big type is whole again
    # with the hard cluster sizes copied into the marginals the split is kept
    assert adjusted_rand_score(y, _fit(z, mu, "hard")) < 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_900_100_20_kept_from_a_correct_start(seed):
    """Estimated marginals keep a correct partition of very unequal sizes (a target with
    equal marginals would move cells of the 900 into the 20)."""
    z, y = _planted(seed)
    labels = _fit(z, MEANS.clone(), "estimated")
    assert adjusted_rand_score(y, labels) >= 0.95
    assert np.bincount(labels, minlength=3).min() >= 15


def test_target_marginals_are_the_stated_ones():
    torch.manual_seed(0)
    n, k = 400, 4
    q = student_t_q(torch.randn(n, 5, dtype=torch.float64), torch.randn(k, 5, dtype=torch.float64))
    p = sinkhorn_target(q, n_iter=200, marginals="estimated")
    torch.testing.assert_close(p.sum(1), torch.ones(n, dtype=q.dtype))
    pi = _mixture_proportions(5.0 * torch.log(q), floor=1e-3 / k)
    torch.testing.assert_close(p.sum(0), n * pi, rtol=1e-3, atol=1e-3)
    # "hard": the current argmax sizes
    p = sinkhorn_target(q, n_iter=200, marginals="hard")
    sizes = torch.bincount(q.argmax(1), minlength=k).to(q.dtype)
    torch.testing.assert_close(p.sum(0), sizes.clamp_min(1.0) * n / sizes.clamp_min(1.0).sum(),
                               rtol=1e-3, atol=1e-3)
    # an explicit prior, enforced exactly; relaxed (KL penalty) it lies between Q's columns
    prior = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=q.dtype)
    p = sinkhorn_target(q, n_iter=200, prior=prior)
    torch.testing.assert_close(p.sum(0), n * prior, rtol=1e-3, atol=1e-3)
    free = sinkhorn_target(q, n_iter=200, prior=prior, reg_marginal=1e-6).sum(0)
    relaxed = sinkhorn_target(q, n_iter=200, prior=prior, reg_marginal=1.0).sum(0)
    assert ((relaxed - n * prior).abs() <= (free - n * prior).abs() + 1e-6).all()
    torch.testing.assert_close(relaxed.sum(), torch.tensor(float(n), dtype=q.dtype))


def test_proportions_recover_planted_weights_and_floor():
    z, y = _planted(0)
    log_q = torch.log(student_t_q(z, MEANS))
    pi = _mixture_proportions(5.0 * log_q)  # the target's kernel: the planted sizes
    np.testing.assert_allclose(pi.numpy(), np.asarray(SIZES) / sum(SIZES), atol=0.01)
    pi = _mixture_proportions(1.5 * log_q)  # the broader kernel's option: same order
    assert pi[0] > pi[1] > pi[2] > 0
    # an empty component keeps at least the floor
    mu = torch.cat([MEANS, torch.tensor([[50.0, 50.0]], dtype=torch.float64)])
    pi = _mixture_proportions(torch.log(student_t_q(z, mu)), floor=0.01)
    assert pi[3] >= 0.01 - 1e-9 and abs(float(pi.sum()) - 1) < 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_target_keeps_device_and_dtype(dtype):
    q = student_t_q(torch.randn(60, 4, dtype=dtype), torch.randn(3, 4, dtype=dtype))
    p = sinkhorn_target(q)
    assert p.dtype == dtype and p.device == q.device and p.shape == q.shape
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.sum(1), torch.ones(60, dtype=dtype))
    with pytest.raises(ValueError, match="marginals"):
        sinkhorn_target(q, marginals="uniform")


def test_blended_marginals_follow_the_confidence():
    """'blended': hard sizes while Q is diffuse, the estimate once Q is sharp."""
    z, y = _planted(0)
    n = z.shape[0]
    for scale, lo, hi in ((1e-3, 0.0, 0.05), (1.0, 0.0, 1.0)):
        # scale shrinks the latent: a diffuse Q (confidence near 0) at 1e-3
        q = student_t_q(z * scale, MEANS * scale)
        c = float(((q.max(1).values.mean() - 1 / 3) / (2 / 3)).clamp(0, 1))
        assert lo <= c <= hi
        p = sinkhorn_target(q, n_iter=300, marginals="blended")
        hard = torch.bincount(q.argmax(1), minlength=3).to(q.dtype).clamp_min(1.0)
        est = _mixture_proportions(5.0 * torch.log(q), floor=1e-3 / 3)
        want = n * (c * est + (1 - c) * hard / hard.sum())
        torch.testing.assert_close(p.sum(0), want, rtol=1e-2, atol=1e-2)
