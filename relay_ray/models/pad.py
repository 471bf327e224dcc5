"""The cost-scaled trained pair: zero-pad a Llama checkpoint to a larger cost, same function.

A padded model computes exactly what the source model computes (up to rounding) but costs
what a model of its size costs, so one evaluation run measures accuracy *and* speed at a
production cost ratio (DESIGN §5; docs/quality.md, "The cost-scaled pair").

Recipe for a source of width ``h`` padded to ``H`` (a multiple of the head size ``d``):

- **width**: every weight keeps its source values in its top-left corner and is zero elsewhere:
  embeddings and ``lm_head`` get zero columns; extra attention heads have zero ``q``, ``k``
  and ``v`` rows (their output is 0) and zero ``o_proj`` columns; extra MLP columns have zero
  ``gate``/``up`` rows and ``down`` columns. The padded coordinates of the residual stream stay
  exactly 0. RMSNorm weights are scaled by ``sqrt(h/H)`` (zero on padded coordinates) and
  ``rms_norm_eps`` by ``h/H``: the mean of squares over ``H`` coordinates is ``h/H`` times the
  mean over the ``h`` real ones, so ``x / sqrt(mean_H + eps*h/H) * w*sqrt(h/H)`` equals the
  source's ``x / sqrt(mean_h + eps) * w``.
- **depth**: ``extra_layers`` layers appended after the source's, with seeded random
  ``q/k/v/gate/up`` weights (dense, so they cost what a real layer costs) and zero
  ``o_proj``/``down_proj``: full compute, nothing written to the residual stream.

Verified: ``tests/unit/test_pad.py`` (transformers fp32, tiny model: logits and greedy output
unchanged) and ``tests/integration/test_scaled_model.py`` (vLLM, as served: greedy answers to
dev prompts identical to the source's).

``python -m relay_ray.models.pad --src demo-models/arith-large --out models/arith-large-scaled``
builds :data:`SCALED_SPEC`; ``make scaled-models`` runs :mod:`relay_ray.models.pad_size`, which
chooses the width for the machine by timing candidates as served.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "build-spec.json"


@dataclass(frozen=True)
class PadSpec:
    """Target shape: width ``hidden_size`` (multiple of the head size), MLP width
    ``intermediate_size``, and ``extra_layers`` compute-only layers; ``seed`` fills them."""

    hidden_size: int
    intermediate_size: int
    extra_layers: int = 0
    seed: int = 0


# The cost-scaled shape at its first machine's width (~19x arith-small's per-token time on a
# CPU without bf16 arithmetic; docs/quality.md). `make scaled-models` starts here and re-sizes
# the width for the machine it runs on (pad_size.py); tests that only need the function use it.
SCALED_SPEC = PadSpec(hidden_size=1024, intermediate_size=3072, extra_layers=9)


def padded_config(config: dict, spec: PadSpec) -> dict:
    """The padded model's ``config.json``; ValueError when ``spec`` cannot pad ``config``."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    d = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads)
    if config.get("tie_word_embeddings"):
        raise ValueError("tied embeddings are not supported (lm_head is padded separately)")
    if spec.hidden_size < h or spec.hidden_size % d:
        raise ValueError(f"hidden_size {spec.hidden_size} must be >= {h} and a multiple of the head size {d}")
    if spec.intermediate_size < config["intermediate_size"] or spec.extra_layers < 0:
        raise ValueError("intermediate_size must not shrink and extra_layers must be >= 0")
    if heads * d != h or heads % kv:
        raise ValueError("only models with heads x head_dim == hidden_size and grouped KV heads are supported")
    new_heads = spec.hidden_size // d
    if new_heads % (heads // kv):
        raise ValueError(f"{new_heads} heads do not keep the KV group size {heads // kv}")
    return {**config, "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
            "num_attention_heads": new_heads, "num_key_value_heads": new_heads // (heads // kv), "head_dim": d,
            "num_hidden_layers": config["num_hidden_layers"] + spec.extra_layers,
            "rms_norm_eps": config["rms_norm_eps"] * h / spec.hidden_size}


def _corner(tensor, shape):
    """``tensor`` in the top-left corner of a zero tensor of ``shape``."""
    import torch

    out = torch.zeros(shape, dtype=tensor.dtype)
    out[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return out


def _norm(weight, hidden: int):
    """An RMSNorm weight padded to ``hidden``: scaled by sqrt(h/H), zero on the new coordinates."""
    scaled = (weight.float() * math.sqrt(weight.shape[0] / hidden)).to(weight.dtype)
    return _corner(scaled, (hidden,))


def _compute_only_layer(index: int, new: dict, dtype, generator) -> dict:
    """Weights of an appended layer: dense random inputs, zero outputs (writes nothing)."""
    import torch

    H, inter = new["hidden_size"], new["intermediate_size"]
    d, heads, kv = new["head_dim"], new["num_attention_heads"], new["num_key_value_heads"]
    shapes = {"self_attn.q_proj": (heads * d, H), "self_attn.k_proj": (kv * d, H), "self_attn.v_proj": (kv * d, H),
              "mlp.gate_proj": (inter, H), "mlp.up_proj": (inter, H)}
    p = f"model.layers.{index}."
    out = {p + k + ".weight": (0.02 * torch.randn(s, generator=generator)).to(dtype) for k, s in shapes.items()}
    out[p + "self_attn.o_proj.weight"] = torch.zeros((H, heads * d), dtype=dtype)
    out[p + "mlp.down_proj.weight"] = torch.zeros((H, inter), dtype=dtype)
    for norm in ("input_layernorm", "post_attention_layernorm"):
        out[p + norm + ".weight"] = torch.ones(H, dtype=dtype)
    return out


def _padded_shape(name: str, shape: tuple, old: dict, new: dict) -> tuple:
    """The padded shape of source weight ``name`` (by the role its dimensions play)."""
    size = {old["hidden_size"]: new["hidden_size"], old["intermediate_size"]: new["intermediate_size"]}
    d = new["head_dim"]
    role = name.rsplit(".", 2)[-2]
    if role in ("q_proj", "o_proj", "k_proj", "v_proj"):
        heads = {"q_proj": new["num_attention_heads"], "o_proj": new["num_attention_heads"]}.get(
            role, new["num_key_value_heads"])
        return (new["hidden_size"], heads * d) if role == "o_proj" else (heads * d, new["hidden_size"])
    if role in ("embed_tokens", "lm_head"):
        return (shape[0], new["hidden_size"])
    return tuple(size.get(n, n) for n in shape)


def pad_state_dict(state: dict, config: dict, spec: PadSpec) -> tuple[dict, dict]:
    """(padded weights, padded config) for a Llama ``state`` dict and its ``config``."""
    import torch

    new = padded_config(config, spec)
    out = {}
    for name, tensor in state.items():
        if name.endswith("norm.weight"):
            out[name] = _norm(tensor, new["hidden_size"])
        else:
            out[name] = _corner(tensor, _padded_shape(name, tuple(tensor.shape), config, new))
    dtype = state["model.embed_tokens.weight"].dtype
    generator = torch.Generator().manual_seed(spec.seed)
    for i in range(config["num_hidden_layers"], new["num_hidden_layers"]):
        out.update(_compute_only_layer(i, new, dtype, generator))
    return out, new


def num_parameters(state: dict) -> int:
    return sum(t.numel() for t in state.values())


def pad_model(src: str | Path, out: str | Path, spec: PadSpec) -> dict:
    """Write the padded copy of the Hugging Face folder ``src`` to ``out``; returns its build spec.

    Tokenizer, chat template and generation config are copied unchanged; weights keep the
    source's dtype (vLLM casts to the served dtype at load).
    """
    from safetensors.torch import load_file, save_file

    src, out = Path(src), Path(out)
    config = json.loads((src / "config.json").read_text())
    source = load_file(str(src / WEIGHTS_FILE))
    state, new_config = pad_state_dict(source, config, spec)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(WEIGHTS_FILE, "config.json", "train-report.json"))
    save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(new_config, indent=2) + "\n")
    build = {"source": str(src), "pad": asdict(spec), "num_parameters": num_parameters(state),
             "source_parameters": num_parameters(source)}
    (tmp / SPEC_FILE).write_text(json.dumps(build, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Zero-pad a trained Llama model to a larger cost (same function).")
    parser.add_argument("--src", default="demo-models/arith-large", help="source Hugging Face folder")
    parser.add_argument("--out", default="models/arith-large-scaled", help="output folder")
    parser.add_argument("--hidden-size", type=int, default=SCALED_SPEC.hidden_size)
    parser.add_argument("--intermediate-size", type=int, default=SCALED_SPEC.intermediate_size)
    parser.add_argument("--extra-layers", type=int, default=SCALED_SPEC.extra_layers)
    parser.add_argument("--seed", type=int, default=0, help="fills the compute-only layers")
    args = parser.parse_args(argv)
    spec = PadSpec(args.hidden_size, args.intermediate_size, args.extra_layers, args.seed)
    build = pad_model(args.src, args.out, spec)
    print(f"{args.out}: {build['num_parameters'] / 1e6:.1f} M parameters (source {args.src})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
