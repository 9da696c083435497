"""Spark side of the redshift study: shards at a URI -> RDD bundle -> per-worker shares at a URI.

    spectra RDD zip labels RDD, then zipWithIndex  ->  (index, (spectrum, label))

`same` gives every worker every sample; `different` gives worker w the samples whose index is w
modulo M (disjoint, sizes within one of each other). Two ways to the workers (data.feed):

- spark (the thesis's "Spark input"): `feed_partitions` cuts the bundle into M partitions, partition w
  holding worker w's share in blocks and an end-of-epoch marker, and the TFoS adapter feeds partition w
  into worker w's queue each epoch (InputMode.SPARK).
- tensorflow: each share is materialised as HDF5 parts under a URI and read by its worker
  (InputMode.TENSORFLOW).

Either way each worker reports, per epoch, how many samples it trained on and `index_checksum` of their
zipWithIndex indices, and the driver checks them against `expected_share` for the data mode.
"""
from __future__ import annotations

import io

import numpy as np

from rdd_io import storage
from rdd_io.redshift_read import read_npy_pair, read_shard
from rdd_io.redshift_sim import simulated_shard
from rdd_io.schema import N, Field, Schema, SchemaError, source_name

BUNDLE = Schema("redshift-bundle", [
    Field("spectra", np.float32, (N, "bands")),
    Field("label", np.int32, (N,), values=(0, None)),
    Field("index", np.int64, (N,), values=(0, None)),
])


def simulate_shards(sc, uri: str, n: int, shard_size: int, seed: int, **sim_kw) -> list[str]:
    """Simulate `n` spectra as REDSHIFT shards under `uri`, one Spark task per shard."""
    shards = -(-n // shard_size)

    def make(index: int):
        return index, simulated_shard(index, n, shard_size, seed, **sim_kw)

    names = []
    for index, data in sc.parallelize(range(shards), shards).map(make).toLocalIterator():
        name = f"shard-{index:05d}.h5"
        storage.write_bytes(storage.join(uri, name), data)
        names.append(name)
    return names


def _check_bands(name: str, spectra: np.ndarray, bands: int | None) -> None:
    if bands is not None and spectra.shape[1] != bands:
        raise SchemaError(f"{source_name(name, str(name))}: 'spectra' have {spectra.shape[1]} bands, "
                          f"config says data.bands={bands}")


def _shard_arrays(name: str, data: bytes, n_classes: int, bands: int | None):
    """Executor side: one shard's (spectra, labels), every check done where the bytes are."""
    spectra, labels = read_shard(name, data, n_classes)
    _check_bands(name, spectra, bands)
    return spectra, labels


def _npy_arrays(spectra_kv, labels_kv, n_classes: int, bands: int | None):
    spectra, labels = read_npy_pair(spectra_kv[1], labels_kv[1], n_classes,
                                    spectra_name=source_name(spectra_kv[0], spectra_kv[0]),
                                    labels_name=source_name(labels_kv[0], labels_kv[0]))
    _check_bands(spectra_kv[0], spectra, bands)
    return spectra, labels


def require_input(uri: str, source: str, npy_names: tuple[str, ...] = ()) -> list[str]:
    """Driver side: the input files the bundle will read, or FileNotFoundError naming the URI.

    Checked before any RDD exists, so a typo in data.input reads as one line, not a Hadoop trace.
    """
    if not storage.exists(uri):
        raise FileNotFoundError(f"{uri}: input folder does not exist (data.input)")
    names = storage.list_names(uri)
    if source == "hdf5":
        shards = [n for n in names if n.endswith(".h5")]
        if not shards:
            raise FileNotFoundError(f"{uri}: no *.h5 shards in the input folder "
                                    f"(found {len(names)} other entries)")
        return shards
    missing = [n for n in npy_names if n not in names]
    if missing:
        raise FileNotFoundError(f"{uri}: missing {', '.join(missing)} in the input folder")
    return list(npy_names)


def read_bundle(sc, uri: str, source: str, n_classes: int, npy_spectra: str = "spectra.npy",
                npy_labels: str = "labels.npy", bands: int | None = None):
    """The bundle RDD of (index, (spectrum float32 [B], label int)) from shards or an .npy pair.

    Every input file is checked on the executor that reads it (schema, finite values, labels in
    [0, n_classes), and with `bands` its band count), raising SchemaError naming the file.
    """
    if source not in ("hdf5", "npy"):
        raise ValueError(f"data.source must be 'hdf5' or 'npy', got {source!r}")
    require_input(uri, source, (npy_spectra, npy_labels))
    if source == "hdf5":
        files = sc.binaryFiles(storage.join(uri, "*.h5"))
        arrays = files.map(lambda kv: _shard_arrays(kv[0], kv[1], n_classes, bands))
    else:
        spectra_uri, labels_uri = storage.join(uri, npy_spectra), storage.join(uri, npy_labels)
        pair = sc.binaryFiles(spectra_uri).cartesian(sc.binaryFiles(labels_uri))
        arrays = pair.map(lambda p: _npy_arrays(p[0], p[1], n_classes, bands))
    arrays = arrays.cache()
    spectra = arrays.flatMap(lambda a: list(a[0]))
    labels = arrays.flatMap(lambda a: [int(v) for v in a[1]])
    # Both sides come from the same partitions in the same order, which is what zip requires.
    return spectra.zip(labels).zipWithIndex().map(lambda t: (t[1], t[0]))


def shares(bundle, workers: int, mode: str) -> list:
    """One RDD per worker: the whole bundle ('same') or indices congruent to w mod M ('different')."""
    if mode == "same":
        return [bundle] * workers
    if mode == "different":
        return [bundle.filter(lambda t, w=w: t[0] % workers == w) for w in range(workers)]
    raise ValueError(f"data mode must be 'same' or 'different', got {mode!r}")


# ---------------------------------------------------------------- what a worker saw, checked
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def index_checksum(index) -> str:
    """Order-independent checksum of a set of zipWithIndex indices: sum of splitmix64(i) mod 2**64, hex.

    Unlike a plain index sum, swapping one sample for another of the same index sum changes it."""
    z = np.asarray(index, dtype=np.uint64) + _MIX[0]
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX[1]
        z = (z ^ (z >> np.uint64(27))) * _MIX[2]
        z = z ^ (z >> np.uint64(31))
        return f"{int(np.sum(z, dtype=np.uint64)):016x}"


def share_indices(n: int, workers: int, mode: str, worker: int) -> np.ndarray:
    """The zipWithIndex indices worker `worker` must see per epoch: all of 0..n-1, or those = w mod M."""
    if mode == "same":
        return np.arange(n)
    if mode == "different":
        return np.arange(worker, n, workers)
    raise ValueError(f"data mode must be 'same' or 'different', got {mode!r}")


def expected_share(n: int, workers: int, mode: str, worker: int) -> dict:
    index = share_indices(n, workers, mode, worker)
    return {"samples": int(len(index)), "checksum": index_checksum(index)}


def seen(index) -> dict:
    """What a worker reports for one epoch."""
    return {"samples": int(len(index)), "checksum": index_checksum(index)}


def check_seen(run_id: str, n: int, mode: str, seen_by_worker: dict[int, list[dict]]) -> None:
    """Every worker, every epoch it trained, saw exactly its share; else ValueError naming both."""
    workers = len(seen_by_worker)
    for w, epochs in sorted(seen_by_worker.items()):
        want = expected_share(n, workers, mode, w)
        for epoch, got in enumerate(epochs, start=1):
            if got != want:
                raise ValueError(
                    f"{run_id}: worker:{w} saw the wrong share in epoch {epoch}: {got['samples']} samples "
                    f"(index checksum {got['checksum']}), its {mode}-data share of {n} samples over {workers} "
                    f"workers has {want['samples']} (checksum {want['checksum']})")


# ---------------------------------------------------------------- spark feeding
END = "end"  # an item ("end", samples): the partition (one epoch of one worker's share) is over


def _blocks(rows, block: int):
    """(index, (spectrum, label)) rows -> ("rows", index int64[k], spectra float32[k, B], label int32[k])
    items of at most `block` samples, then ("end", samples): one queue item per block, not per sample."""
    rows = sorted(rows, key=lambda r: r[0])
    for start in range(0, len(rows), block):
        chunk = rows[start:start + block]
        yield ("rows", np.array([r[0] for r in chunk], np.int64),
               np.stack([r[1][0] for r in chunk]).astype(np.float32), np.array([r[1][1] for r in chunk], np.int32))
    yield (END, len(rows))


def feed_partitions(subset, workers: int, mode: str, block: int = 256):
    """The RDD TFoS feeds each epoch: M partitions, partition w = worker w's share as _blocks items."""
    if mode == "same":
        keyed = subset.flatMap(lambda t: [(w, t) for w in range(workers)])
    elif mode == "different":
        keyed = subset.map(lambda t: (t[0] % workers, t))
    else:
        raise ValueError(f"data mode must be 'same' or 'different', got {mode!r}")
    return (keyed.partitionBy(workers, lambda w: w)
            .mapPartitions(lambda kv: _blocks((t for _, t in kv), block), preservesPartitioning=True))


def collect_epoch(next_item) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Executor side: read one epoch's items (next_item() -> item, or None at the end of the feed) into
    (spectra, labels, index); None if the feed ended first. The end marker's count is checked."""
    parts = []
    while True:
        item = next_item()
        if item is None:
            return None
        if item[0] == END:
            break
        parts.append(item[1:])
    if not parts:
        raise ValueError(f"an epoch of 0 samples was fed (end marker says {item[1]})")
    index = np.concatenate([p[0] for p in parts])
    if len(index) != item[1]:
        raise ValueError(f"fed {len(index)} samples, the partition's end marker says {item[1]}")
    return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), index


def _encode_part(partition: int, rows) -> list:
    rows = list(rows)
    if not rows:
        return []
    buf = io.BytesIO()
    BUNDLE.write_h5(buf, {"spectra": np.stack([r[1][0] for r in rows]).astype(np.float32),
                          "label": np.array([r[1][1] for r in rows], np.int32),
                          "index": np.array([r[0] for r in rows], np.int64)})
    return [(partition, buf.getvalue(), len(rows), int(sum(r[0] for r in rows)))]


def write_share(rdd, uri: str) -> dict:
    """Materialise one share as part-NNNNN.h5 files under `uri`; returns its count and index sum."""
    storage.remove_tree(uri)  # parts of an earlier run would otherwise be read as part of this share
    count = index_sum = 0
    for partition, data, n, s in rdd.mapPartitionsWithIndex(_encode_part).toLocalIterator():
        storage.write_bytes(storage.join(uri, f"part-{partition:05d}.h5"), data)
        count, index_sum = count + n, index_sum + s
    return {"uri": uri, "count": count, "index_sum": index_sum}


def load_share(uri: str) -> dict[str, np.ndarray]:
    """Executor side: every part of one worker's share, concatenated."""
    parts = [BUNDLE.read_h5(data, path) for path, data in storage.read_parts(uri, "part-")]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("spectra", "label", "index")}
