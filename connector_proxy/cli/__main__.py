"""``python -m connector_proxy.cli``: the same as the ``connector-proxy`` script."""

from __future__ import annotations

from connector_proxy.cli import main

if __name__ == "__main__":
    main()
