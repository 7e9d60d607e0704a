"""The synthetic data generator: contract data (docs/data_contract.md) with an exact per-row oracle.

``generator`` writes data sets (:func:`generate`, :func:`ensure_generated`, the CLI
``python -m ltv.synthetic --root data/synthetic``); ``hour`` draws one hour of rows from ``flat``
(latent traits, string and number columns), ``history`` and ``activity`` (nested columns) and ``labels``
(the label model and its oracle); ``vocab`` is the fixed world they share, ``arrays`` builds Arrow
MAP / LIST arrays, ``writer`` writes files. Nothing in the model or the loader imports this package, and
the registered model does not ship it. docs/generator.md describes the generative model.
"""

from ltv.synthetic.generator import ensure_generated, generate

__all__ = ["ensure_generated", "generate"]
