"""From a requested model name to an answer: aliases, targets, retries and fallbacks."""
