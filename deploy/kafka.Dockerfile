# Apache Kafka in KRaft mode (one combined broker and controller), from the same Maven Central jars as the local
# stack (deploy/containers/build-images.sh copies them into build/kafka-libs) on Debian's Java 17. Built FROM a
# Debian base given as a build argument, like the services.
ARG BASE=debian:bookworm-slim
FROM ${BASE}

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --home-dir /var/lib/kafka --create-home kafka
COPY build/kafka-libs /opt/kafka/libs
COPY deploy/containers/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint.sh

# Bind and advertise: loopback with host networking (ours); 0.0.0.0 and the service's name on a bridge network.
ENV KAFKA_PORT=9092 \
    KAFKA_CONTROLLER_PORT=9093 \
    KAFKA_LISTEN_HOST=127.0.0.1 \
    KAFKA_ADVERTISED_HOST=127.0.0.1 \
    KAFKA_HEAP=512m
VOLUME /var/lib/kafka
USER kafka
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s \
  CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT'
ENTRYPOINT ["/usr/local/bin/kafka-entrypoint.sh"]
