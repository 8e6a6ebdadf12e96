"""coursekit: tested helpers for the Deep Generative Models course."""
