"""Evaluation with the model: prompt accuracy, the boost / suppress interventions,
neuron-based prediction, and the records they write (read without torch)."""
