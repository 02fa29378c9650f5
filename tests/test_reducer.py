"""Tests of fastres.distributed.reducer: real processes on Gloo, checked against float64 means and DDP.

Each multi-process test starts its ranks once (tests/multiproc.py, torchrun's variables) and runs
several cases there; the ranks report numbers (errors against a reference computed with
torch.distributed in float64, collective counts, checksums) and the assertions are made here.
"""

from __future__ import annotations

import copy
import hashlib
import time
import warnings

import pytest
import torch
from torch import nn

from fastres.distributed.reducer import CollectiveError, Reducer, bucket_layout, plan_buckets
from fastres.kernels.flat import ALIGN, FlatParams

from multiproc import RankError, check_ok, run_ranks

# Segment sizes: uneven, odd, none a multiple of 4 or 8, one far above the bucket cap.
SIZES = [1, 17, 1000, 4097, 3, 250_001, 16, 5, 70_003, 9, 33, 2049, 3001, 777, 12_345, 6, 8191]
SMALL_CAPS = dict(first_bucket_mb=0.002, bucket_cap_mb=0.02)  # ~520 then ~5.2K elements: 6 buckets
TOL = {"fp32": 2e-6, "bf16": 1.6e-2, "fp16": 2e-3}  # |err| / mean |contribution| (~4 eps of the wire dtype)


def make_reducer(model: nn.Module, groups=None, **kw) -> Reducer:
    """The trainer's order: the model's one layout (bucket-padded), then the Reducer on it."""
    layout_kw = {k: kw[k] for k in ("algorithm", "bucket_cap_mb", "first_bucket_mb") if k in kw}
    return Reducer(bucket_layout(model, groups, **layout_kw), groups, **kw)


# ----------------------------------------------------------------------------- single process


def test_plan_buckets_backward_order_and_caps():
    sizes = [10, 20, 30, 40, 500, 5, 5]
    b = plan_buckets(sizes, first_cap=8, cap=60)
    assert b == [(5, 7), (4, 5), (2, 4), (0, 2)]  # last segments first; the big one is a bucket of its own
    covered = sorted(s for a, e in b for s in range(a, e))
    assert covered == list(range(len(sizes)))
    assert plan_buckets([5], 100, 100) == [(0, 1)]
    assert plan_buckets([], 1, 1) == []
    with pytest.raises(ValueError, match="cap"):
        plan_buckets([1], 0, 1)


def test_single_process_is_a_no_op_that_keeps_views():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    r = make_reducer(model)
    assert not r.enabled and all(
        p.data_ptr() in range(r.layout.params.data_ptr(), r.layout.params.data_ptr() + 4 * r.layout.numel)
        for p in model.parameters()
    )
    x = torch.randn(5, 4)
    model(x).square().sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    r.wait()
    for p, w in zip(model.parameters(), want):
        assert torch.equal(p.grad, w)
        assert p.grad.data_ptr() in range(r.layout.grads.data_ptr(), r.layout.grads.data_ptr() + 4 * r.layout.numel)
    assert r.collectives == 0


def test_bad_arguments_name_them():
    layout = FlatParams(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="algorithm"):
        Reducer(layout, algorithm="ring")
    with pytest.raises(ValueError, match="algorithm"):
        bucket_layout(nn.Linear(2, 2), algorithm="ring")
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        Reducer(layout, bucket_cap_mb=0)
    with pytest.raises(ValueError, match="wire_dtype"):
        Reducer(layout, wire_dtype="int8")
    with pytest.raises(TypeError, match="FlatParams"):
        Reducer(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- rank-side code


def _groups(timeout: float = 60.0):
    from fastres.distributed import discover, init_distributed

    return init_distributed(discover(), backend="gloo", timeout=timeout)


def _grads_of(rank: int, step: int = 0) -> list[torch.Tensor]:
    """Rank `rank`'s synthetic gradients: normals of magnitudes 1e-2 .. 1e2 per segment."""
    g = torch.Generator().manual_seed(7919 * step + rank)
    return [torch.randn(n, generator=g) * 10.0 ** ((i % 5) - 2) for i, n in enumerate(SIZES)]


def _backward_with(params, grads) -> None:
    """A backward pass whose gradient for params[i] is grads[i] (hooks fire as in training)."""
    sum((p * g).sum() for p, g in zip(params, grads)).backward()


def _errors(got: list[torch.Tensor], contributions: list[list[torch.Tensor]]) -> float:
    """max |got - float64 mean| / mean |contribution| over all elements (a bound that cancellation cannot fool)."""
    worst = 0.0
    for i, g in enumerate(got):
        stack = torch.stack([c[i].double() for c in contributions])
        ref, scale = stack.mean(0), stack.abs().mean(0).clamp_min(1e-30)
        worst = max(worst, float(((g.double() - ref).abs() / scale).max()))
    return worst


def _digest(ts) -> str:
    h = hashlib.sha1()
    for t in ts:
        h.update(t.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _as_on_nccl(r: Reducer) -> None:
    """Run the NCCL code path on Gloo: collectives issued from the hook (stream-ordered), and the node
    phases as reduce_scatter / all_gather into a shard buffer. There is no GPU here, so this is
    how that path's logic (stages, shard offsets, order) gets tested; Gloo waits where NCCL would
    only order streams."""
    from fastres.distributed import reducer as reducer_mod

    r._sending.close()
    r._sending = reducer_mod._StreamOrdered(r)
    for b in r.buckets:
        b.stages = r._sending.stages(b)


def _synthetic_cases(groups, combos) -> dict:
    """Reduce each rank's synthetic gradients for each (algorithm, wire); error against the float64 mean."""
    t = groups.topology
    everyone = [_grads_of(r) for r in range(t.world_size)]
    out = {}
    for algorithm, wire in combos:
        params = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in SIZES)
        r = make_reducer(params, groups, algorithm=algorithm.split("+")[0], wire_dtype=wire, **SMALL_CAPS)
        if algorithm == "hierarchical+nccl-path":
            _as_on_nccl(r)
        _backward_with(list(params), everyone[t.rank])
        r.wait()
        got = [p.grad for p in params]
        off = r.layout.offsets.tolist()
        out[(algorithm, wire)] = {
            "err": _errors(got, everyone),
            "algorithm": r.algorithm,
            "buckets": len(r.buckets),
            "collectives": r.collectives,
            "sent_in_backward": r.sent_during_backward,
            "digest": _digest(got),
            "views": all(p.grad.data_ptr() == r.layout.grads[a:].data_ptr() for p, a in zip(params, off)),
            "staged": sum(b.wire is not None for b in r.buckets),
            "padded": all((b.grad.numel() % (t.local_world_size * ALIGN)) == 0 for b in r.buckets),
        }
        r.remove()
    return out


def _nan_case(groups, algorithm: str, wire: str) -> dict:
    """Rank 1 has a NaN and the last rank an Inf in one element each: every rank must see both."""
    t = groups.topology
    params = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in SIZES)
    r = make_reducer(params, groups, algorithm=algorithm, wire_dtype=wire, **SMALL_CAPS)
    grads = _grads_of(t.rank)
    if t.rank == 1:
        grads[5][12345] = float("nan")
    if t.rank == t.world_size - 1:
        grads[2][7] = float("inf")
    _backward_with(list(params), grads)
    r.wait()
    g = [p.grad for p in params]
    finite_elsewhere = sum(int((~torch.isfinite(x)).sum()) for x in g) == 2
    r.remove()
    return {
        "nan": bool(torch.isnan(g[5][12345])),
        "inf": bool(torch.isinf(g[2][7]) and g[2][7] > 0),
        "only_those": finite_elsewhere,
    }


def _model_case(groups) -> dict:
    """ResNet-18 gradients: fastres flat and hierarchical vs DDP vs the float64 mean of local gradients."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from fastres.model import build_model

    t = groups.topology
    torch.manual_seed(0)
    base = build_model("resnet18", 10)
    gen = torch.Generator().manual_seed(100 + t.rank)
    x, y = torch.randn(2, 3, 32, 32, generator=gen), torch.randint(0, 10, (2,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    local = copy.deepcopy(base)
    loss_fn(local(x), y).backward()
    ref = [p.grad.double() for p in local.parameters()]
    for g in ref:  # the reference: torch.distributed's own all_reduce in float64
        dist.all_reduce(g, group=groups.world)
        g /= t.world_size

    ddp = DDP(copy.deepcopy(base), process_group=groups.world)
    loss_fn(ddp(x), y).backward()
    results = {"ddp": [p.grad.clone() for p in ddp.module.parameters()]}
    for algorithm in ("flat", "hierarchical"):
        m = copy.deepcopy(base)
        r = make_reducer(m, groups, algorithm=algorithm, first_bucket_mb=0.05, bucket_cap_mb=2)
        loss_fn(m(x), y).backward()
        r.wait()
        results[algorithm] = [p.grad.clone() for p in m.parameters()]
        results[algorithm + "_buckets"] = len(r.buckets)
        r.remove()

    def rel(a, b):
        return max(
            float((u.double() - v.double()).abs().max() / v.double().abs().max().clamp_min(1e-12)) for u, v in zip(a, b)
        )

    return {
        "flat_vs_f64": rel(results["flat"], ref),
        "hier_vs_f64": rel(results["hierarchical"], ref),
        "ddp_vs_f64": rel(results["ddp"], ref),
        "flat_vs_ddp": rel(results["flat"], results["ddp"]),
        "hier_vs_ddp": rel(results["hierarchical"], results["ddp"]),
        "hier_vs_flat": rel(results["hierarchical"], results["flat"]),
        "buckets": results["hierarchical_buckets"],
    }


def _accumulate_and_unused_case(groups) -> dict:
    t = groups.topology
    out = {}
    # no_sync micro-step, then a synced one: the mean over ranks of the summed micro-gradients
    params = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in SIZES)
    r = make_reducer(params, groups, **SMALL_CAPS)
    g1, g2 = _grads_of(t.rank, step=1), _grads_of(t.rank, step=2)
    with r.no_sync():
        _backward_with(list(params), g1)
    out["collectives_in_no_sync"] = r.collectives
    _backward_with(list(params), g2)
    r.wait()
    sums = [[a + b for a, b in zip(_grads_of(q, 1), _grads_of(q, 2))] for q in range(t.world_size)]
    out["accumulate_err"] = _errors([p.grad for p in params], sums)
    # a second backward before wait() is an error that says what to do
    _backward_with(list(params), g1)
    try:
        _backward_with(list(params), g1)
        out["double"] = "no error"
    except RuntimeError as e:
        out["double"] = str(e)
    r.remove()

    # unused parameters: even ranks never use the second layer
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(8, 8), "b": nn.Linear(8, 8)})
    r = make_reducer(model, groups, first_bucket_mb=1e-4, bucket_cap_mb=1e-4)
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(t.rank))
    h = model["a"](x)
    if t.rank % 2:
        h = model["b"](h)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h.square().sum().backward()
        r.wait()
    out["unused_warned"] = [str(w.message) for w in caught]
    out["unused_grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}
    out["x"] = x
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    r.remove()
    return out


def worker_hierarchy(combos, model: bool) -> dict:
    groups = _groups()
    out = {"topology": groups.topology, "synthetic": _synthetic_cases(groups, combos)}
    out["nan"] = {
        c: _nan_case(groups, *c) for c in (("flat", "fp32"), ("hierarchical", "fp32"), ("hierarchical", "bf16"))
    }
    if model:
        out["model"] = _model_case(groups)
        out["accumulate"] = _accumulate_and_unused_case(groups)
    return out


def worker_timeout(missing: int, timeout: float) -> dict:
    groups = _groups(timeout=timeout)
    t = groups.topology
    if t.rank == missing:  # joined the job, never reaches the step
        time.sleep(3 * timeout)
        return {"slept": True}
    params = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in SIZES)
    r = make_reducer(params, groups, algorithm="hierarchical", **SMALL_CAPS)
    _backward_with(list(params), _grads_of(t.rank))
    t0 = time.monotonic()
    try:
        r.wait()
    except CollectiveError as e:
        return {"error": str(e), "seconds": time.monotonic() - t0}
    return {"error": None, "seconds": time.monotonic() - t0}


# ----------------------------------------------------------------------------- multi-process tests

ALL_COMBOS = [(a, w) for a in ("flat", "hierarchical") for w in ("fp32", "bf16", "fp16")]
NCCL_PATH = [("hierarchical+nccl-path", "fp32"), ("hierarchical+nccl-path", "bf16")]


def _check_synthetic(results, combos, hierarchical: bool):
    for c in combos:
        per_rank = [res["synthetic"][c] for res in results]
        first = per_rank[0]
        assert first["err"] <= TOL[c[1]], (c, [p["err"] for p in per_rank])
        assert all(p["err"] <= TOL[c[1]] for p in per_rank), c
        assert len({p["digest"] for p in per_rank}) == 1, f"{c}: ranks disagree"
        assert all(p["views"] for p in per_rank), f"{c}: .grad are no longer views of the flat buffer"
        want_alg = "hierarchical" if (c[0].startswith("hierarchical") and hierarchical) else "flat"
        assert first["algorithm"] == want_alg, c
        L = results[0]["topology"].local_world_size
        per_bucket = 2 * L + 1 if want_alg == "hierarchical" else 1  # Gloo: L reduces, 1 all_reduce, L broadcasts
        if c[0] == "hierarchical+nccl-path":
            per_bucket = 3  # reduce_scatter, all_reduce, all_gather
        assert first["collectives"] == per_bucket * first["buckets"], c
        assert first["buckets"] >= 5, first  # the small caps make several, of uneven sizes
        assert first["sent_in_backward"] == first["buckets"], "buckets were not sent during backward"
        if c[1] == "fp32":
            assert first["staged"] == 0, f"{c}: fp32 buckets should be reduced in place"
            assert first["padded"] or want_alg == "flat"


@pytest.mark.timeout(300)
def test_world4_two_virtual_nodes_against_float64_and_ddp():
    combos = ALL_COMBOS + NCCL_PATH
    results = check_ok(
        run_ranks(worker_hierarchy, 4, args=(combos, True), env={"FASTRES_VIRTUAL_NODES": "2"}, timeout=240)
    )
    topo = results[0]["topology"]
    assert (topo.num_nodes, topo.local_world_size) == (2, 2)
    _check_synthetic(results, combos, hierarchical=True)
    for res in results:
        for c, n in res["nan"].items():
            assert n == {"nan": True, "inf": True, "only_those": True}, (c, n)
        m = res["model"]
        assert m["buckets"] >= 3
        for key in ("flat_vs_f64", "hier_vs_f64", "ddp_vs_f64", "flat_vs_ddp", "hier_vs_ddp", "hier_vs_flat"):
            assert m[key] < 1e-5, (key, m)
        a = res["accumulate"]
        assert a["collectives_in_no_sync"] == 0
        assert a["accumulate_err"] <= TOL["fp32"]
        assert "no_sync" in a["double"]

    # unused parameters: b's gradient is the mean over ranks with zeros from the even ranks
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(8, 8), "b": nn.Linear(8, 8)})
    per_rank = []
    for q, res in enumerate(results):
        m = copy.deepcopy(model).double()
        m.load_state_dict({k: v.double() for k, v in res["accumulate"]["state"].items()})
        h = m["a"](res["accumulate"]["x"].double())
        if q % 2:
            h = m["b"](h)
        h.square().sum().backward()
        per_rank.append({n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in m.named_parameters()})
    for name in per_rank[0]:
        want = sum(g[name] for g in per_rank) / len(per_rank)
        for res in results:
            torch.testing.assert_close(res["accumulate"]["unused_grads"][name].double(), want, rtol=1e-5, atol=1e-6)
    assert any("b.weight" in w and "no gradient" in w for w in results[0]["accumulate"]["unused_warned"])


@pytest.mark.timeout(300)
def test_world8_two_virtual_nodes():
    combos = [("hierarchical", "fp32"), ("hierarchical", "bf16"), ("flat", "fp32"), ("hierarchical+nccl-path", "fp32")]
    results = check_ok(
        run_ranks(worker_hierarchy, 8, args=(combos, False), env={"FASTRES_VIRTUAL_NODES": "2"}, timeout=240)
    )
    topo = results[5]["topology"]
    assert (topo.num_nodes, topo.local_world_size, topo.node_rank, topo.local_rank) == (2, 4, 1, 1)
    _check_synthetic(results, combos, hierarchical=True)
    for res in results:
        for c, n in res["nan"].items():
            assert n == {"nan": True, "inf": True, "only_those": True}, (c, n)


@pytest.mark.timeout(200)
def test_one_node_hierarchical_is_flat():
    combos = [("hierarchical", "fp32"), ("auto", "fp16")]
    results = check_ok(run_ranks(worker_hierarchy, 4, args=(combos, False), timeout=150))
    assert results[0]["topology"].num_nodes == 1
    _check_synthetic(results, combos, hierarchical=False)  # one all_reduce per bucket, nothing more


@pytest.mark.timeout(200)
def test_a_rank_that_never_comes_fails_the_others_in_time():
    timeout = 5.0
    results = run_ranks(worker_timeout, 4, args=(3, timeout), env={"FASTRES_VIRTUAL_NODES": "2"}, timeout=120)
    assert not any(isinstance(r, RankError) for r in results), [r for r in results if isinstance(r, RankError)]
    for res in results[:3]:
        assert isinstance(res, dict) and res["error"] is not None, res
        assert res["seconds"] < timeout + 20, res
        assert any(k in res["error"] for k in ("reduce (intra-node", "all_reduce (inter-node)", "broadcast (intra")), (
            res
        )
        assert "bucket" in res["error"] and "ranks" in res["error"], res
