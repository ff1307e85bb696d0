"""The tasks (config group `task`): what train, finetune and evaluate do for each."""
