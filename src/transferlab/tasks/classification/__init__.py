"""task=classification: a text classifier fine-tuned from a (pre)trained encoder."""
