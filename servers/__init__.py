"""Model servers behind one uniform OpenAI-compatible HTTP endpoint.

One subpackage per runtime; ``servers.sim`` is the simulated reference server with a known
performance model, used as the embedded default and as ground truth for testing the generator.
"""
