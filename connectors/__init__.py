"""Connectors: one module per ``.proto`` service, each defining one servicer class.

See the README's "Writing a connector" section.
"""
