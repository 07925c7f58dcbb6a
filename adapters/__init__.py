"""Adapters: one module per framework, each compiling an initscale spec to native initializers.

Rules for every adapter (the design decision, written where the code lives):

- An adapter depends on the core (``initscale``) and on its own framework only; adapters never
  import each other.
- A framework is imported at the top of its own adapter module and nowhere else, so
  ``import initscale`` imports no framework. Users reach adapters through the lazy attributes
  ``initscale.numpy`` / ``initscale.torch`` / ... , which import the adapter on first use and,
  when the framework is missing, raise an ImportError naming the pip extra to install.
- Every adapter draws exactly the :mod:`initscale.distributions` object the spec resolves to:
  all numbers that depend only on the spec and the shape are computed once, outside the
  sampling call.

**One registry.** :data:`initscale._registry.ADAPTERS` lists every adapter once: its module, its
framework and pip extra, its layout family, what it offers and what it does not (with why). The
lazy attributes, the parity matrix, ``initscale.propagate`` and the CLI's ``--backend`` choices all
read it; nothing else lists adapters.

**One contract** (:data:`initscale._registry.CONTRACT`, checked by ``tests/test_contract.py``), as
safetensors keeps ``save_file``/``load_file`` the same in ``safetensors.torch``, ``.numpy``,
``.flax`` and ``.tensorflow``. Every adapter exports the same names with the same parameters
(names, order, kinds, defaults)::

    Initializer                                        the type initializer() returns
    initializer(spec, layout=<native>, *, stream=None)
    reinit(<subject>, rules, <rng>, *, dry_run=False, defaults=True, fans="forward",
           stream_seed=None, stream_names=None)
    check(<subject>, recipe=None, *, rules=None, fresh=True, alpha=initscale.check.ALPHA)
    lsuv(<subject>, batch, rules=None, *, tol=0.1, max_iters=10, **reinit_kwargs)

and a framework's idioms go only where four rules put them:

1. **Extras are keyword-only**, each named in the registry and documented: JAX's ``in_axis``,
   ``out_axis``, ``batch_axis``, ``dtype`` (``initializer``) and ``module``, ``example_inputs``,
   ``example_kwargs`` (``reinit``, ``check``), ``module``, ``key``, ``apply_kwargs`` (``lsuv``:
   the linen module and the key come beside the variables); Keras's ``seed`` (``initializer``,
   ``lsuv``) and ``training`` (``lsuv``); torch's and Keras's ``include_frozen``, ``include_buffers``
   (``reinit``, ``check``) and torch's ``generator`` (``lsuv_``).
2. **The subject** (the model, module or params) comes first, positionally; its name is the
   framework's word and not part of the contract.
3. **The randomness source** of ``reinit`` is its third parameter under the framework's name:
   torch ``generator=None``, JAX ``key`` (required: JAX keys are explicit), Keras ``seed=None``.
   ``initializer`` returns the framework's own initializer protocol, which takes the randomness:
   torch ``fn(tensor, *, generator=None)``, JAX ``init(key, shape, dtype)``, NumPy
   ``fn(shape, *, rng, dtype)``, Keras ``init(shape, dtype)`` with ``seed=`` given when built.
4. **torch's trailing underscore:** torch spells in-place functions with ``_``
   (``torch.nn.init.normal_``), so there the contract's in-place functions are ``reinit_`` and
   ``lsuv_``. JAX's ``reinit`` returns new params; Keras's mutates, but Keras has no such spelling.

``layout`` defaults to the adapter's own: NumPy ``"keras"`` (*kernel, in, out), torch ``"torch"``
(out, in, *kernel), JAX the axes (``in_axis=-2, out_axis=-1``), Keras its own fan rule. Each
adapter's ``__all__`` is the contract's names plus its idioms (torch's ``init_``, ``he_normal_``,
..., ``materialize_``; Keras's drop-in classes; NumPy's ``sample``).

Known gaps, written in the registry with the reason and reported by name by the contract test:
the NumPy adapter has no ``reinit``/``check``/``lsuv`` (no model object: it is the reference
sampler for arrays); tf_keras has no ``initializer(stream=)`` and no
``reinit(stream_seed=, stream_names=, fans=)`` yet.

Deprecated, until initscale 0.3 (a DeprecationWarning names the keyword to use): JAX's positional
axes ``initializer(spec, -2, -1)``; Keras's and tf_keras's positional ``initializer(spec, seed,
layout)``; JAX's old order ``lsuv(variables, module, batch, key, rules)`` (now
``lsuv(variables, batch, rules=None, *, module=, key=)``, the warning names it). Changed
without a deprecation: ``reinit``'s ``dry_run`` is keyword-only in JAX, Keras and tf_keras too
(it was fourth; a fourth positional argument is now a TypeError: no caller in the repo passed it
so, and a wrapper would move the location every reinit warning reports).

This folder ships as the package ``initscale.adapters`` (see ``pyproject.toml``): a top-level
package called ``adapters`` would collide with an unrelated distribution on PyPI.
"""
