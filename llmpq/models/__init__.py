"""Models: shapes (`spec`), checkpoints on disk (`checkpoint`), and running a model as pipeline stages (`stage`)."""
