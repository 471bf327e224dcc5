"""Zero-padding a Llama model (relay_ray/models/pad.py) keeps its function, in transformers fp32."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from relay_ray.models.pad import PadSpec, pad_model, pad_state_dict, padded_config  # noqa: E402

VOCAB = 61


def _tiny(kv_heads: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=kv_heads, head_dim=32, max_position_embeddings=128, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so a wrong norm scaling shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def _padded(model, spec: PadSpec):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    padded_state, config = pad_state_dict(state, model.config.to_dict(), spec)
    padded = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    missing, unexpected = padded.load_state_dict(padded_state, strict=True)
    assert not missing and not unexpected
    return padded


SPECS = [PadSpec(256, 320, extra_layers=3), PadSpec(64, 96, extra_layers=2), PadSpec(128, 96, extra_layers=0)]


@pytest.mark.parametrize("spec", SPECS, ids=["wide+deep", "deep only", "wide only"])
def test_padded_model_computes_the_same_logits_and_greedy_text(spec):
    model = _tiny()
    padded = _padded(model, spec)
    ids = torch.randint(3, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, padded(input_ids=ids).logits
        assert (a - b).abs().max().item() < 1e-4
        gen = dict(max_new_tokens=40, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(model.generate(ids[:1, :8], **gen), padded.generate(ids[:1, :8], **gen))
    n_source, n_padded = (sum(p.numel() for p in m.parameters()) for m in (model, padded))
    assert n_padded > n_source


def test_grouped_kv_heads_keep_their_groups():
    model = _tiny(kv_heads=1)
    padded = _padded(model, PadSpec(128, 96, extra_layers=1))
    assert padded.config.num_attention_heads == 4 and padded.config.num_key_value_heads == 2
    ids = torch.randint(3, VOCAB, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(input_ids=ids).logits - padded(input_ids=ids).logits).abs().max().item() < 1e-4


def test_a_broken_recipe_changes_the_function():
    """The check above can fail: padding the norms without the sqrt(h/H) scale is caught."""
    model = _tiny()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    padded_state, config = pad_state_dict(state, model.config.to_dict(), PadSpec(256, 96))
    for name, value in state.items():
        if name.endswith("norm.weight"):
            padded_state[name][: value.shape[0]] = value
    broken = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    broken.load_state_dict(padded_state)
    ids = torch.randint(3, VOCAB, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(input_ids=ids).logits - broken(input_ids=ids).logits).abs().max().item() > 1e-2


@pytest.mark.parametrize("spec,match", [
    (PadSpec(80, 96), "multiple of the head size"), (PadSpec(32, 96), "multiple of the head size"),
    (PadSpec(128, 64), "must not shrink"), (PadSpec(128, 96, extra_layers=-1), "extra_layers"),
])
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        padded_config(_tiny().config.to_dict(), spec)


def test_pad_model_writes_a_loadable_folder(tmp_path):
    model = _tiny()
    src = tmp_path / "src"
    model.save_pretrained(src)
    (src / "tokenizer.json").write_text("{}")
    build = pad_model(src, tmp_path / "out", PadSpec(128, 128, extra_layers=1))
    out = tmp_path / "out"
    assert (out / "tokenizer.json").read_text() == "{}"
    assert json.loads((out / "build-spec.json").read_text()) == build
    assert build["num_parameters"] > build["source_parameters"]
    loaded = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(3, VOCAB, (1, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (model(input_ids=ids).logits - loaded(input_ids=ids).logits).abs().max().item() < 1e-4
