#!/bin/sh
# Entry point of the HDFS services: writes core-site.xml and hdfs-site.xml from the environment,
# formats the namenode on its first start (empty volume), then runs the daemon in the foreground.
# Usage: hdfs-entrypoint.sh namenode|datanode
set -eu

die() {
  echo "hdfs-entrypoint: $*" >&2
  exit 64
}

role="${1:-}"
case "$role" in
  namenode|datanode) ;;
  *) die "usage: hdfs-entrypoint.sh namenode|datanode (got '$role')" ;;
esac

default_fs="${HDFS_DEFAULT_FS:?HDFS_DEFAULT_FS is not set (e.g. hdfs://namenode:9000)}"
case "$default_fs" in
  *[!A-Za-z0-9.:/_-]*) die "HDFS_DEFAULT_FS='$default_fs' is not a plain URI" ;;
  hdfs://?*:[0-9]*) ;;
  *) die "HDFS_DEFAULT_FS='$default_fs' is not of the form hdfs://host:port" ;;
esac
name_dir="${HDFS_NAME_DIR:-/data/hdfs/namenode}"
data_dir="${HDFS_DATA_DIR:-/data/hdfs/datanode}"
replication="${HDFS_REPLICATION:-1}"
conf_dir="${HADOOP_CONF_DIR:?HADOOP_CONF_DIR is not set}"

property() {
  printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"
}

{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  property fs.defaultFS "$default_fs"
  echo '</configuration>'
} > "$conf_dir/core-site.xml"

{
  echo '<?xml version="1.0"?>'
  echo '<configuration>'
  property dfs.namenode.name.dir "file://$name_dir"
  property dfs.datanode.data.dir "file://$data_dir"
  property dfs.replication "$replication"
  # Listen on every interface of the container, so published ports and healthchecks reach it.
  property dfs.namenode.rpc-bind-host 0.0.0.0
  property dfs.namenode.servicerpc-bind-host 0.0.0.0
  property dfs.namenode.http-bind-host 0.0.0.0
  # Container addresses have no reverse DNS entries; the namenode would refuse the datanode.
  property dfs.namenode.datanode.registration.ip-hostname-check false
  echo '</configuration>'
} > "$conf_dir/hdfs-site.xml"

# Hadoop 3.4 on Java 17 needs these modules opened for reflection.
export HADOOP_OPTS="${HADOOP_OPTS:-} --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED"
export HADOOP_LOG_DIR="${HADOOP_LOG_DIR:-/tmp/hadoop-logs}"

if [ "$role" = namenode ]; then
  mkdir -p "$name_dir"
  [ -w "$name_dir" ] || die "$name_dir is not writable by $(id -un); a bind mount must belong to uid $(id -u)"
  if [ ! -f "$name_dir/current/VERSION" ]; then
    echo "hdfs-entrypoint: formatting a new namenode in $name_dir"
    hdfs namenode -format -nonInteractive -clusterId "${HDFS_CLUSTER_ID:-dlspark}"
  fi
else
  mkdir -p "$data_dir"
  [ -w "$data_dir" ] || die "$data_dir is not writable by $(id -un); a bind mount must belong to uid $(id -u)"
fi

exec hdfs "$role"
