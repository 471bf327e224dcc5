"""Build tiny random-weight Llama models with a shared tokenizer, for tests and the demo.

Weights are random (seeded); only the shapes, the tokenizer and the chat template matter
for serving tests. Run ``python -m relay_ray.models.build --out models`` (``make models``).
Building is idempotent: a folder whose ``build-spec.json`` matches is left alone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from relay_ray.models.corpus import training_text
from relay_ray.models.vocab import train_tokenizer


@dataclass(frozen=True)
class ModelSpec:
    """Shape of one tiny Llama model. ``head_dim`` is hidden_size / num_attention_heads."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    initializer_range: float = 0.2
    seed: int = 0


DEMO_SPECS = (
    ModelSpec("demo-large", hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
              intermediate_size=1024, seed=1),
    ModelSpec("demo-small", hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=256, seed=2),
    # A different tokenizer (smaller vocabulary): exercises the text handoff in tests.
    ModelSpec("demo-small-alt", hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=256, vocab_size=384, seed=3),
)


# Speed-only pair (issue 4): served in bfloat16 (AMX on this CPU) on one core each, the
# large decodes ~17x slower per token than the small (16 and 20 layers measured 15x and
# 14.9x through Serve: too close to the 15x floor). Built on demand (`make bench-models`),
# never committed.
BENCH_SPECS = (
    ModelSpec("bench-large", hidden_size=768, num_hidden_layers=24, num_attention_heads=12,
              intermediate_size=2048, seed=11),
    ModelSpec("bench-small", hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=512, seed=12),
)


def build_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """Train the random models' tokenizer on the embedded corpus and save it in HF format."""
    train_tokenizer(training_text(), vocab_size).save_pretrained(str(out_dir))


def build_model(out_dir: Path, spec: ModelSpec) -> None:
    """Write a random-weight ``LlamaForCausalLM`` (fp32) and its tokenizer to ``out_dir``."""
    stamp = out_dir / "build-spec.json"
    if stamp.exists() and json.loads(stamp.read_text()) == asdict(spec):
        stamp.touch()  # up to date: tell make so
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out_dir, spec.vocab_size)
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(out_dir)))
    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        head_dim=spec.hidden_size // spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    stamp.write_text(json.dumps(asdict(spec), indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models", help="folder to write model folders into")
    parser.add_argument("--set", choices=["demo", "bench"], default="demo",
                        help="demo: demo/test models (make models); bench: the speed pair (make bench-models)")
    args = parser.parse_args(argv)
    for spec in DEMO_SPECS if args.set == "demo" else BENCH_SPECS:
        path = Path(args.out) / spec.name
        build_model(path, spec)
        print(f"model ready: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
