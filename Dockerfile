# One image for every service of docker-compose.yml: Spark master and workers, HDFS namenode and
# datanode, Jupyter. Spark comes from the pip-installed pyspark (the same one the embedded
# mini-cluster runs); Hadoop is only here for the HDFS daemons.
FROM python:3.11-slim-bookworm

ARG HADOOP_VERSION=3.4.1
# "-lean" fetches the smaller tarball without the AWS SDK bundle, where the release has one.
ARG HADOOP_TARBALL_SUFFIX=""
ARG HADOOP_MIRROR=https://archive.apache.org/dist/hadoop/common
ARG APP_UID=1000
# TensorFlow is an extra of the package (cpu or gpu build); executors need it to train.
ARG APP_EXTRAS=cpu

# The man directory must exist on slim images or the JRE's postinst fails on update-alternatives.
# /opt/java is JAVA_HOME without the architecture suffix (amd64, arm64) in its path.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java \
 && /opt/java/bin/java -version 2>&1 | grep -q 'version "17'

# Hadoop, checked against the release's published SHA-512 (a corrupt or truncated download fails the
# build). Docs and the optional tools libraries are not on the HDFS daemons' classpath: dropped.
RUN set -eu; \
    tarball="hadoop-${HADOOP_VERSION}${HADOOP_TARBALL_SUFFIX}.tar.gz"; \
    cd /tmp; \
    curl -fsSL --retry 3 -o "$tarball" "${HADOOP_MIRROR}/hadoop-${HADOOP_VERSION}/${tarball}"; \
    curl -fsSL --retry 3 -o "$tarball.sha512" "${HADOOP_MIRROR}/hadoop-${HADOOP_VERSION}/${tarball}.sha512"; \
    expected="$(awk '{print $NF}' "$tarball.sha512" | tr 'A-F' 'a-f')"; \
    echo "${expected}  ${tarball}" | sha512sum -c -; \
    tar -xzf "$tarball" -C /opt; \
    mv "/opt/hadoop-${HADOOP_VERSION}" /opt/hadoop; \
    rm -rf "$tarball" "$tarball.sha512" /opt/hadoop/share/doc /opt/hadoop/share/hadoop/tools/lib

ENV JAVA_HOME=/opt/java \
    HADOOP_HOME=/opt/hadoop \
    HADOOP_CONF_DIR=/opt/hadoop/etc/hadoop \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    SPARK_CONF_DIR=/opt/spark-conf \
    SPARK_WORKER_DIR=/opt/spark-work \
    PYSPARK_PYTHON=python3 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ENV PATH=${SPARK_HOME}/bin:${HADOOP_HOME}/bin:${HADOOP_HOME}/sbin:${PATH}

# Only what the package needs: the build context also holds .venv, outputs and run directories.
WORKDIR /opt/app
COPY setup.py ./
COPY conf/ conf/
COPY jobs/ jobs/
COPY rdd_io/ rdd_io/
COPY models/ models/
COPY distributed/ distributed/
COPY bench/ bench/
COPY notebooks/ notebooks/

# Jupyter is for the notebook service only, so it is not a dependency of the package.
# SPARK_HOME is fixed above because ENV cannot be computed; fail the build if pip put pyspark elsewhere.
RUN pip install "/opt/app[${APP_EXTRAS}]" "jupyterlab>=4,<5" \
 && test "$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" = "$SPARK_HOME" \
 && test -x "$SPARK_HOME/bin/spark-class"

COPY docker/spark-entrypoint.sh docker/hdfs-entrypoint.sh /usr/local/bin/

# Services run as an unprivileged user. The directories a named volume is first created from keep
# this ownership, so HDFS can write its fresh volumes.
RUN chmod 0755 /usr/local/bin/spark-entrypoint.sh /usr/local/bin/hdfs-entrypoint.sh \
 && useradd --create-home --uid "${APP_UID}" --shell /bin/bash spark \
 && mkdir -p "$SPARK_CONF_DIR" "$SPARK_WORKER_DIR" /data/hdfs/namenode /data/hdfs/datanode /opt/app/outputs \
 && chown -R spark:spark "$SPARK_CONF_DIR" "$SPARK_WORKER_DIR" /data/hdfs "$HADOOP_CONF_DIR" /opt/app/outputs \
 && chmod 0700 "$SPARK_CONF_DIR"

USER spark
CMD ["bash"]
