"""Where alerts and events go besides the event log.

- ``preload.sinks.webhook.Webhook``: posts each alert as Falco's ``http_output`` does (one JSON
  alert per POST, ``Content-Type: application/json``), e.g. to Falcosidekick's ``/`` endpoint.
  A sink is a callable taking the alert dict, so a ``Webhook`` can be given to the Alerter as is.
- ``preload.sinks.ocsf``: OCSF 1.1.0 mappings as plain functions, ``alert(a)`` (Detection
  Finding) and ``event(e)`` (Process, File System and Network Activity).

Nothing is imported until asked for: the daemon pays for http.client and ssl only when a webhook
is configured.
"""
import importlib

__all__ = ["Webhook", "ocsf", "webhook"]


def __getattr__(name):
    if name == "Webhook":
        return importlib.import_module("preload.sinks.webhook").Webhook
    if name in ("ocsf", "webhook"):
        return importlib.import_module(f"preload.sinks.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
