"""One line a user can act on, from any exception a job raises.

A Python error raised in a Spark task reaches the driver wrapped (PythonException, Py4JJavaError)
in a message of Python traceback plus Java stack, often hundreds of lines, with the line that
matters (e.g. "rdd_io.schema.SchemaError: shard-00003.h5: record 7 ...") somewhere inside it.
"""
from __future__ import annotations

import re

_TRACEBACK = "Traceback (most recent call last):"
# "pkg.mod.SomeError: message" or a bare "SomeError"; the class is the last dotted component.
_EXC_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)(?::\s?(.*))?$")
# A Java exception without a Python traceback: ": org.apache.hadoop...InvalidInputException: msg".
_JAVA_LINE = re.compile(r"^:?\s*(?:[\w$]+\.)*([\w$]+(?:Exception|Error)):\s?(.*)$")


def python_error_line(text: str) -> str | None:
    """'Class: message' of the last Python exception whose traceback appears in `text`, else None.

    The exception line is the first unindented line after a traceback's frames; with chained
    exceptions or repeated traces (Spark prints a task's failure more than once) the last wins.
    """
    found = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != _TRACEBACK:
            continue
        for candidate in lines[i + 1:]:
            if not candidate.strip() or candidate[0].isspace():
                continue  # frames ("  File ...", source lines, "^^^" markers)
            match = _EXC_LINE.match(candidate.strip())
            if match:
                name, message = match.groups()
                found = f"{name}: {message}" if message is not None else name
            break
    return found


def java_error_line(text: str) -> str | None:
    """'Class: message' of the first Java exception named in `text`, else None."""
    for line in text.splitlines():
        match = _JAVA_LINE.match(line.strip())
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return None


def user_message(exc: BaseException) -> str:
    """The error a job reports; for a Spark/Py4J error, the task's own error line (full text: the log)."""
    text = str(exc)
    if _is_spark_error(exc):
        line = python_error_line(text) or java_error_line(text)
        if line:
            return line
    return f"{type(exc).__name__}: {text}"


def _is_spark_error(exc: BaseException) -> bool:
    return any(k.__module__.split(".")[0] in ("py4j", "pyspark") for k in type(exc).__mro__)
