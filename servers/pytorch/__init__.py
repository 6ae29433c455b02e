"""Our own OpenAI-compatible server around torch + transformers, with static or continuous
batching (servers.pytorch.engine) behind an aiohttp front end (servers.pytorch.app)."""
