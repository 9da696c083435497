"""Mini-cluster pieces that need no JVM: UI token, Spark security settings, the Java check."""
import base64
import hashlib
import hmac
import json
import os
import stat

import pytest

from distributed import minicluster
from distributed.java import JavaError, require_java
from distributed.minicluster import security_conf, ui_key, ui_token

pytestmark = pytest.mark.unit

SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_ui_token_is_a_valid_hs256_jws():
    token = ui_token(SECRET)
    parts = token.split(".")
    assert len(parts) == 3
    for part in parts:
        assert part and "=" not in part and set(part) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    header = json.loads(_b64decode(parts[0]))
    assert header["alg"] == "HS256"
    assert isinstance(json.loads(_b64decode(parts[1])), dict)
    want = hmac.new(ui_key(SECRET), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(_b64decode(parts[2]), want)


def test_ui_token_depends_on_the_secret():
    assert ui_token(SECRET, now=1000) == ui_token(SECRET, now=1000)
    other = ui_token(SECRET + "x", now=1000)
    assert other.rsplit(".", 1)[0] == ui_token(SECRET, now=1000).rsplit(".", 1)[0]  # same header and claims
    assert other != ui_token(SECRET, now=1000)                                      # different signature
    assert len(ui_key(SECRET)) == 32 and ui_key(SECRET) != ui_key(SECRET + "x")
    assert SECRET.encode() not in ui_key(SECRET)


def test_ui_token_expires():
    claims = json.loads(_b64decode(ui_token(SECRET, ttl_s=60, now=1000).split(".")[1]))
    assert claims == {"exp": 1060}
    assert json.loads(_b64decode(ui_token(SECRET).split(".")[1]))["exp"] > 0


def test_security_conf_turns_authentication_on():
    conf = security_conf(SECRET)
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.authenticate.secret"] == SECRET
    assert conf["spark.ui.filters"] == minicluster.JWS_FILTER == "org.apache.spark.ui.JWSFilter"
    key = conf[f"spark.{minicluster.JWS_FILTER}.param.secretKey"]
    assert base64.urlsafe_b64decode(key) == ui_key(SECRET)
    assert len(ui_key(SECRET)) * 8 >= 256  # HS256 keys must be at least 256 bits
    assert conf["spark.master.rest.enabled"] == "false"
    assert conf["spark.network.crypto.enabled"] == "true"
    assert all(isinstance(v, str) for v in conf.values())  # written straight into spark-defaults.conf


def _fake_java(folder, version_line: str):
    folder.mkdir(parents=True, exist_ok=True)
    java = folder / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


def test_require_java_without_java_explains_how_to_install(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    (empty / "bin").mkdir(parents=True)
    monkeypatch.setenv("JAVA_HOME", str(empty))
    with pytest.raises(JavaError) as err:
        require_java()
    msg = str(err.value)
    assert "Java was not found" in msg and "openjdk-17" in msg and "JAVA_HOME" in msg
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(JavaError, match="Java was not found.*apt-get install openjdk-21"):
        require_java(min_major=21)


@pytest.mark.parametrize("line, major", [('openjdk version "17.0.9" 2023-10-17', 17),
                                         ('openjdk version "21" 2023-09-19', 21)])
def test_require_java_accepts_a_recent_java(tmp_path, monkeypatch, line, major):
    _fake_java(tmp_path / "jdk" / "bin", line)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert require_java() == line
    with pytest.raises(JavaError, match=f"found Java .* at {tmp_path}"):
        require_java(min_major=major + 1)


def test_require_java_rejects_java_8_and_unreadable_versions(tmp_path, monkeypatch):
    java = _fake_java(tmp_path / "bin", 'java version "1.8.0_292"')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{tmp_path / 'nothing'}")
    with pytest.raises(JavaError, match=r"found Java 1\.8\.0_292 .*Java 17 or newer"):
        require_java()
    java.write_text("#!/bin/sh\necho 'garbage' >&2\n")
    with pytest.raises(JavaError, match="could not read the Java version from 'garbage'"):
        require_java()


def test_require_java_skips_picked_up_options_lines(tmp_path, monkeypatch):
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'Picked up JAVA_TOOL_OPTIONS: -Xss1m' >&2\n"
                    "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert "17.0.15" in require_java()
