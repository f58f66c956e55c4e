"""Apply a changed config without a restart (``opentracy reload``, SIGHUP, ``POST /admin/reload``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from opentracy.config import ConfigError, Settings, load_settings
from opentracy.engine import Engine

log = logging.getLogger("opentracy.gateway")


def reload_config(app: FastAPI) -> Settings:
    """Re-read the config file and swap in a new engine.

    Requests in flight keep the engine they took at their start; new requests get the new one. A bad
    config raises :class:`ConfigError` and changes nothing. The trace store (URL, TTL) and the server
    address change only with a restart.
    """
    current: Engine = app.state.engine
    settings = load_settings(current.settings.path)
    app.state.engine = Engine.build(settings, app.state.direct)
    app.state.tracer.reconfigure(settings)
    log.info("config reloaded from %s: %d aliases, %d models", settings.path, len(settings.aliases),
                len(settings.model_names))
    return settings


def reload_on_signal(app: FastAPI) -> None:
    try:
        reload_config(app)
    except ConfigError as exc:
        log.error("reload (SIGHUP) failed, the running config stays: %s", exc)
