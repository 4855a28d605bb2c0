"""Layer-plan semantics (a skipped sublayer is removed) and the fused cosine similarities."""
import pytest
import torch
from torch import nn

import dotf
from conftest import make_tiny_hf


class _ZeroAttention(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states), None


class _ZeroMLP(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("skip_attention,skip_mlp", [([1], []), ([], [2]), ([1, 3], [0, 2]), ([0, 1, 2, 3], [])])
def test_skipping_equals_removing(tiny_arch, skip_attention, skip_mlp):
    hf = make_tiny_hf(tiny_arch, dtype=torch.float64)
    m = dotf.load(hf, dtype=torch.float64)
    ids = list(range(5, 30))
    cache = m.new_cache(len(ids))
    attention = [i not in skip_attention for i in range(4)]
    mlp = [i not in skip_mlp for i in range(4)]
    ours, _, _ = m.forward(ids, 0, cache, attention, mlp)
    with torch.no_grad():
        unmodified = hf(torch.tensor([ids])).logits[0]
    for i in skip_attention:
        hf.model.layers[i].self_attn = _ZeroAttention()
    for i in skip_mlp:
        hf.model.layers[i].mlp = _ZeroMLP()
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    # transformers normalises in float32 even for float64 models, hence ~1e-7 differences; the
    # unmodified model is orders of magnitude further away, so the check is sharp.
    scale = ref.abs().max()
    assert (ours - ref).abs().max() <= 1e-5 * scale
    assert (unmodified - ref).abs().max() > 1e-2 * scale


def _reference_similarities(hf, ids):
    """Per layer, cos(h, h + attn) and cos(h', h' + mlp) averaged over positions, from hooks."""
    sims, captured = [], {}

    def layer_pre(module, args, kwargs):
        captured["h"] = (args[0] if args else kwargs["hidden_states"])[0].double()

    def attn_post(module, args, kwargs, out):
        h = captured["h"]
        mid = h + out[0][0].double()
        captured["mid"] = mid
        captured["attn"] = torch.cosine_similarity(h, mid, dim=-1)

    def mlp_post(module, args, out):
        mid = captured["mid"]
        sims.append((captured["attn"], torch.cosine_similarity(mid, mid + out[0].double(), dim=-1)))

    handles = []
    for layer in hf.model.layers:
        handles.append(layer.register_forward_pre_hook(layer_pre, with_kwargs=True))
        handles.append(layer.self_attn.register_forward_hook(attn_post, with_kwargs=True))
        handles.append(layer.mlp.register_forward_hook(mlp_post))
    with torch.no_grad():
        hf(torch.tensor([ids]))
    for h in handles:
        h.remove()
    mean = torch.tensor([[a.mean().item(), m.mean().item()] for a, m in sims])
    last = torch.tensor([[a[-1].item(), m[-1].item()] for a, m in sims])
    return mean, last


def test_similarities_match_recomputation_from_transformers(tiny_arch):
    hf = make_tiny_hf(tiny_arch)
    m = dotf.load(hf)
    ids = list(range(7, 40))
    _, mean, last = m.forward(ids, 0, m.new_cache(len(ids)), similarity=True, logits="none")
    ref_mean, ref_last = _reference_similarities(hf, ids)
    torch.testing.assert_close(mean.double(), ref_mean.double(), rtol=0, atol=2e-5)
    torch.testing.assert_close(last.double(), ref_last.double(), rtol=0, atol=2e-5)


def test_skipped_sublayer_reports_nan_similarity():
    m = dotf.load(make_tiny_hf("llama-gqa"))
    ids = list(range(10))
    _, mean, _ = m.forward(ids, 0, m.new_cache(10), [True, False, True, True], [True, True, True, False],
                           similarity=True, logits="none")
    assert torch.isnan(mean[1, 0]) and torch.isnan(mean[3, 1])
    assert not torch.isnan(mean[0]).any() and not torch.isnan(mean[2]).any()
