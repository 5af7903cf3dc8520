"""``python -m credit_risk``: the same as the ``credit-risk`` command."""

from credit_risk.cli import main

main()
