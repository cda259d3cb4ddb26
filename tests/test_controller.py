"""LSTM controller and PPO: masking, log-probabilities, learning a toy reward, resume."""
import copy
import io

import pytest
import torch

from nasx.search import PPO, LSTMController
from nasx.spaces.nas_fcos import NasFcosSpace

torch.set_num_threads(1)


def test_masked_choices_are_never_sampled():
    space = NasFcosSpace()
    ctrl = LSTMController(space.decision_sizes, valid_counts=space.valid_counts, hidden=32, tanh_constant=2.5)
    with torch.no_grad():                      # push every head towards its masked (invalid) outputs
        for head, valid in zip(ctrl.heads, space.valid_counts):
            head.bias[valid:] = 50.0
    choices, log_prob, entropy = ctrl.sample(256, generator=torch.Generator().manual_seed(0))
    assert choices.shape == (256, len(space)) and choices.dtype == torch.long
    limits = torch.tensor(space.valid_counts)
    assert ((choices >= 0) & (choices < limits)).all()
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all() and (entropy > 0).all()
    # every sequence decodes to a valid architecture
    for row in choices[:20]:
        space.from_indices(row.tolist())
    # the first FPN id has 3 valid choices out of 9: all three show up
    assert set(choices[:, 0].tolist()) == {0, 1, 2}


def test_evaluate_matches_sample():
    ctrl = LSTMController([3, 9, 5, 2], valid_counts=[3, 4, 5, 2], hidden=16, temperature=1.5, tanh_constant=2.0)
    choices, log_prob, entropy = ctrl.sample(64, generator=torch.Generator().manual_seed(1))
    lp, ent = ctrl.evaluate(choices)
    torch.testing.assert_close(lp, log_prob)
    torch.testing.assert_close(ent, entropy)
    assert lp.requires_grad and not log_prob.requires_grad
    # log-probabilities are those of a proper distribution: over all sequences they sum to 1
    grid = torch.cartesian_prod(*(torch.arange(v) for v in ctrl.valid_counts))
    all_lp, _ = ctrl.evaluate(grid)
    torch.testing.assert_close(all_lp.exp().sum(), torch.tensor(1.0), rtol=1e-5, atol=1e-5)


def test_single_decision_matches_a_masked_softmax():
    ctrl = LSTMController([6], valid_counts=[4], hidden=8, temperature=2.0, tanh_constant=1.5)
    h, _ = ctrl.cell(ctrl.start)
    logits = 1.5 * torch.tanh(ctrl.heads[0](h)[0, :4] / 2.0)
    probs = torch.softmax(logits, dim=0)
    lp, ent = ctrl.evaluate(torch.arange(4)[:, None])
    torch.testing.assert_close(lp.exp(), probs)
    torch.testing.assert_close(ent, (-(probs * probs.log()).sum()).expand(4))


def test_greedy_picks_the_most_probable_choice():
    ctrl = LSTMController([4, 6], valid_counts=[4, 2], hidden=8)
    with torch.no_grad():
        ctrl.heads[0].bias[:] = torch.tensor([0.0, 0.0, 9.0, 0.0])
        ctrl.heads[1].bias[:] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 9.0])   # index 5 is masked
    g = ctrl.greedy()
    assert g.shape == (2,) and g[0] == 2 and g[1] in (0, 1)


def test_evaluate_rejects_bad_choices():
    ctrl = LSTMController([3, 9], valid_counts=[3, 4], hidden=8)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        ctrl.evaluate(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"decision 1: choice 5 is not valid \(expected 0..3\)"):
        ctrl.evaluate(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="valid_counts must be in 1..decision_size"):
        LSTMController([3, 4], valid_counts=[3, 5])


def toy_reward(choices):
    return (choices[:, 0] == 2).float()


def test_ppo_learns_a_rewarded_choice():
    torch.manual_seed(0)
    ctrl = LSTMController([5, 4, 3], hidden=16)
    ppo = PPO(ctrl, lr=0.01, epochs=4, entropy_coef=1e-3, baseline_decay=0.9)
    gen = torch.Generator().manual_seed(0)

    def p_choice2():
        grid = torch.cartesian_prod(torch.arange(5), torch.arange(4), torch.arange(3))
        with torch.no_grad():
            lp, _ = ctrl.evaluate(grid)
        return float(lp.exp()[grid[:, 0] == 2].sum())

    start = p_choice2()
    assert 0.05 < start < 0.4
    for _ in range(20):
        choices, log_prob, _ = ctrl.sample(16, generator=gen)
        stats = ppo.update(choices, log_prob, toy_reward(choices))
    assert p_choice2() > 0.8
    assert {"loss", "baseline", "advantage_mean", "entropy", "clip_fraction"} <= set(stats)
    assert 0.5 < stats["baseline"] <= 1.0
    # the sampled policy agrees
    assert (ctrl.sample(200, generator=gen)[0][:, 0] == 2).float().mean() > 0.8


def test_ppo_update_checks_its_inputs():
    ppo = PPO(LSTMController([3, 3], hidden=8))
    choices, lp, _ = ppo.controller.sample(4)
    with pytest.raises(ValueError, match="4 choices, 4 old log-probs and 3 rewards"):
        ppo.update(choices, lp, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="rewards must be finite"):
        ppo.update(choices, lp, [1.0, float("nan"), 0.0, 0.0])
    assert ppo.baseline is None and ppo.updates == 0        # a rejected update changes nothing


def test_state_dict_round_trip_resumes_identically():
    torch.manual_seed(0)
    a = PPO(LSTMController([4, 3, 5], valid_counts=[4, 2, 5], hidden=8), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        c, lp, _ = a.controller.sample(8, generator=gen)
        a.update(c, lp, toy_reward(c))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = PPO(LSTMController([4, 3, 5], valid_counts=[4, 2, 5], hidden=8), lr=0.01)
    b.load_state_dict(torch.load(buf))
    assert b.baseline == a.baseline and b.updates == 3
    # the same next update gives the same controller
    c, lp, _ = a.controller.sample(8, generator=torch.Generator().manual_seed(5))
    a.update(c, lp, toy_reward(c))
    b.update(c, lp, toy_reward(c))
    for (name, pa), pb in zip(a.controller.state_dict().items(), b.controller.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)
    with pytest.raises(ValueError, match="expected a dict with keys"):
        b.load_state_dict({"controller": copy.deepcopy(b.controller.state_dict())})
