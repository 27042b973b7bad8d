"""Thin Ray actor wrappers, one per stage; the logic lives in pipeline/."""
