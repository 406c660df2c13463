"""The run store: the only package that contains SQL."""
