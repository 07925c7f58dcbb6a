"""Adapters: one module per framework, each compiling an initscale spec to native initializers.

Rules for every adapter (the design decision, written where the code lives):

- An adapter depends on the core (``initscale``) and on its own framework only; adapters never
  import each other.
- A framework is imported at the top of its own adapter module and nowhere else, so
  ``import initscale`` imports no framework. Users reach adapters through the lazy attributes
  ``initscale.numpy`` / ``initscale.torch`` / ... , which import the adapter on first use and,
  when the framework is missing, raise an ImportError naming the pip extra to install.
- Every adapter exposes ``initializer(spec, ...)`` with the framework's idioms on top, and
  draws exactly the :mod:`initscale.distributions` object the spec resolves to: all numbers
  that depend only on the spec and the shape are computed once, outside the sampling call.

This folder ships as the package ``initscale.adapters`` (see ``pyproject.toml``): a top-level
package called ``adapters`` would collide with an unrelated distribution on PyPI.
"""
