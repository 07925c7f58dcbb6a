"""initscale's compiled kernels, private: one module per kernel family.

- :mod:`initscale._kernels.cpu`: the C kernel (the portable streams and the torch adapter's CPU
  sampler), built with the system compiler on first use, with its cache and the checks a cached
  library passes before it is loaded. Standard library only.
- :mod:`initscale._kernels.gpu`: the fused Triton samplers and stream kernel for torch tensors
  on a GPU (or under Triton's interpreter), with their per-device self-check. Imports torch: only
  the torch adapter imports it.
- :mod:`initscale._kernels.torch_ops`: torch's ops-path sampler (the torch adapter's draws with
  torch's ops, routed to the two kernels where they apply), which the adapter draws with and the
  Triton self-check compares with: the kernels never import an adapter (tests/test_layering.py).
  Imports torch.

Importing this package imports neither module (``import initscale`` imports no framework).
"""
