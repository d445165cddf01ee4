"""Hand-written kernels for what XLA does slowly on one platform (C++ on CPU)."""
