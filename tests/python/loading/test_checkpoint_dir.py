"""Loading a checkpoint directory: a saved tiny model loads to the same model, and every broken or
unsupported directory (missing or unreadable files, bad config.json fields, unsupported architectures,
rope scaling or quantization, damaged safetensors, wrong tensors) gets a clear Python exception naming
the file or field."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import dotf
from conftest import N_NEW, PROMPT


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
