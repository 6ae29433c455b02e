"""The simulated reference LLM server: an OpenAI-compatible endpoint with a known model.

``model`` holds the pure performance model (``SimCosts``, ``step_time``, ``predict_isolated``,
``count_prompt_tokens``); ``engine`` the continuous-batching loop; ``app`` the HTTP server
(``make_app``, ``start``, ``serve``); ``cli`` the command line (``python -m servers.sim``).
"""

__version__ = "1.0.0"
"""Version of the sim's behaviour (performance model, text, API); bump it when they change."""
