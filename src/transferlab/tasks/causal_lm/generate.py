"""Text from prompts (lm.generate): sampling or greedy, reproducible for a given seed."""

from __future__ import annotations


def generation_kwargs(gen, eos_token_id: int | None, pad_token_id: int | None) -> dict:
    """`generate()` arguments from the config; sampling knobs only when sampling."""
    kwargs = {
        "max_new_tokens": int(gen.max_new_tokens),
        "do_sample": bool(gen.do_sample),
        "repetition_penalty": float(gen.repetition_penalty),
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id if pad_token_id is not None else eos_token_id,
    }
    if gen.do_sample:
        kwargs |= {"temperature": float(gen.temperature), "top_k": int(gen.top_k), "top_p": float(gen.top_p)}
    else:  # no sampling: say so, or generation_config defaults (e.g. top_p) trigger warnings
        kwargs |= {"temperature": None, "top_k": None, "top_p": None}
    return kwargs


def generate(net, tok, prompts: list[str], gen, device: str = "cpu") -> list[str]:
    """The continuation of each prompt (without the prompt). Each prompt is generated on its own
    after re-seeding with gen.seed, so a text does not depend on the other prompts or their order."""
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    net.to(device).eval()
    kwargs = generation_kwargs(gen, tok.eos_token_id, tok.pad_token_id)
    outputs = []
    with torch.inference_mode():
        # disable=None: a bar on a terminal, nothing in logs and CI
        for prompt in tqdm(prompts, desc="generating", unit="prompt", disable=None):
            set_seed(int(gen.seed))
            inputs = tok(prompt, return_tensors="pt").to(device)
            if inputs["input_ids"].shape[1] == 0:  # an empty prompt starts from end-of-text
                inputs = {
                    "input_ids": torch.tensor([[tok.eos_token_id]], device=device),
                    "attention_mask": torch.ones(1, 1, dtype=torch.long, device=device),
                }
            produced = net.generate(**inputs, **kwargs)
            new = produced[0, inputs["input_ids"].shape[1] :]
            outputs.append(tok.decode(new, skip_special_tokens=True))
    return outputs
