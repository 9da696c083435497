#!/bin/sh
# Entry point of every Spark service (master, workers, Jupyter driver).
# Writes spark-defaults.conf from the container's environment at start, then runs the command, so
# the authentication secret is never part of the image: it lives in the environment compose passes
# and in a file only the service user can read.
set -eu

die() {
  echo "spark-entrypoint: $*" >&2
  exit 64
}

secret="${SPARK_AUTH_SECRET:-}"
[ -n "$secret" ] || die "SPARK_AUTH_SECRET is empty; set it, e.g. export SPARK_AUTH_SECRET=\$(openssl rand -hex 32)"
[ "${#secret}" -ge 16 ] || die "SPARK_AUTH_SECRET is shorter than 16 characters; use openssl rand -hex 32"
# spark-defaults.conf is a Java properties file: backslashes, spaces and '#' would change the value.
case "$secret" in
  *[!A-Za-z0-9._~+/=-]*) die "SPARK_AUTH_SECRET holds characters a properties file would alter; use openssl rand -hex 32" ;;
esac

conf_dir="${SPARK_CONF_DIR:?SPARK_CONF_DIR is not set}"
default_fs="${HDFS_DEFAULT_FS:-}"
case "$default_fs" in
  *[!A-Za-z0-9.:/_-]*) die "HDFS_DEFAULT_FS='$default_fs' is not a plain URI" ;;
esac

# Owner-only file; the subshell keeps the services' own umask unchanged.
(
  umask 077
  mkdir -p "$conf_dir"
  tmp="$conf_dir/spark-defaults.conf.tmp"
  {
    echo "spark.authenticate true"
    echo "spark.authenticate.secret $secret"
    # RPC encrypted (AES-GCM): task closures carry each job's secret and TFoS's authkeys.
    echo "spark.network.crypto.enabled true"
    # The REST submission server would accept jobs outside the authenticated RPC channel.
    echo "spark.master.rest.enabled false"
    if [ -n "$default_fs" ]; then
      echo "spark.hadoop.fs.defaultFS $default_fs"
    fi
  } > "$tmp"
  mv "$tmp" "$conf_dir/spark-defaults.conf"
)

# The services read the secret from the file; their children need not inherit it.
unset SPARK_AUTH_SECRET
exec "$@"
