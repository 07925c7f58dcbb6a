"""initscale's compiled kernels, private: one module per kernel family.

- :mod:`initscale._kernels.cpu`: the C kernel (the portable streams and the torch adapter's CPU
  sampler), built with the system compiler on first use, with its cache and the checks a cached
  library passes before it is loaded. Standard library only.
- :mod:`initscale._kernels.gpu`: the fused Triton samplers and stream kernel for torch tensors
  on a GPU (or under Triton's interpreter), with their per-device self-check. Imports torch: only
  the torch adapter imports it.

Importing this package imports neither module (``import initscale`` imports no framework).
"""
