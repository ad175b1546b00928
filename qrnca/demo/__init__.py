"""The embedded demo: a synthetic world in the raw dataset formats and the tiny model
trained on it."""
