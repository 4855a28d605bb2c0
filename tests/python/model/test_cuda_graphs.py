"""CUDA graphs for the decode/draft/verify steps (csrc/model/graphed_forward.*) and the device-held
start position the kernels read during replays.

On CUDA: a replayed step gives the eager step's logits and cache rows at every position of a context
bucket and across buckets, for every plan and token count; generate() with graphs returns the same
tokens as without, and the captures are reused by later calls. The device-start semantics of the ops
are also checked on the CPU (there the value is read at once).

Replays are compared with eager steps to rounding, not bit for bit: on an H200 (torch 2.11, cuBLAS
13) a captured multi-row GEMM may run another cuBLAS kernel than the eager one (the workspace a
capture sees differs), and 4 of 8 configurations differed in the last bits from the first 5-token
step on, while every 1-token step was bit-identical. Our own kernels read the device-held position
with the same arithmetic, checked bit for bit above.
"""
from __future__ import annotations

import math

import pytest
import torch

import dotf
from dotf import _C

transformers = pytest.importorskip("transformers")
from test_cuda_model import draft_plan, hf_model, loaded, prompt_ids, rel_err  # noqa: E402

STEP_TOL = {torch.float32: 1e-5, torch.bfloat16: 3e-2}

ops = _C.testing.ops
HAS_CUDA = torch.cuda.is_available() and _C.build_info()["cuda"]
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and a CUDA build")


# ---- the ops' device_start (CPU: read at once; CUDA: read by the kernel) ------------------------
def devices():
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("start", [0, 5, 300, 700])
def test_attention_device_start_equals_host_start(device, start):
    # The launch is sized for the bound (many splits at 1000 keys); the kernel reads the real start.
    g = torch.Generator().manual_seed(start)
    T, H, KVH, D, cap = 3, 4, 2, 64, 1024
    q = torch.randn(T, H, D, generator=g).to(device)
    k = torch.randn(cap, KVH, D, generator=g).to(device)
    v = torch.randn(cap, KVH, D, generator=g).to(device)
    # Rows past start + T must not matter: poison them.
    k[start + T:] = float("nan")
    v[start + T:] = float("nan")
    scale = 1 / math.sqrt(D)
    want = ops.attention_with_cache(q, k, v, start, scale)
    bound = cap - T
    got = ops.attention_with_cache(q, k, v, bound, scale, torch.tensor([start], device=device))
    assert torch.isfinite(got).all()
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", devices())
def test_rope_device_start_equals_host_start(device):
    g = torch.Generator().manual_seed(1)
    T, H, KVH, D, cap, start = 4, 4, 2, 32, 64, 9
    qkv = torch.randn(T, (H + 2 * KVH) * D, generator=g).to(device)
    ang = torch.arange(cap).float()[:, None] * torch.rand(D // 2, generator=g)[None]
    cos, sin = ang.cos().to(device), ang.sin().to(device)
    caches = [(torch.zeros(cap, KVH, D, device=device), torch.zeros(cap, KVH, D, device=device)) for _ in range(2)]
    q_host = ops.rope_qkv_to_cache(qkv, cos, sin, start, H, KVH, *caches[0])
    q_dev = ops.rope_qkv_to_cache(qkv, cos, sin, cap - T, H, KVH, *caches[1],
                                  device_start=torch.tensor([start], device=device))
    assert torch.equal(q_host, q_dev)
    assert torch.equal(caches[0][0], caches[1][0]) and torch.equal(caches[0][1], caches[1][1])
    assert caches[1][0][start:start + T].abs().sum() > 0


@pytest.mark.parametrize("device", devices())
def test_device_start_bad_input(device):
    q = torch.randn(1, 2, 16, device=device)
    k = torch.randn(8, 2, 16, device=device)
    with pytest.raises(TypeError, match="device_start"):
        ops.attention_with_cache(q, k, k.clone(), 4, 0.25, torch.tensor([1.0], device=device))
    with pytest.raises(TypeError, match="device_start"):
        ops.attention_with_cache(q, k, k.clone(), 4, 0.25, torch.tensor([1, 2], device=device))
    if device == "cpu":  # the CPU reads the value, so it can say when it exceeds the bound
        with pytest.raises(ValueError, match="device_start"):
            ops.attention_with_cache(q, k, k.clone(), 4, 0.25, torch.tensor([5]))
    else:
        with pytest.raises(ValueError, match="device_start must be on"):
            ops.attention_with_cache(q, k, k.clone(), 4, 0.25, torch.tensor([1]))


def test_graphed_forward_on_cpu_runs_eagerly():
    m = loaded("llama-gqa", "cpu")
    gf = _C.testing.GraphedForward(m._impl)
    cache, twin = m.new_cache(32), m.new_cache(32)
    ids = prompt_ids("llama-gqa", 6)
    full = [True] * m.num_layers
    a, _, _ = gf.forward(ids, 0, cache, full, full, False, "last")
    b, _, _ = m.forward(ids, 0, twin, logits="last")
    assert torch.equal(a, b) and cache.length == 6
    assert gf.stats["replays"] == 0 and gf.stats["eager"] == 1 and gf.stats["disabled_reason"]
    assert m.generate(ids, 4).stats["graph_replays"] == 0


# ---- CUDA: replays equal eager steps -----------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama-gqa", "qwen2-bias", "llama-d128", "qwen2-d128"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@needs_cuda
def test_replayed_steps_equal_eager_steps(arch, dtype):
    m = loaded(arch, "cuda", dtype)
    L = m.num_layers
    full, half = [True] * L, draft_plan(L)
    # Small buckets so that the walk below crosses several of them (and the capacity clip).
    gf = _C.testing.GraphedForward(m._impl, min_bucket=16)
    cap = min(200, m.max_seq_len)
    cache, twin = m.new_cache(cap), m.new_cache(cap)
    ids = prompt_ids(arch, cap, seed=2)
    P = 20
    a, _, _ = gf.forward(ids[:P], 0, cache, full, full, True, "last")  # a prefill-sized T: eager
    b, _, _ = m.forward(ids[:P], 0, twin, logits="last")
    assert torch.equal(a, b)
    tol = STEP_TOL[dtype]
    pos = P
    steps = [(1, full, "last", False), (1, half, "last", False), (5, full, "all", False), (3, half, "all", False),
             (9, full, "all", True), (1, full, "last", False)]
    i = 0
    while pos + 9 < cap:
        T, plan, rows, sim = steps[i % len(steps)]
        i += 1
        toks = ids[pos:pos + T]
        ga, gs, gl = gf.forward(toks, pos, cache, plan, full, sim, rows)
        ea, es, el = m.forward(toks, pos, twin, attention=plan, similarity=sim, logits=rows)
        assert ga.shape == ea.shape and rel_err(ga, ea) <= tol, f"logits differ at step {i} (T={T}, pos={pos})"
        if sim:
            assert torch.equal(gs.isnan(), es.isnan())  # the same sublayers measured
            assert (gs.nan_to_num(0) - es.nan_to_num(0)).abs().max() <= 10 * tol
        assert cache.length == twin.length == pos + T
        # Roll back as the decoder does. After a full-model step (a verify), keep 1..T rows, as after a
        # partial acceptance. After a draft step keep none: the layers whose attention it skipped wrote
        # no cache rows there, and the decoder's next pass (the verify) rewrites those positions with the
        # full model; a step past them would read rows never written (uninitialised memory).
        keep = 1 + (i % T) if plan is full else 0
        pos += keep
        cache.truncate(pos)
        twin.truncate(pos)
    for layer in range(L):
        assert rel_err(cache.keys(layer)[:pos], twin.keys(layer)[:pos]) <= tol
        assert rel_err(cache.values(layer)[:pos], twin.values(layer)[:pos]) <= tol
    st = gf.stats
    assert st["disabled_reason"] == "", st
    assert st["replays"] >= i and st["captures"] >= 6, st
    # Steps of one kind at later positions of a bucket reuse its graph.
    assert st["captures"] < st["replays"], st


@needs_cuda
def test_graphs_follow_a_new_cache():
    m = loaded("llama-gqa", "cuda")
    gf = _C.testing.GraphedForward(m._impl)
    full = [True] * m.num_layers
    ids = prompt_ids("llama-gqa", 12)
    outs = []
    for _ in range(2):  # a second cache: graphs captured on the first must not write into it
        cache = m.new_cache(32)
        m.forward(ids[:10], 0, cache, logits="none")
        logits, _, _ = gf.forward(ids[10:11], 10, cache, full, full, False, "last")
        outs.append((logits.clone(), cache.keys(0)[10].clone()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert gf.stats["captures"] == 2


@needs_cuda
@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_generate_with_graphs_is_lossless_and_reuses_captures(strategy):
    arch = "llama-d128"
    m = dotf.load(hf_model(arch), device="cuda")  # its own Engine: fresh graphs
    prompt = prompt_ids(arch, 40, seed=4)
    kw = {"draft_attention": draft_plan(m.num_layers)} if strategy == "asd" else {}
    eager = m.generate(prompt, 48, strategy=strategy, cuda_graphs=False, **kw)
    assert eager.stats["graph_replays"] == 0 and eager.stats["graphs_note"] == "cuda_graphs=False"
    first = m.generate(prompt, 48, strategy=strategy, **kw)
    assert first.tokens == eager.tokens, "tokens differ with CUDA graphs"
    assert first.stats["graph_replays"] > 0 and first.stats["graphs_note"] == "", first.stats
    second = m.generate(prompt, 48, strategy=strategy, **kw)
    assert second.tokens == eager.tokens
    assert second.stats["graph_captures"] < max(first.stats["graph_captures"], 1), (first.stats, second.stats)
    totals = m.graph_stats()
    assert totals["replays"] == first.stats["graph_replays"] + second.stats["graph_replays"]
    m.release_graphs()
    third = m.generate(prompt, 48, strategy=strategy, **kw)
    assert third.tokens == eager.tokens and third.stats["graph_captures"] > 0


@needs_cuda
def test_concurrent_calls_share_no_graphs():
    import threading

    arch = "llama-gqa"
    m = dotf.load(hf_model(arch), device="cuda")
    prompt = prompt_ids(arch, 16, seed=6)
    want = m.generate(prompt, 32, cuda_graphs=False).tokens
    results, errors = [], []

    def run():
        try:
            results.append(m.generate(prompt, 32, strategy="asd"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(r.tokens == want for r in results)
