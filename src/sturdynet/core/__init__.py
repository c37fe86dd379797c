"""The core every family builds on: registries, parameter validation, callbacks, masks,
tensor helpers, storage facts, atomic writes. It imports no family."""
