"""What the training stages share: Trainer arguments and levers, precision, techniques, callbacks, resume."""
