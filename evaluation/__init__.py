"""What the offline jobs measure with: judge inference, reconstruction error, statistics and samplers.

Samplers of the latent-constraint modes call ``conditioning.modes``, so the numbers measure what the server serves.
"""
