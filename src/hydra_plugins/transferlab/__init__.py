"""Registers transferlab's typed config schema whenever Hydra starts, in any process.

Hydra imports every module under the `hydra_plugins` namespace while it discovers plugins. DVC
composes `conf/` in its own process and never imports transferlab, so without this module
`dvc exp run -S ...` would not know `base_config` (and could not type-check overrides).
"""

from transferlab.config.schema import register

register()
