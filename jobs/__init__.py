"""Entry points: the vigil CLI and the jobs it runs."""
