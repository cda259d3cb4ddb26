"""The adaptation space and its super network: the FNA layout and its count, derive / choices_of,
mixed ops, the MACs look-up table, single-path sampling, and DARTS (cost direction, exact resume)."""
import random

import pytest
import torch

from runhelpers import tiny_synth
from nasx.evaluate import count_detector_macs
from nasx.evaluate.macs_table import supernet_macs_table
from nasx.models.backbones.mbconv_supernet import MixedOp
from nasx.spaces.adaptation import FNA_SSDLITE, HEAD_OPS, NORMAL_OPS, REDUCE_OPS, AdaptationSpace
from nasx.spaces.detectors import build_from_spec


def test_fna_layout_and_size():
    space = AdaptationSpace()
    lists = space.op_lists()
    assert len(lists) == 21
    assert lists.count(HEAD_OPS) == 1 and lists.count(REDUCE_OPS) == 5 and lists.count(NORMAL_OPS) == 15
    assert space.size == 6 ** 5 * 3 * 7 ** 15
    assert lists[16] == HEAD_OPS                               # first layer of the stride-32 (160-channel) stage


def test_derive_and_choices_round_trip():
    space = AdaptationSpace()
    assert space.derive(space.choices_of(FNA_SSDLITE)) == FNA_SSDLITE
    assert space.derive(space.choices_of("mobilenet_v2")) == str(space.seed_encoding)
    rng = random.Random(0)
    for _ in range(20):
        choices = [rng.choice(ops) for ops in space.op_lists()]
        text = space.derive(choices)
        assert space.derive(space.choices_of(text)) == text
    with pytest.raises(ValueError, match="layer 17 chose 'k3_e3'"):
        space.derive([c if i != 16 else "k3_e3" for i, c in enumerate(space.choices_of(FNA_SSDLITE))])
    with pytest.raises(ValueError, match="21 op choices"):
        space.derive(["k3_e6"])
    with pytest.raises(ValueError, match="at least as many layers"):
        AdaptationSpace(layers=(1, 4, 4, 4, 4, 1))


def test_mixed_op_is_the_weighted_sum_of_its_candidates():
    torch.manual_seed(0)
    op = MixedOp(in_channels=8, out_channels=8, stride=1, ops=NORMAL_OPS).eval()
    x = torch.randn(2, 8, 12, 12)
    w = torch.softmax(torch.randn(len(NORMAL_OPS)), 0)
    with torch.no_grad():
        want = sum(wi * op.ops[n](x) for wi, n in zip(w, NORMAL_OPS))
        torch.testing.assert_close(op(x, weights=w), want)
        torch.testing.assert_close(op(x, index=2), op.ops[NORMAL_OPS[2]](x))
    tap = MixedOp(in_channels=8, out_channels=16, stride=2, ops=HEAD_OPS, tap=True).eval()
    w3 = torch.softmax(torch.randn(3), 0)
    with torch.no_grad():
        out, t = tap(x, weights=w3)
        torch.testing.assert_close(t, sum(wi * tap.ops[n].block[0](x) for wi, n in zip(w3, HEAD_OPS)))
        torch.testing.assert_close(out, sum(wi * tap.ops[n](x) for wi, n in zip(w3, HEAD_OPS)))
    with pytest.raises(ValueError, match="skip"):
        MixedOp(in_channels=8, out_channels=16, stride=2, ops=NORMAL_OPS)
    with pytest.raises(ValueError, match="one expansion"):
        MixedOp(in_channels=8, out_channels=16, stride=2, ops=REDUCE_OPS, tap=True)


@pytest.fixture(scope="module")
def small():
    space = AdaptationSpace(width=0.25)
    torch.manual_seed(0)
    detector = space.build_super_detector(num_classes=3)
    table, fixed = supernet_macs_table(detector, (64, 64))
    detector.backbone.set_macs_table(table, fixed)
    return space, detector


def test_macs_table_equals_the_derived_networks_count(small):
    space, detector = small
    supernet = detector.backbone
    rng = random.Random(1)
    for _ in range(3):
        choices = [rng.choice(ops) for ops in space.op_lists()]
        with torch.no_grad():
            for a, ops, c in zip(supernet.alphas, supernet.op_names(), choices):
                a.fill_(-50.0)
                a[ops.index(c)] = 50.0
        derived = build_from_spec(space.detector_spec(space.derive(choices), 3))
        assert float(supernet.expected_macs().detach()) == pytest.approx(count_detector_macs(derived, (64, 64)).total, rel=1e-9)


def test_single_path_runs_only_the_sampled_ops(small):
    space, detector = small
    supernet = detector.backbone
    path = supernet.sample_path(torch.Generator().manual_seed(0), uniform=True)
    detector.train()
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    detector.zero_grad(set_to_none=True)
    sum(detector(images, None, targets).values()).backward()
    for layer, i in zip(supernet.layers, path):
        for j, (name, op) in enumerate(layer.ops.items()):
            grads = [p.grad is not None for p in op.parameters()]
            assert all(grads) if j == i else not any(grads), (name, j, i)
    assert all(a.grad is None for a in supernet.alphas)
    with pytest.raises(ValueError, match="one op index per layer"):
        supernet.set_path([0])
    supernet.set_path(None)


def _tiny_loaders(root):
    from nasx.data import build_loader, coco_layout_dataset
    from nasx.data.transforms import detection_transforms

    ds = coco_layout_dataset(root, "train", transforms=detection_transforms(True, 64, 64))
    half = len(ds) // 2
    return ds.num_classes, [build_loader(torch.utils.data.Subset(ds, idx), 2, shuffle=True, seed=0, drop_last=True)
                            for idx in (range(half), range(half, len(ds)))]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_synth(tmp_path_factory, train=8, val=2)


def _search(space, root, state_path, steps=6, cost_lambda=0.2, loss=None):
    from nasx.search.darts import DartsConfig, DartsSearch
    from nasx.train.loop import move_batch

    num_classes, (w, a) = _tiny_loaders(root)
    torch.manual_seed(0)
    detector = space.build_super_detector(num_classes=num_classes)
    table, fixed = supernet_macs_table(detector, (64, 64))
    detector.backbone.set_macs_table(table, fixed)
    cfg = DartsConfig(steps=steps, warmup=2, arch_every=2, checkpoint_every=2, cost_lambda=cost_lambda, arch_lr=0.05,
                      min_arch_steps=1)
    loss = loss or (lambda batch: detector(*move_batch(batch, "cpu")))
    return DartsSearch(detector, detector.backbone, loss, weight_loader=w, arch_loader=a, config=cfg,
                       state_path=state_path)


def test_cost_term_alone_moves_alpha_to_cheaper_ops(tiny_data, tmp_path):
    space = AdaptationSpace(width=0.25)
    search = _search(space, tiny_data, tmp_path / "s.pt", loss=lambda batch: {"zero": torch.zeros(())})
    supernet = search.supernet
    before = float(supernet.expected_macs().detach())
    start = [w.detach().clone() for w in supernet.op_weights()]
    for _ in range(10):
        search.arch_step()
    assert float(supernet.expected_macs().detach()) < 0.95 * before
    table = supernet.macs_table
    for l, (w0, w1) in enumerate(zip(start, supernet.op_weights())):
        cheapest = int(table[l, :len(w1)].argmin())
        assert w1[cheapest] > w0[cheapest], l            # the cheapest op (skip where there is one) gained


def test_search_resumes_exactly(tiny_data, tmp_path):
    space = AdaptationSpace(width=0.25)
    straight = _search(space, tiny_data, tmp_path / "a.pt")
    out = straight.run(progress=False)
    assert out["weight_steps"] == 6 and out["arch_steps"] == 3 and out["stopped"] == "steps"  # after steps 2, 4, 6
    first = _search(space, tiny_data, tmp_path / "b.pt")
    stopped = first.run(progress=False, time_left=lambda: 1.0 if first.w_step < 3 else -1.0)
    assert stopped["stopped"] == "budget" and stopped["weight_steps"] == 3
    resumed = _search(space, tiny_data, tmp_path / "b.pt")
    assert resumed.w_step == 3 and resumed.w_stream.position == 3
    again = resumed.run(progress=False)
    assert again["weight_steps"] == 6 and again["arch_steps"] == 3
    for (n, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(b, a, msg=n)
    assert [h["weight_step"] for h in again["history"]] == [h["weight_step"] for h in out["history"]]
    changed = _search(space, tiny_data, tmp_path / "c.pt")
    changed.checkpoint()
    with pytest.raises(ValueError, match="other settings"):
        _search(space, tiny_data, tmp_path / "c.pt", cost_lambda=0.5)
