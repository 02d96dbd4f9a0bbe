"""The ingest's session with the broker, through the station's one MQTT adapter
(`groundstation.mqtt`): a persistent session (its fixed client id, clean_session off),
manual acknowledgement (a message is acknowledged once its values are durable, on the
connection it came on), the subscriptions made on every connection, and the adapter's
reconnect policy and TLS.
"""

from __future__ import annotations

from collections.abc import Callable

from groundstation.config import ClusterConfig, MqttConfig
from groundstation.core import topics
from groundstation.mqtt import BrokerError, Connection, MqttClient, Received, Will

__all__ = ["SUBSCRIPTIONS", "BrokerError", "Connection", "Received", "client"]

SUBSCRIPTIONS = (*topics.TELEMETRY_SUBSCRIPTIONS, topics.ACK_SUBSCRIPTION,
                 *topics.SIM_STATE_SUBSCRIPTIONS, topics.REPLAY_SESSION_SUBSCRIPTION)


# A clustered instance takes telemetry and acknowledgements from its partitions' queues
# (ingest/cluster.py); over MQTT, what every instance hears.
CLUSTER_SUBSCRIPTIONS = (*topics.SIM_STATE_SUBSCRIPTIONS, topics.REPLAY_SESSION_SUBSCRIPTION,
                         *topics.CONTEXT_SUBSCRIPTIONS)


def client(cfg: MqttConfig, on_disconnect: Callable[[BrokerError], None], *,
           cluster: ClusterConfig | None = None) -> MqttClient:
    """The ingest's client: its [mqtt] section as it is (host, credentials, TLS, the
    longest reconnect wait), keeping the broker's queue for it while it is away. A
    clustered instance's needs no session kept (what must not be lost is in the partitions'
    queues); its will clears its retained status."""
    if cluster is not None:
        return MqttClient(cfg, name="ingest", client_id=f"{cfg.client_id}-{cluster.instance}",
                          clean_session=True, subscriptions=CLUSTER_SUBSCRIPTIONS,
                          on_disconnect=on_disconnect,
                          will=Will(topics.ingest_instance(cluster.instance), b"", retain=True))
    return MqttClient(cfg, name="ingest", client_id=cfg.client_id, clean_session=False,
                      manual_ack=True, subscriptions=SUBSCRIPTIONS,
                      on_disconnect=on_disconnect)
