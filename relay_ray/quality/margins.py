"""Teacher-force a model over given completions and return its top1 - top2 margins per token.

Uses Hugging Face ``transformers`` on the model folder (CPU or, when available, one GPU):
the prompt is rendered with the model's own chat template, exactly as a tier renders it,
and the completion text is appended. For each completion token the margin is taken from
the distribution that predicts it.
"""

from __future__ import annotations

from relay_ray.quality.calibrate import TokenMargins


class MarginScorer:
    def __init__(self, model_path: str, dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()

    def render(self, user_prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_prompt}], add_generation_prompt=True, tokenize=False)

    def score(self, user_prompt: str, completion: str) -> TokenMargins:
        """Margins of the completion's tokens, with their spans in ``completion``."""
        import torch

        prompt = self.render(user_prompt)
        enc = self.tokenizer(prompt + completion, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].float()
        top2 = torch.softmax(logits, -1).topk(2, dim=-1).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        starts, ends, out = [], [], []
        for t in range(1, len(ids)):
            s, e = offsets[t]
            if e <= len(prompt):
                continue
            starts.append(max(0, s - len(prompt)))
            ends.append(e - len(prompt))
            out.append(margins[t - 1])
        return TokenMargins(completion, tuple(starts), tuple(ends), tuple(out))

    def draft_matches(self, user_prompt: str, completion: str, completion_ids=()) -> list[bool]:
        """Per completion token: is it this model's greedy choice given the text before it?
        (What a greedy draft model would have proposed there; see
        :func:`relay_ray.quality.compute.speculative_large_positions`.) ``completion_ids``, when
        given, are the tokens as generated; otherwise ``completion`` is tokenized."""
        import torch

        prompt_ids = self.tokenizer(self.render(user_prompt), add_special_tokens=False)["input_ids"]
        completion_ids = list(completion_ids) or self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + completion_ids
        with torch.no_grad():
            best = self.model(input_ids=torch.tensor([ids], device=self.device)).logits[0].argmax(-1).tolist()
        return [best[t - 1] == ids[t] for t in range(len(prompt_ids), len(ids))]
