"""The Java that Spark's and Hadoop's daemons need: found on JAVA_HOME or PATH, its version checked, and a
message a new user can act on when it is missing or too old."""
from __future__ import annotations

import os
import shutil
import subprocess


class JavaError(RuntimeError):
    """Java is missing, too old, or its version cannot be read."""


def require_java(min_major: int = 17) -> str:
    """Return `java -version`'s first line, or fail with a message a new user can act on."""
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) \
        if os.environ.get("JAVA_HOME") else shutil.which("java")
    hint = (f"Spark 4 and Hadoop 3.5 need Java {min_major} or newer. Install it (Debian/Ubuntu: "
            f"`sudo apt-get install openjdk-{min_major}-jre-headless`; macOS: `brew install openjdk@{min_major}`) "
            "and make sure `java` is on PATH or JAVA_HOME points at it.")
    if not java:
        raise JavaError(f"Java was not found. {hint}")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    # The JVM may print "Picked up JAVA_TOOL_OPTIONS: ..." before the version line.
    first = next((line for line in out.splitlines() if 'version "' in line), out.strip()[:200])
    try:
        version = first.split('"')[1]
        major = int(version.split(".")[1] if version.startswith("1.") else version.split(".")[0])
    except (IndexError, ValueError):
        raise JavaError(f"could not read the Java version from {first!r}. {hint}") from None
    if major < min_major:
        raise JavaError(f"found Java {version} at {java}. {hint}")
    return first
