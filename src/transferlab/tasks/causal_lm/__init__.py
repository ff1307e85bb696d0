"""Causal language modelling (task=causal_lm): the same train/finetune/evaluate stages, for a
decoder that writes. Config group `lm` (and `model=smollm2|scratch_gpt|torch_decoder`)."""
