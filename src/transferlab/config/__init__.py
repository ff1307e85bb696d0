"""Config: schema, composition of ``conf/`` and loading of ``params.yaml``."""
