"""GPU/TPU kernels written in Pallas; on a CPU they run in interpret mode (for the tests).

`band_attention`: flash-style banded softmax attention, the Pallas implementation behind
`kernels.attention.attention(..., implementation="pallas")`.
"""
