"""ResNet v1.5: sizes and names that match torchvision, v1.5 strides, Goyal et al.'s init."""

from __future__ import annotations

import math

import pytest
import torch

from fastres.model import ARCHS, Bottleneck, build_model, resnet18, resnet50

# torchvision.models.<arch>(num_classes=1000): parameter counts published with its weights.
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def torchvision_resnet50_keys() -> list[str]:
    """The state_dict keys of torchvision's resnet50, spelled out from its naming scheme."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{k}" for k in bn]
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            for i in (1, 2, 3):
                keys.append(f"{p}.conv{i}.weight")
                keys += [f"{p}.bn{i}.{k}" for k in bn]
            if b == 0:
                keys.append(f"{p}.downsample.0.weight")
                keys += [f"{p}.downsample.1.{k}" for k in bn]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_parameter_counts_match_torchvision(arch):
    model = build_model(arch, 1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[arch]


def test_resnet50_has_161_tensors_and_torchvision_keys():
    model = resnet50()
    assert len(list(model.parameters())) == 161
    sd = model.state_dict()
    assert list(sd.keys()) == torchvision_resnet50_keys()
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sd["fc.weight"].shape == (1000, 2048)


def torchvision_resnet50_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's resnet50 state_dict, from its definition (Bottleneck,
    expansion 4, stage widths 64/128/256/512, blocks 3/4/6/3, 7x7 stem, downsample in block 0)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        shapes.update(
            {
                f"{name}.weight": (c,),
                f"{name}.bias": (c,),
                f"{name}.running_mean": (c,),
                f"{name}.running_var": (c,),
                f"{name}.num_batches_tracked": (),
            }
        )

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, inplanes, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (width * 4, width, 1, 1)
            bn(f"{p}.bn3", width * 4)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (width * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", width * 4)
            inplanes = width * 4
    shapes["fc.weight"] = (num_classes, 2048)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def test_state_dict_keys_and_shapes_are_torchvisions():
    want = torchvision_resnet50_shapes(num_classes=7)
    assert list(want) == torchvision_resnet50_keys()  # the two write-downs agree
    model = resnet50(num_classes=7)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    # a torchvision-shaped state_dict of fresh values loads strictly, each tensor into the layer of that name
    gen = torch.Generator().manual_seed(5)
    sd = {k: (torch.tensor(3) if not s else torch.rand(s, generator=gen) + 0.5) for k, s in want.items()}
    model.load_state_dict(sd, strict=True)
    assert torch.equal(model.layer3[4].conv2.weight, sd["layer3.4.conv2.weight"])
    assert torch.equal(model.layer2[0].downsample[1].running_var, sd["layer2.0.downsample.1.running_var"])
    assert torch.equal(model.fc.bias, sd["fc.bias"])


def test_v1_5_stride_sits_in_the_3x3_conv():
    model = resnet50()
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)
        assert first.downsample[0].stride == (2, 2)
    assert model.layer1[0].conv2.stride == (1, 1)


def test_last_bn_gamma_of_every_block_is_zero_and_blocks_start_as_identity():
    model = resnet50()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert all(torch.all(b.bn1.weight == 1) and torch.all(b.bn2.weight == 1) for b in blocks)
    block = model.layer1[1]  # no downsample: output = relu(input) at init
    block.eval()
    x = torch.randn(2, 256, 8, 8)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_basic_block_zero_init_and_opt_out():
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for b in resnet18().modules() if hasattr(b, "last_bn"))
    plain = resnet50(zero_init_residual=False)
    assert all(torch.all(b.bn3.weight == 1) for b in plain.modules() if isinstance(b, Bottleneck))


def test_he_fan_out_init_and_classifier_init():
    torch.manual_seed(0)
    model = resnet50()
    w = model.layer3[0].conv2.weight  # 256 x 256 x 3 x 3
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.count_nonzero(model.fc.bias) == 0


def test_channels_last_gives_the_same_outputs_and_gradients():
    # float64: in fp32, train-mode BN over a 4-image batch amplifies rounding differences
    # between the two layouts' kernels past any useful tolerance deep in ResNet-50.
    torch.manual_seed(0)
    model = resnet50(num_classes=10).double()
    for m in model.modules():  # make the residual branches active so they are compared too
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    model_cl = resnet50(num_classes=10).double()
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)
    assert model_cl.layer3[0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
    out = model(x)
    out_cl = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out_cl, out, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    out_cl.square().sum().backward()
    grads_cl = dict(model_cl.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads_cl[name].grad, p.grad, rtol=1e-8, atol=1e-8, msg=name)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_output_shape_for_any_image_size(size):
    model = resnet50(num_classes=10).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_bad_names_and_sizes_are_errors():
    with pytest.raises(ValueError, match="unknown arch 'resnet51'"):
        build_model("resnet51", 10)
    with pytest.raises(ValueError, match="num_classes"):
        resnet50(num_classes=0)


# ------------------------------------------------------------------ recipes' BN pieces (fastres.model.bn)


def test_zero_init_of_the_last_gamma_is_switchable():
    on, off = build_model("resnet50", 10), build_model("resnet50", 10, zero_init_last_gamma=False)
    for model, want in ((on, 0.0), (off, 1.0)):
        last = [m.last_bn().weight for m in model.modules() if isinstance(m, Bottleneck)]
        assert len(last) == 16 and all(torch.all(g == want) for g in last)
    assert torch.all(off.layer1[0].bn1.weight == 1) and torch.all(on.layer1[0].bn1.weight == 1)


def _bn_stats_reference(model, batches):
    """float64: mean and population variance of the stem BN's input over all batches together."""
    x = torch.cat([model.conv1(b).double() for b in batches])
    return x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)


def test_bn_statistics_for_evaluation_pool_batches_and_ranks():
    from fastres.model.bn import recompute_bn_statistics

    torch.manual_seed(0)
    model = resnet18(num_classes=5)
    gen = torch.Generator().manual_seed(1)
    mine = [torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2)]
    other = [torch.randn(4, 3, 32, 32, generator=gen) * 2 + 1 for _ in range(3)]
    with torch.no_grad():
        want_mean, want_var = _bn_stats_reference(model, mine + other)
    # rank "other" first, recording what it would contribute; then this rank adds it: a SUM all-reduce
    sent = []
    recompute_bn_statistics(model, other, all_reduce=lambda t: sent.append(t.clone()))
    queue = iter(sent)
    model.eval()
    assert recompute_bn_statistics(model, mine, all_reduce=lambda t: t.add_(next(queue))) == 2
    assert not model.training  # mode restored
    torch.testing.assert_close(model.bn1.running_mean.double(), want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bn1.running_var.double(), want_var, rtol=1e-5, atol=1e-6)
    alone = resnet18(num_classes=5)
    alone.load_state_dict(model.state_dict())
    recompute_bn_statistics(alone, mine, all_reduce=lambda t: None)
    assert not torch.allclose(alone.bn1.running_mean, model.bn1.running_mean)  # the other rank's images count


def test_bn_rank_groups():
    from fastres.model.bn import bn_rank_groups

    assert bn_rank_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert bn_rank_groups(3, 1) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="bn_group: 3 must be >= 1 and divide the 8 processes"):
        bn_rank_groups(8, 3)


def _group_bn_worker() -> dict:
    import torch.distributed as dist

    from fastres.distributed import discover, init_distributed
    from fastres.model.bn import convert_bn_groups

    init_distributed(discover(), backend="gloo", timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    weight = model[0].weight
    model = convert_bn_groups(model, 2, world, rank)
    assert model[0].weight is weight  # the same Parameter: a flat layout built after still holds it
    x = (torch.randn(2 + rank, 3, 4, 4, generator=torch.Generator().manual_seed(rank)) * (1 + rank)).requires_grad_()
    y = model(x)
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
    return {"x": x.detach(), "y": y.detach(), "gx": x.grad, "gw": weight.grad, "rm": model[0].running_mean}


def test_bn_groups_compute_statistics_over_the_group_against_float64_bn():
    from multiproc import check_ok, run_ranks

    results = check_ok(run_ranks(_group_bn_worker, 2, timeout=120))
    xs = [r["x"].double().requires_grad_() for r in results]
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.0, -1.0, 3.0], dtype=torch.float64)
    x = torch.cat(xs)
    y = torch.nn.functional.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    ys = torch.split(y, [len(t) for t in xs])
    loss = sum((yy * torch.arange(yy.numel()).view_as(yy).double().sin()).sum() for yy in ys)
    loss.backward()
    for r, yy, xx in zip(results, ys, xs):
        torch.testing.assert_close(r["y"].double(), yy.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(r["gx"].double(), xx.grad, rtol=1e-4, atol=1e-5)
    # the gradient of gamma is per rank here (the reducer sums it); together they make the whole one
    torch.testing.assert_close(sum(r["gw"].double() for r in results), w.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0]["rm"], results[1]["rm"])  # same statistics on both ranks
    torch.testing.assert_close(results[0]["rm"].double(), 0.1 * x.detach().mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
