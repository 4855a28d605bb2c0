"""Bad input gets a clear Python exception (naming the argument, file or field and the allowed range),
never a crash, a hang or garbage tokens; and the model stays usable after every error."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import dotf
from dotf import api
from conftest import make_tiny_hf

PROMPT = list(range(10, 30))
N_NEW = 12


# ---- shared tiny model and reference --------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_model():
    return make_tiny_hf("llama-gqa")


@pytest.fixture(scope="module")
def model(hf_model):
    return dotf.load(hf_model)


@pytest.fixture(scope="module")
def reference(model):
    return {s: model.generate(PROMPT, max_new_tokens=N_NEW, strategy=s, threshold=0.0).tokens
            for s in ("ar", "asd", "dotf")}


def assert_usable(model, reference):
    """After an error the same model generates the right tokens, with and without speculation."""
    assert model.generate(PROMPT, max_new_tokens=N_NEW).tokens == reference["ar"]
    assert model.generate(PROMPT, max_new_tokens=N_NEW, strategy="asd", threshold=0.0).tokens == reference["ar"]


# ---- checkpoints on disk ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_dir(hf_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    hf_model.save_pretrained(str(d))
    return d


@pytest.fixture
def ckpt(saved_dir, tmp_path):
    """A private, writable copy of the saved tiny checkpoint."""
    d = tmp_path / "ckpt"
    shutil.copytree(saved_dir, d)
    return d


def _edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(d, fn):
    from safetensors.torch import load_file, save_file
    path = d / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_checkpoint_loads_and_matches_the_in_memory_model(ckpt, reference):
    assert dotf.load(str(ckpt)).generate(PROMPT, max_new_tokens=N_NEW).tokens == reference["ar"]


def test_missing_checkpoint_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dotf.load(str(tmp_path / "nope"))


def test_checkpoint_path_is_a_file(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        dotf.load(str(f))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files")
def test_unreadable_checkpoint(ckpt):
    os.chmod(ckpt / "config.json", 0)
    try:
        with pytest.raises(PermissionError, match="config.json"):
            dotf.load(str(ckpt))
    finally:
        os.chmod(ckpt / "config.json", 0o644)


def test_config_json_missing(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        dotf.load(str(ckpt))


def test_config_json_malformed(ckpt):
    (ckpt / "config.json").write_text('{"model_type": "llama", ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        dotf.load(str(ckpt))


def test_config_json_not_an_object(ckpt):
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        dotf.load(str(ckpt))


def test_unsupported_model_type(ckpt):
    _edit_config(ckpt, model_type="gpt_neox", architectures=None)
    with pytest.raises(ValueError, match=r"model_type 'gpt_neox' is not supported \(supported: llama, mistral"):
        dotf.load(str(ckpt))


def test_unsupported_architecture(ckpt):
    _edit_config(ckpt, architectures=["LlamaForSequenceClassification"])
    with pytest.raises(ValueError, match="architecture 'LlamaForSequenceClassification' is not supported"):
        dotf.load(str(ckpt))


@pytest.mark.parametrize("where", ["rope_scaling", "rope_parameters"])
def test_unsupported_rope_scaling(ckpt, where):
    scaling = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    _edit_config(ckpt, **{where: scaling})
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported"):
        dotf.load(str(ckpt))


def test_malformed_rope_scaling(ckpt):
    _edit_config(ckpt, rope_scaling="linear")
    with pytest.raises(ValueError, match="rope_scaling"):
        dotf.load(str(ckpt))


def test_sliding_window_that_matters(ckpt, reference):
    _edit_config(ckpt, model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=64)
    with pytest.raises(ValueError, match=r"sliding_window=64 would matter at max_seq_len=512.*max_seq_len <= 64"):
        dotf.load(str(ckpt))
    # Within the window the model is exact: it loads and generates.
    m = dotf.load(str(ckpt), max_seq_len=64)
    assert m.generate(PROMPT, max_new_tokens=N_NEW).tokens == reference["ar"]


def test_unsupported_hidden_act(ckpt):
    _edit_config(ckpt, hidden_act="gelu_pytorch_tanh")
    with pytest.raises(ValueError, match="hidden_act 'gelu_pytorch_tanh' is not supported"):
        dotf.load(str(ckpt))


@pytest.mark.parametrize("field,value,match", [
    ("vocab_size", None, "required field 'vocab_size' is missing"),
    ("hidden_size", "sixty-four", "hidden_size must be an integer"),
    ("num_attention_heads", 3, r"num_attention_heads \(3\) must be a multiple of num_key_value_heads"),
    ("num_hidden_layers", 0, "num_hidden_layers must be > 0"),
])
def test_bad_config_fields(ckpt, field, value, match):
    _edit_config(ckpt, **{field: value})
    with pytest.raises(ValueError, match=match):
        dotf.load(str(ckpt))


def test_quantized_checkpoint_is_refused(ckpt):
    _edit_config(ckpt, quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(ValueError, match="quantization_config.*gptq.*not supported"):
        dotf.load(str(ckpt))


def test_truncated_safetensors(ckpt):
    path = ckpt / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read safetensors file"):
        dotf.load(str(ckpt))


def test_corrupt_safetensors_header(ckpt):
    path = ckpt / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: cannot read safetensors file"):
        dotf.load(str(ckpt))


def test_no_safetensors_file(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        dotf.load(str(ckpt))


def test_missing_tensor(ckpt):
    _edit_tensors(ckpt, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match="missing tensor 'model.layers.2.mlp.up_proj.weight'"):
        dotf.load(str(ckpt))


def test_wrong_shape_tensor(ckpt):
    def shrink(t):
        t["model.layers.1.self_attn.k_proj.weight"] = t["model.layers.1.self_attn.k_proj.weight"][:16].clone()
    _edit_tensors(ckpt, shrink)
    with pytest.raises(ValueError, match=r"tensor 'model.layers.1.self_attn.k_proj.weight' has shape \[16, 64\], "
                                         r"expected \[32, 64\]"):
        dotf.load(str(ckpt))


def test_wrong_dtype_tensor(ckpt):
    def to_int(t):
        t["model.norm.weight"] = t["model.norm.weight"].to(torch.int32)
    _edit_tensors(ckpt, to_int)
    with pytest.raises(TypeError, match="tensor 'model.norm.weight' must be floating point, got Int"):
        dotf.load(str(ckpt))


def test_sharded_index_names_a_missing_shard(ckpt):
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        dotf.load(str(ckpt))


# ---- in-memory models ---------------------------------------------------------------------------------
def test_unsupported_pretrained_model_class():
    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                                                bos_token_id=0, eos_token_id=0))
    with pytest.raises(ValueError, match="model class GPT2LMHeadModel is not supported"):
        dotf.load(gpt2)


def test_pretrained_model_on_meta_device():
    transformers = pytest.importorskip("transformers")
    cfg = make_tiny_hf("llama-gqa").config
    with torch.device("meta"):
        meta = transformers.LlamaForCausalLM(cfg)
    with pytest.raises(ValueError, match="meta device"):
        dotf.load(meta)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="src must be a checkpoint directory"):
        dotf.load(42)


# ---- dtype / device --------------------------------------------------------------------------------
def test_float64_on_cuda_is_refused(hf_model):
    with pytest.raises(ValueError, match="float64|CUDA|cuda"):
        dotf.load(hf_model, dtype=torch.float64, device="cuda")
    # The dtype rule itself, independent of this build having CUDA:
    with pytest.raises(ValueError, match="float64 is supported on CPU only"):
        api._check_dtype(torch.float64, torch.device("cuda", 0))


@pytest.mark.skipif(dotf.build_info()["cuda"], reason="this build has CUDA kernels")
def test_cuda_on_a_cpu_build(hf_model):
    with pytest.raises(ValueError, match="CPU-only"):
        dotf.load(hf_model, device="cuda")


@pytest.mark.parametrize("device,exc,match", [
    ("tpu", ValueError, "not a valid torch device"),
    ("meta", ValueError, "device must be 'cpu' or 'cuda'"),
    (3.5, ValueError, "not a valid torch device"),
])
def test_bad_device(hf_model, device, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, device=device)


@pytest.mark.parametrize("dtype,exc,match", [
    ("float32", TypeError, "dtype must be a torch.dtype"),
    (torch.float32.__class__, TypeError, "dtype must be a torch.dtype"),
    (torch.int32, ValueError, "dtype torch.int32 is not supported"),
    (torch.complex64, ValueError, "is not supported"),
])
def test_bad_dtype(hf_model, dtype, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, dtype=dtype)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(max_seq_len=0), ValueError, "max_seq_len must be >= 1"),
    (dict(max_seq_len=10**6), ValueError, "exceeds the model's max_position_embeddings=512"),
    (dict(max_seq_len=64.0), TypeError, "max_seq_len must be an int"),
    (dict(linear_path="fp4"), ValueError, "linear path must be one of"),
])
def test_bad_load_options(hf_model, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        dotf.load(hf_model, **kwargs)


# ---- input_ids ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ids,exc,match", [
    ([], ValueError, "input_ids must not be empty"),
    (torch.zeros(0, dtype=torch.long), ValueError, "input_ids must not be empty"),
    ([5, -1], ValueError, r"token id -1, outside the vocabulary \[0, 256\)"),
    ([5, 256], ValueError, r"token id 256, outside the vocabulary \[0, 256\)"),
    (torch.tensor([[1, 2, 3]]), ValueError, r"input_ids must be 1-D, got shape \(1, 3\)"),
    (torch.tensor(7), ValueError, "input_ids must be 1-D"),
    (torch.tensor([1.0, 2.0]), TypeError, "input_ids must hold integers, got dtype torch.float32"),
    (torch.tensor([True, False]), TypeError, "input_ids must hold integers"),
    (["a", "b"], TypeError, r"input_ids\[0\] must be an int, got str"),
    ([1, 2.0], TypeError, r"input_ids\[1\] must be an int, got float"),
    ([[1, 2]], TypeError, r"input_ids\[0\] must be an int, got list"),
    (None, TypeError, "input_ids must be a list of ints or a 1-D integer tensor, got NoneType"),
    ("hello", TypeError, "got str"),
])
def test_bad_input_ids(model, reference, ids, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(ids, max_new_tokens=4)
    with pytest.raises(exc, match=match):
        model.forward_logits(ids)
    assert_usable(model, reference)


@pytest.mark.parametrize("n,exc,match", [
    (0, ValueError, "max_new_tokens must be >= 1, got 0"),
    (-3, ValueError, "max_new_tokens must be >= 1, got -3"),
    (1.5, TypeError, "max_new_tokens must be an int, got float"),
    (True, TypeError, "max_new_tokens must be an int, got bool"),
    ("8", TypeError, "max_new_tokens must be an int, got str"),
])
def test_bad_max_new_tokens(model, reference, n, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=n)
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_beyond_max_seq_len_fails_up_front(model, reference, strategy):
    seen = []
    with pytest.raises(ValueError, match=r"prompt \(20 tokens\) \+ max_new_tokens \(493\) exceeds max_seq_len=512"):
        model.generate(PROMPT, max_new_tokens=493, strategy=strategy, on_tokens=seen.append)
    assert seen == [], "no work may be done before the error"
    if strategy == "ar":  # exactly at the limit is fine (the same bound holds for every strategy)
        assert len(model.generate(PROMPT, max_new_tokens=492).tokens) == 492
    assert_usable(model, reference)


def test_user_cache_too_small(model, reference):
    with pytest.raises(ValueError, match="exceed the cache capacity 25"):
        model.generate(PROMPT, max_new_tokens=10, cache=model.new_cache(25))
    with pytest.raises(ValueError, match=r"cache capacity must be in \[1, max_seq_len=512\], got 0"):
        model.new_cache(0)
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["foo", "ASD", None, 1])
def test_unknown_strategy(model, reference, strategy):
    with pytest.raises(ValueError, match="strategy must be one of 'ar', 'asd', 'dotf'"):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy)
    assert_usable(model, reference)


# ---- speculative options -------------------------------------------------------------------------------
@pytest.mark.parametrize("option,value,exc,match", [
    ("threshold", 1.5, ValueError, r"threshold must be in \[-1, 1\], got 1.5"),
    ("threshold", -1.01, ValueError, r"threshold must be in \[-1, 1\]"),
    ("threshold", float("nan"), ValueError, r"threshold must be in \[-1, 1\], got nan"),
    ("threshold", "0.9", TypeError, "threshold must be a number, got str"),
    ("gamma", 0.0, ValueError, r"gamma must be in \(0, 1\), got 0"),
    ("gamma", 1.0, ValueError, r"gamma must be in \(0, 1\), got 1"),
    ("margin", -0.5, ValueError, "margin must be a finite number >= 0, got -0.5"),
    ("margin", float("inf"), ValueError, "margin must be a finite number >= 0, got inf"),
    ("margin", "0.1", TypeError, "margin must be a number, got str"),
    ("draft_exit", "entropy", ValueError, "draft_exit must be 'probability' or 'margin', got 'entropy'"),
    ("draft_exit", 1, TypeError, "draft_exit must be a str, got int"),
    ("alpha", 0.0, ValueError, r"alpha must be in \(0, 1\], got 0"),
    ("alpha", 1.2, ValueError, r"alpha must be in \(0, 1\]"),
    ("max_draft", 0, ValueError, "max_draft must be >= 1, got 0"),
    ("max_draft", 2.5, TypeError, "max_draft must be an int, got float"),
    ("budget", -0.1, ValueError, r"budget must be in \[0, 1\], got -0.1"),
    ("budget", 1.5, ValueError, r"budget must be in \[0, 1\]"),
    ("keep_first", -1, ValueError, "keep_first must be >= 0"),
    ("reselect_every", -2, ValueError, "reselect_every must be >= 0"),
    ("lookup_min_ngram", 0, ValueError, "min_ngram"),
    ("lookup_max_tokens", 0, ValueError, "lookup_max_tokens must be >= 1, got 0"),
    ("lookup_every_step", 1, TypeError, "lookup_every_step must be a bool, got int"),
    ("lookup", 1, TypeError, "lookup must be a bool, got int"),
    ("adaptive_gamma", 0, TypeError, "adaptive_gamma must be a bool, got int"),
    ("adaptive_gamma", "no", TypeError, "adaptive_gamma must be a bool, got str"),
    ("draft", "fp4", ValueError, "draft must be 'same' or 'int8', got 'fp4'"),
    ("similarity", "max", ValueError, "similarity must be 'mean' or 'last'"),
    ("selection", "best", ValueError, "selection must be 'threshold' or 'cost', got 'best'"),
    ("sensitivity", -1.0, ValueError, "sensitivity must be >= 0, got -1"),
    ("sensitivity", float("nan"), ValueError, "sensitivity must be >= 0, got nan"),
    ("cost_warmup_rounds", 0, ValueError, "cost_warmup_rounds must be >= 1, got 0"),
    ("temperature", 0.7, TypeError, "unknown option.*temperature.*known: threshold"),
])
@pytest.mark.parametrize("strategy", ["asd", "dotf"])
def test_options_out_of_range(model, reference, strategy, option, value, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy, **{option: value})
    assert_usable(model, reference)


@pytest.mark.parametrize("draft_exit,option,value,match", [
    ("margin", "gamma", 1.5, r"gamma must be in \(0, 1\), got 1.5"),
    ("probability", "margin", -1.0, "margin must be a finite number >= 0, got -1"),
])
def test_inactive_exit_threshold_is_still_checked(model, reference, draft_exit, option, value, match):
    # Both thresholds are options of every call: the one the chosen exit ignores is range-checked too.
    with pytest.raises(ValueError, match=match):
        model.generate(PROMPT, max_new_tokens=4, strategy="dotf", draft_exit=draft_exit, **{option: value})
    assert_usable(model, reference)


@pytest.mark.parametrize("strategy", ["asd", "dotf"])
def test_fixed_gamma_cannot_be_carried(model, reference, strategy):
    with pytest.raises(ValueError, match="carry_gamma=True needs adaptive_gamma=True"):
        model.generate(PROMPT, max_new_tokens=4, strategy=strategy, adaptive_gamma=False, carry_gamma=True)
    assert_usable(model, reference)


def test_unknown_option_with_ar_is_refused(model, reference):
    with pytest.raises(TypeError, match="unknown option.*temperature"):
        model.generate(PROMPT, max_new_tokens=4, strategy="ar", temperature=0.7)
    assert_usable(model, reference)


def test_bad_draft_plan(model, reference):
    with pytest.raises(ValueError, match=r"draft_attention must have one entry per layer \(4\), got 2"):
        model.generate(PROMPT, max_new_tokens=4, strategy="asd", draft_attention=[True, False])
    assert_usable(model, reference)


@pytest.mark.parametrize("eos,exc,match", [
    (256, ValueError, r"eos_token_id 256 is outside the vocabulary \[0, 256\)"),
    (-1, ValueError, r"eos_token_id -1 is outside the vocabulary"),
    ([3, 1000], ValueError, "eos_token_id 1000 is outside"),
    ("</s>", TypeError, "eos_token_id must be an int, got str"),
])
def test_bad_eos_token_id(model, reference, eos, exc, match):
    with pytest.raises(exc, match=match):
        model.generate(PROMPT, max_new_tokens=4, eos_token_id=eos)
    assert_usable(model, reference)


# ---- low-level API ----------------------------------------------------------------------------------
def test_low_level_forward_bad_arguments(model, reference):
    cache = model.new_cache(64)
    with pytest.raises(ValueError, match=r"start position 5 must be in \[0, cache length 0\]"):
        model.forward(PROMPT, 5, cache)
    with pytest.raises(ValueError, match="logits must be one of 'all', 'last', 'none', got 'first'"):
        model.forward(PROMPT, 0, cache, logits="first")
    with pytest.raises(ValueError, match=r"exceed the cache capacity 64"):
        model.forward(list(range(70)), 0, cache)
    with pytest.raises(ValueError, match=r"KVCache.truncate: length must be in \[0, 0\], got 3"):
        cache.truncate(3)
    assert_usable(model, reference)


# ---- callbacks --------------------------------------------------------------------------------------
class Boom(Exception):
    pass


@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
@pytest.mark.parametrize("after", [1, 3])
def test_raising_callback_propagates_and_model_stays_usable(model, reference, strategy, after):
    err = Boom("stop here")
    calls = []

    def on_tokens(chunk):
        calls.append(list(chunk))
        if len(calls) == after:
            raise err

    with pytest.raises(Boom) as info:
        model.generate(PROMPT, max_new_tokens=N_NEW, strategy=strategy, threshold=0.0, on_tokens=on_tokens)
    assert info.value is err
    assert len(calls) == after
    assert [t for c in calls for t in c] == reference[strategy][: sum(map(len, calls))]
    assert_usable(model, reference)


def test_non_callable_callback(model, reference):
    with pytest.raises(TypeError, match="on_tokens must be callable, got int"):
        model.generate(PROMPT, max_new_tokens=4, on_tokens=3)
    assert_usable(model, reference)


# ---- non-finite logits ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["embedding", "lm_head", "mlp"])
@pytest.mark.parametrize("strategy", ["ar", "asd", "dotf"])
def test_non_finite_logits_raise(where, strategy):
    hf = make_tiny_hf("llama-gqa")
    with torch.no_grad():
        if where == "embedding":
            hf.model.embed_tokens.weight.fill_(float("nan"))
        elif where == "lm_head":
            hf.lm_head.weight[7].fill_(float("inf"))
        else:
            hf.model.layers[2].mlp.down_proj.weight.fill_(float("inf"))
    m = dotf.load(hf)
    with pytest.raises(RuntimeError, match="non-finite logits"):
        m.generate(PROMPT, max_new_tokens=8, strategy=strategy, threshold=0.0)
    # ...and again: the error is not a one-off state.
    with pytest.raises(RuntimeError, match="non-finite logits"):
        m.generate(PROMPT, max_new_tokens=8, strategy=strategy, threshold=0.0)


def test_non_finite_logits_raise_mid_generation(hf_model, reference):
    """A token whose embedding is NaN breaks the model only once it is fed: AR raises at that step
    (not before: the tokens up to it are delivered) rather than choosing token 0."""
    ar = reference["ar"]
    i = next(i for i, t in enumerate(ar) if t not in PROMPT and t not in ar[:i])
    bad = ar[i]
    hf = make_tiny_hf("llama-gqa")
    with torch.no_grad():
        hf.model.embed_tokens.weight[bad] = float("nan")
    m = dotf.load(hf)
    for strategy in ("ar", "asd"):
        seen = []
        with pytest.raises(RuntimeError, match="non-finite logits"):
            m.generate(PROMPT, max_new_tokens=N_NEW, strategy=strategy, threshold=0.0, on_tokens=seen.extend)
        assert seen == ar[: len(seen)] and len(seen) <= i + 1
        if strategy == "ar":
            assert seen == ar[: i + 1]  # every token up to the one that cannot be fed


@pytest.mark.parametrize("max_draft", [1, 3])
def test_non_finite_rejected_draft_keeps_speculation_lossless(max_draft):
    """A draft token the model cannot process (NaN embedding) that the full model rejects must not fail
    the call: plain decoding never feeds that token, so speculative decoding must finish as it does.
    (Both the acceptance rule and CPU attention once let such a row poison the verify pass.)"""
    hf = make_tiny_hf("llama-gqa", dtype=torch.float64)
    m = dotf.load(hf, dtype=torch.float64)
    skip_all = [False] * m.num_layers  # draft = embedding -> final norm -> lm_head: often wrong
    for offset in range(0, 256, 9):
        prompt = [(offset + i) % 256 for i in range(20)]
        ar = m.generate(prompt, max_new_tokens=24).tokens
        # The first round always drafts from ar[0]; what does this draft propose there?
        cache = m.new_cache(64)
        m.forward(prompt, 0, cache, logits="none")
        logits, _, _ = m.forward([ar[0]], len(prompt), cache, attention=skip_all, mlp=skip_all)
        x = int(logits[0].argmax())
        if x != ar[1] and x not in prompt and x not in ar:
            break
    else:
        pytest.skip("no prompt found whose first draft is rejected and unused")
    with torch.no_grad():
        hf.model.embed_tokens.weight[x] = float("nan")
    poisoned = dotf.load(hf, dtype=torch.float64)
    assert poisoned.generate(prompt, max_new_tokens=24).tokens == ar
    res = poisoned.generate(prompt, max_new_tokens=24, strategy="asd", max_draft=max_draft,
                            draft_attention=skip_all, draft_mlp=skip_all)
    assert res.tokens == ar
    assert res.stats["drafted"] > res.stats["accepted"]


# ---- state carried between calls ------------------------------------------------------------------
def test_carried_gamma_stays_valid_after_it_drifts_out_of_range(model, reference):
    """Low acceptance pushes the adaptive gamma up by 0.001 a round without bound; carrying it into the
    next call must not make that call fail validation for a value the caller never passed."""
    skip_all = [False] * model.num_layers  # a poor draft: most drafts are rejected
    kw = dict(strategy="asd", alpha=1.0, draft_attention=skip_all, draft_mlp=skip_all)
    first = model.generate(PROMPT, max_new_tokens=150, gamma=0.98, **kw)
    assert first.stats["final_gamma"] > 1.0, first.stats["final_gamma"]
    second = model.generate(PROMPT, max_new_tokens=N_NEW, carry_gamma=True, **kw)
    assert second.tokens == reference["ar"]
    assert 0.0 < second.stats["initial_gamma"] < 1.0
    assert_usable(model, reference)
