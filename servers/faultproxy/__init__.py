"""A fault-injecting, network-impairing TCP proxy for testing the generator (docs/reliability.md).

``policy.py`` says what is done to the traffic (pure); ``proxy.py`` does it (asyncio);
``cli.py`` is ``loadgen proxy`` and ``python -m servers.faultproxy``.
"""
