"""The model architectures and how they are built (config group `model`)."""
