"""Models: loading them and their prompt encoding, the family registry and the layout
of their neurons, the tiny test models, the package-index models, the device."""
