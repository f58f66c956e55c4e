"""OpenTracy tracing for an existing litellm proxy.

Copy this file to ``callbacks/opentracy_callback.py`` next to the proxy's ``config.yaml`` and add::

    litellm_settings:
      callbacks: callbacks.opentracy_callback.handler

(litellm loads ``<config dir>/callbacks/opentracy_callback.py`` by path). The ``opentracy`` package
must be installed in the proxy's environment; with it installed, ``callbacks:
opentracy.tracing.proxy.handler`` works without this file. Traces go where ``OPENTRACY_CLICKHOUSE_URL``
(or ``OPENTRACY_DATA_DIR`` for the embedded store) says; read them with ``opentracy traces``.
"""

try:
    from opentracy.tracing.proxy import handler
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "callbacks/opentracy_callback.py needs the `opentracy` package in the litellm proxy's environment "
        f"(pip install opentracy): {exc}"
    ) from exc

__all__ = ["handler"]
