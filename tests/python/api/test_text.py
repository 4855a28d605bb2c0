"""Text in, text out on the real SmolLM2: string and chat prompts, decoded text, stop strings, streaming
that never splits a character or word-piece, the default strategy, and transformers_generate()."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_hf, smollm2_dotf
from dotf.text import TextDecoder

PROMPT = "The three primary colors are"
CHAT = [{"role": "user", "content": "Name three fruits."}]


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_dotf(torch.float32)


def test_a_string_prompt_is_its_tokens_and_the_text_is_the_decoded_tokens(smollm2):
    tok = smollm2.tokenizer
    by_text = smollm2.generate(PROMPT, max_new_tokens=12, eos_token_id=[])
    by_ids = smollm2.generate(tok(PROMPT)["input_ids"], max_new_tokens=12)
    assert by_text.tokens == by_ids.tokens
    assert by_text.text == tok.decode(by_ids.tokens, skip_special_tokens=True)
    assert by_text.stats["strategy"] == "dotf"  # the default: the fastest lossless strategy


def test_chat_messages_get_the_chat_template_and_stop_at_eos(smollm2):
    tok = smollm2.tokenizer
    ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    res = smollm2.generate(CHAT, max_new_tokens=48)
    want = smollm2.generate(ids, max_new_tokens=48, eos_token_id=smollm2.eos_token_ids)
    assert res.tokens == want.tokens and res.stats["stop_reason"] == want.stats["stop_reason"]
    with pytest.raises(ValueError, match=r"messages\[0\] must have 'role' and 'content'"):
        smollm2.generate([{"text": "hi"}])


def test_stop_strings_end_the_call_and_cut_the_text(smollm2):
    full = smollm2.generate(PROMPT, max_new_tokens=24, eos_token_id=[])
    words = full.text.split()
    stop = words[len(words) // 2]
    res = smollm2.generate(PROMPT, max_new_tokens=24, eos_token_id=[], stop=["@@never@@", stop])
    assert res.stats["stop_reason"] == "stop"
    assert res.text == full.text[:full.text.find(stop)]
    assert res.tokens == full.tokens[:len(res.tokens)] and len(res.tokens) < len(full.tokens)
    # the call ended with the chunk that completed the stop string: one token fewer would not contain it
    tok = smollm2.tokenizer
    assert stop not in tok.decode(res.tokens[:-1], skip_special_tokens=True) or len(res.tokens) > 1
    with pytest.raises(ValueError, match="stop strings must be non-empty str"):
        smollm2.generate(PROMPT, max_new_tokens=4, stop=[""])


@pytest.mark.parametrize("strategy", ["ar", "dotf"])
def test_stream_yields_the_final_text_in_pieces_that_never_change(smollm2, strategy):
    stream = smollm2.stream(CHAT, max_new_tokens=40, strategy=strategy)
    pieces = list(stream)
    assert "".join(pieces) == stream.result.text
    assert all("\ufffd" not in p for p in pieces)
    # with a stop string, the streamed text stops before it as well
    stop = stream.result.text.split()[3]
    stream = smollm2.stream(CHAT, max_new_tokens=40, strategy=strategy, stop=stop)
    assert "".join(stream) == stream.result.text == stream.result.text.split(stop)[0]


def test_leaving_a_stream_stops_generation(smollm2):
    with smollm2.stream(PROMPT, max_new_tokens=200, eos_token_id=[], strategy="ar") as stream:
        next(stream)
    assert stream.result is None or stream.result.stats["stop_reason"] == "stop"
    assert not stream._thread.is_alive()


def test_decoder_never_splits_a_multibyte_character_or_a_word(smollm2):
    tok = smollm2.tokenizer
    text = "Grüße aus Zürich 😀 — naïve café, 東京 and ünïcödé"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoder, pieces = TextDecoder(tok), []
    for t in ids:
        pieces.append(decoder.push([t]))
        joined = "".join(pieces)
        assert "\ufffd" not in joined and text.startswith(joined)
    pieces.append(decoder.finish())
    assert "".join(pieces) == text


def test_transformers_generate_is_a_drop_in_for_generate():
    hf = make_tiny_hf("llama-gqa")
    import dotf  # noqa: PLC0415

    fast = dotf.load(hf)
    ids = torch.tensor([[3, 17, 42, 5, 99, 7]])
    want = hf.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(fast.transformers_generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=None), want)

    class Recorder:  # transformers' streamer protocol: put(prompt), put(new tokens)..., end()
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    rec = Recorder()
    out = fast.transformers_generate(ids, max_new_tokens=6, streamer=rec, eos_token_id=None)
    assert rec.calls[0] == ids.tolist() and rec.calls[-1] == "end"
    assert sum((c for c in rec.calls[1:-1]), []) == out[0, ids.size(1):].tolist()
    for kwargs, match in [(dict(num_beams=2), "num_beams=2"), (dict(repetition_penalty=1.3), "repetition_penalty"),
                          (dict(input_ids=torch.zeros(2, 4, dtype=torch.long)), "batch size 2")]:
        with pytest.raises(ValueError, match=match):
            fast.transformers_generate(**{"input_ids": ids, "max_new_tokens": 4, **kwargs})
