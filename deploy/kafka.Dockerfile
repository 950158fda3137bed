# Apache Kafka in KRaft mode (one combined broker and controller) on Debian's Java 17, from the same Maven
# Central jars as the local stack (deploy/local/pom.xml). Built FROM a Debian base given as a build argument.
#
#   docker build --build-arg BASE=debian:bookworm-slim -f deploy/kafka.Dockerfile -t audit-trail/kafka .
#
# The first stage resolves the jars with Maven, or copies them from deploy/prefetched/kafka-libs when
# deploy/containers/build-images.sh put them there (builds that cannot reach Maven Central).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS jars
COPY deploy/prefetched /prefetched
COPY deploy/local/pom.xml /src/pom.xml
RUN set -eu; \
    if [ -f /prefetched/kafka-libs/.complete ]; then \
      cp -r /prefetched/kafka-libs /libs; echo "Kafka jars from deploy/prefetched/kafka-libs"; \
    else \
      apt-get update && apt-get install -y --no-install-recommends maven openjdk-17-jdk-headless; \
      mvn -q -B -f /src/pom.xml dependency:copy-dependencies -DoutputDirectory=/libs -DincludeScope=runtime; \
    fi; \
    rm -f /libs/.complete

FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --home-dir /var/lib/kafka --create-home kafka
COPY --from=jars /libs /opt/kafka/libs
COPY deploy/containers/kafka-entrypoint.sh /usr/local/bin/kafka-entrypoint.sh
COPY deploy/local/log4j2.xml /opt/kafka/log4j2.xml

# One PLAINTEXT listener on KAFKA_LISTEN_HOST:KAFKA_PORT advertised as KAFKA_ADVERTISED_HOST (loopback with host
# networking; 0.0.0.0 and the service's name on a bridge network). KAFKA_EXTERNAL_PORT adds a second listener
# advertised as KAFKA_EXTERNAL_HOST, for clients outside a bridge network (the published port).
ENV KAFKA_PORT=9092 \
    KAFKA_CONTROLLER_PORT=9093 \
    KAFKA_LISTEN_HOST=127.0.0.1 \
    KAFKA_ADVERTISED_HOST=127.0.0.1 \
    KAFKA_EXTERNAL_PORT= \
    KAFKA_EXTERNAL_HOST=127.0.0.1 \
    KAFKA_HEAP=512m
VOLUME /var/lib/kafka
USER kafka
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s \
  CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT'
ENTRYPOINT ["/usr/local/bin/kafka-entrypoint.sh"]
