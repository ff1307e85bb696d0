"""Data: loading sources (config group `data`), the `prepare` stage and the prepared splits."""
