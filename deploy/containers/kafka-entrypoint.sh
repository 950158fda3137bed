#!/bin/bash
# Write the KRaft configuration from the environment, format the storage on first start, run the broker.
set -euo pipefail
data=/var/lib/kafka/data
props=/var/lib/kafka/server.properties
listeners="PLAINTEXT://${KAFKA_LISTEN_HOST}:${KAFKA_PORT}"
advertised="PLAINTEXT://${KAFKA_ADVERTISED_HOST}:${KAFKA_PORT}"
protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
if [ -n "${KAFKA_EXTERNAL_PORT:-}" ]; then  # a second listener for clients outside a bridge network
  listeners="$listeners,EXTERNAL://${KAFKA_LISTEN_HOST}:${KAFKA_EXTERNAL_PORT}"
  advertised="$advertised,EXTERNAL://${KAFKA_EXTERNAL_HOST}:${KAFKA_EXTERNAL_PORT}"
  protocols="$protocols,EXTERNAL:PLAINTEXT"
fi
cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=${listeners},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=${advertised}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=${protocols}
log.dirs=${data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
num.partitions=6
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
PROPS
java_() {
  java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/log4j2.xml -cp '/opt/kafka/libs/*' "$@"
}
if [ ! -f "$data/meta.properties" ]; then
  cluster=$(java_ kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java_ kafka.tools.StorageTool format -t "$cluster" -c "$props" >/dev/null
  echo "kafka-entrypoint: formatted $data (cluster $cluster)"
fi
exec java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.xml -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
