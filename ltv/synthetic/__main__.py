"""``python -m ltv.synthetic --root data/synthetic [...]``: see :func:`ltv.synthetic.generator.main`."""

from ltv.synthetic.generator import main

main()
