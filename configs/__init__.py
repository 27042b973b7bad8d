"""Packaged YAML configs: default.yaml holds the embedded defaults."""
