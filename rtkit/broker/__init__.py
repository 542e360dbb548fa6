"""The token broker: the guide's ``/api/client-secret`` backend, with auth, origins, rate limits and audit logs."""

from rtkit.broker.config import BrokerSettings, hash_token
from rtkit.broker.server import Broker, build_app, build_state

__all__ = ["Broker", "BrokerSettings", "build_app", "build_state", "hash_token"]
