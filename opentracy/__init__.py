"""OpenTracy: an OpenAI-compatible LLM gateway over litellm that traces every call into ClickHouse."""

import os as _os

# litellm fetches its price list over the network at import unless told otherwise (an 8 s stall
# on a closed network). This must run before anything imports litellm.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

__all__ = ["__version__"]
